"""Typed client of the signer service: a deadline on every call, errors as custos errors."""

from __future__ import annotations

from services.pb.custos.signer.v1 import signer_pb2, signer_pb2_grpc
from services.policy.log import Head
from services.runtime.client import BaseClient


class SignerClient(BaseClient):
    """Calls custos.signer.v1.SignerService; e.g. ``await client.call("Rpc", request)``."""

    service = "signer"
    stub_class = signer_pb2_grpc.SignerServiceStub

    async def anchor_governance(self, sequence: int, digest: bytes) -> Head:
        """Has the signer anchor governance entry ``sequence`` (hash ``digest``), as ``svc:policy``;
        returns the head the signer holds now. FailedPrecondition when its log does not hold it."""
        resp = await self.call(
            "AnchorGovernance", signer_pb2.AnchorGovernanceRequest(sequence=sequence, hash=digest)
        )
        return Head(int(resp.head_sequence), bytes(resp.head_hash))
