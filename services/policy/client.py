"""Typed client of the policy service: a deadline on every call, errors as custos errors."""

from __future__ import annotations

from services.pb.custos.policy.v1 import policy_pb2_grpc
from services.runtime.client import BaseClient


class PolicyClient(BaseClient):
    """Calls custos.policy.v1.PolicyService; e.g. ``await client.call("Rpc", request)``."""

    service = "policy"
    stub_class = policy_pb2_grpc.PolicyServiceStub
