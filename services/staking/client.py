"""Typed client of the staking service: a deadline on every call, errors as custos errors."""

from __future__ import annotations

from services.pb.custos.staking.v1 import staking_pb2, staking_pb2_grpc
from services.runtime.client import BaseClient

#: How long the worker gives ``NotifyTransition``: the watchers' fallback poll is 0.25 s, so
#: waiting longer than this for a wake-up is worth less than getting on with the workflow.
NOTIFY_TIMEOUT_SECONDS = 1.0


class StakingClient(BaseClient):
    """Calls custos.staking.v1.StakingService; e.g. ``await client.call("Rpc", request)``."""

    service = "staking"
    stub_class = staking_pb2_grpc.StakingServiceStub

    async def notify_transition(self, intent_id: str, sequence: int) -> None:
        """Tells the staking service that a transition of ``intent_id`` is committed (worker only).

        Raises on failure like any call; the caller decides that a failure does not matter.
        """
        await self.call(
            "NotifyTransition",
            staking_pb2.NotifyTransitionRequest(intent_id=intent_id, sequence=sequence),
            deadline=NOTIFY_TIMEOUT_SECONDS,
        )
