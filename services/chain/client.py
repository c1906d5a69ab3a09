"""Typed client of the chain service: a deadline on every call, errors as custos errors."""

from __future__ import annotations

from services.pb.custos.chain.v1 import chain_pb2_grpc
from services.runtime.client import BaseClient


class ChainClient(BaseClient):
    """Calls custos.chain.v1.ChainService; e.g. ``await client.call("Rpc", request)``."""

    service = "chain"
    stub_class = chain_pb2_grpc.ChainServiceStub
