"""Typed client of the chain service: a deadline on every call, errors as custos errors."""

from __future__ import annotations

from services.chain.types import NonceRelease
from services.pb.custos.chain.v1 import chain_pb2, chain_pb2_grpc
from services.runtime.client import BaseClient


class ChainClient(BaseClient):
    """Calls custos.chain.v1.ChainService; e.g. ``await client.call("Rpc", request)``."""

    service = "chain"
    stub_class = chain_pb2_grpc.ChainServiceStub

    async def release_nonce(self, chain: str, intent_id: str, reason: str) -> NonceRelease:
        """Gives back the nonces a failed intent reserved and sent nothing with (worker only)."""
        resp = await self.call(
            "ReleaseNonce", chain_pb2.ReleaseNonceRequest(chain=chain, intent_id=intent_id, reason=reason)
        )
        return NonceRelease(released=tuple(resp.released), kept=tuple(resp.kept))
