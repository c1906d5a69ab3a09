"""Typed client of the staking service: a deadline on every call, errors as custos errors."""

from __future__ import annotations

from services.pb.custos.staking.v1 import staking_pb2_grpc
from services.runtime.client import BaseClient


class StakingClient(BaseClient):
    """Calls custos.staking.v1.StakingService; e.g. ``await client.call("Rpc", request)``."""

    service = "staking"
    stub_class = staking_pb2_grpc.StakingServiceStub
