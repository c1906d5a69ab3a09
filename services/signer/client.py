"""Typed client of the signer service: a deadline on every call, errors as custos errors."""

from __future__ import annotations

from services.pb.custos.signer.v1 import signer_pb2_grpc
from services.runtime.client import BaseClient


class SignerClient(BaseClient):
    """Calls custos.signer.v1.SignerService; e.g. ``await client.call("Rpc", request)``."""

    service = "signer"
    stub_class = signer_pb2_grpc.SignerServiceStub
