"""Typed client of the staking service: a deadline on every call, errors as custos errors."""

from __future__ import annotations

from services.pb.custos.common.v1 import common_pb2
from services.pb.custos.staking.v1 import staking_pb2, staking_pb2_grpc
from services.runtime.client import BaseClient
from services.runtime.convert import approval_to_pb, datetime_to_ts
from services.staking.types import DecisionRecord, Transition

#: ``RecordTransition`` is one short transaction; this leaves the rest of the activity's 10 s
#: start-to-close for a retry of its own when a staking process hangs or is killed mid-call.
RECORD_TIMEOUT_SECONDS = 5.0


class StakingClient(BaseClient):
    """Calls custos.staking.v1.StakingService; e.g. ``await client.call("Rpc", request)``."""

    service = "staking"
    stub_class = staking_pb2_grpc.StakingServiceStub

    async def record_transition(self, t: Transition) -> bool:
        """Records a transition of the workflow (worker only); False if it was recorded before.

        Raises like any call: the caller retries until it is recorded.
        """
        resp = await self.call("RecordTransition", transition_to_pb(t), deadline=RECORD_TIMEOUT_SECONDS)
        return bool(resp.recorded)

    async def record_decision(self, d: DecisionRecord) -> bool:
        """Records a decision the workflow accepted (worker only); False if it was recorded before.

        Raises like any call: the caller retries until it is recorded.
        """
        request = staking_pb2.RecordDecisionRequest(
            intent_id=d.intent_id,
            approval=approval_to_pb(d.approval),
            reason=d.reason,
            quorum_met=d.quorum_met,
        )
        resp = await self.call("RecordDecision", request, deadline=RECORD_TIMEOUT_SECONDS)
        return bool(resp.recorded)


def transition_to_pb(t: Transition) -> staking_pb2.RecordTransitionRequest:
    out = staking_pb2.RecordTransitionRequest(
        intent_id=t.intent_id,
        sequence=t.sequence,
        state=staking_pb2.IntentState.Value(f"INTENT_STATE_{t.state}"),
        detail=t.detail,
        tx_hash=t.tx_hash,
        requirement=[
            common_pb2.ApprovalGroup(name=g.name, threshold=g.threshold, members=sorted(g.members))
            for g in t.requirement
        ],
    )
    if t.approval_deadline is not None:
        out.approval_deadline.CopyFrom(datetime_to_ts(t.approval_deadline))
    return out
