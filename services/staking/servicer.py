"""custos.staking.v1.StakingService over gRPC: proto <-> domain, nothing else."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any, ClassVar, cast

from services.pb.custos.common.v1 import common_pb2
from services.pb.custos.staking.v1 import staking_pb2, staking_pb2_grpc
from services.policy.domain import ApprovalGroup
from services.runtime.auth import current_principal
from services.runtime.convert import (
    MAX_INT32,
    action_from_pb,
    approval_from_pb,
    bounded_int,
    datetime_to_ts,
    decision_to_pb,
    optional_datetime,
    require_id,
    spec_from_pb,
    spec_to_pb,
)
from services.runtime.errors import InvalidArgument
from services.runtime.intent import Decision, spec_from_plain
from services.staking.models import IntentEventRow
from services.staking.repository import IntentFilter
from services.staking.service import IntentView, StakingService
from services.staking.types import DecisionRecord, Transition

_STATE: dict[str, Any] = {
    name.removeprefix("INTENT_STATE_"): value for name, value in staking_pb2.IntentState.items()
}
_STATE_NAME: dict[Any, str] = {v: k for k, v in _STATE.items()}
#: An intent's transitions are numbered in an INTEGER column (``IntentEventRow.sequence``).
MAX_SEQUENCE = MAX_INT32
#: The longest reason a rejection carries (one line of a person's words, not a document).
MAX_REASON = 500
#: Who follows intents from the CLI (``intents list | watch``): initiators and operators.
FOLLOWERS = frozenset({"initiator", "operator"})


def intent_to_pb(v: IntentView) -> staking_pb2.Intent:
    r = v.row
    out = staking_pb2.Intent(
        intent_id=r.intent_id,
        idempotency_key=r.idempotency_key,
        spec=spec_to_pb(spec_from_plain(json.loads(r.spec_json))),
        initiator=r.initiator,
        state=_STATE.get(r.state, 0),
        digest=bytes.fromhex(r.digest),
        policy_version=r.policy_version,
        created_at=datetime_to_ts(r.created_at),
        updated_at=datetime_to_ts(r.updated_at),
        tx_hash=r.tx_hash,
        reason=r.reason,
        summary=r.summary,
    )
    if r.approval_deadline is not None:
        out.approval_deadline.CopyFrom(datetime_to_ts(r.approval_deadline))
    if r.requirement_json:
        out.requirement.policy_version = r.policy_version
        for g in json.loads(r.requirement_json):
            out.requirement.groups.add(name=g["name"], threshold=g["threshold"], members=g["members"])
    for a in v.approvals:
        out.approvals.add(
            approver_id=a.approver_id,
            decision=decision_to_pb(Decision(a.decision)),
            recorded_at=datetime_to_ts(a.recorded_at),
            reason=a.reason,
        )
    return out


def transition_from_pb(r: staking_pb2.RecordTransitionRequest) -> Transition:
    state = _STATE_NAME.get(r.state)
    if state is None or r.state == staking_pb2.INTENT_STATE_UNSPECIFIED:
        raise InvalidArgument("state is required")
    return Transition(
        intent_id=require_id(r.intent_id, "intent_id"),
        sequence=bounded_int(r.sequence, "sequence", maximum=MAX_SEQUENCE),
        state=state,
        detail=r.detail,
        tx_hash=r.tx_hash,
        requirement=tuple(ApprovalGroup(g.name, g.threshold, frozenset(g.members)) for g in r.requirement),
        approval_deadline=optional_datetime(r, "approval_deadline", "approval_deadline"),
    )


def event_to_pb(intent_id: str, e: IntentEventRow) -> staking_pb2.IntentEvent:
    return staking_pb2.IntentEvent(
        intent_id=intent_id,
        sequence=e.sequence,
        state=_STATE.get(e.state, 0),
        detail=e.detail,
        time=datetime_to_ts(e.time),
    )


class StakingServicer(staking_pb2_grpc.StakingServiceServicer):
    ROLES: ClassVar[dict[str, frozenset[str]]] = {
        "SubmitIntent": frozenset({"initiator"}),
        # approvers read what they sign; policy-admins simulate a recorded intent
        "GetIntent": FOLLOWERS | {"approver", "policy-admin"},
        # approvers find what awaits their decision (intents list --needs-me)
        "ListIntents": FOLLOWERS | {"approver"},
        "ApproveIntent": frozenset({"approver"}),
        "RejectIntent": frozenset({"approver"}),
        "CancelIntent": FOLLOWERS,
        "WatchIntent": FOLLOWERS,
        # the workflow's transitions: only the worker reports them
        "RecordTransition": frozenset({"svc:worker"}),
        # the decisions the workflow accepted: only the worker reports them
        "RecordDecision": frozenset({"svc:worker"}),
    }

    def __init__(self, service: StakingService) -> None:
        self._svc = service

    async def SubmitIntent(
        self, request: staking_pb2.SubmitIntentRequest, context: Any
    ) -> staking_pb2.SubmitIntentResponse:
        key = require_id(request.idempotency_key, "idempotency_key")
        if not request.HasField("spec"):
            raise InvalidArgument("spec is required")
        view, created = await self._svc.submit(current_principal(), key, spec_from_pb(request.spec))
        return staking_pb2.SubmitIntentResponse(intent=intent_to_pb(view), created=created)

    async def GetIntent(
        self, request: staking_pb2.GetIntentRequest, context: Any
    ) -> staking_pb2.GetIntentResponse:
        view = await self._svc.get(require_id(request.intent_id, "intent_id"))
        return staking_pb2.GetIntentResponse(
            intent=intent_to_pb(view), events=[event_to_pb(view.row.intent_id, e) for e in view.events]
        )

    async def ListIntents(
        self, request: staking_pb2.ListIntentsRequest, context: Any
    ) -> staking_pb2.ListIntentsResponse:
        size = request.page_size or 50
        if size > 500:
            raise InvalidArgument("page_size must be at most 500")
        f = IntentFilter(
            states=[_STATE_NAME[s] for s in request.states if s in _STATE_NAME],
            action=action_from_pb(request.action).value if request.action else "",
            chain=request.chain,
            vault_id=request.vault_id,
            initiator=request.initiator,
            created_from=optional_datetime(request.created, "start", "created.start"),
            created_to=optional_datetime(request.created, "end", "created.end"),
        )
        views, nxt = await self._svc.list_intents(f, size, request.page_token)
        return staking_pb2.ListIntentsResponse(intents=[intent_to_pb(v) for v in views], next_page_token=nxt)

    async def _decide(
        self, request: Any, decision: int, update: str, reason: str = ""
    ) -> tuple[staking_pb2.Intent, bool]:
        if not request.HasField("approval"):
            raise InvalidArgument("approval is required")
        approval = approval_from_pb(request.approval)
        if request.approval.decision != decision:
            raise InvalidArgument(
                f"{update} needs an approval with decision "
                f"{common_pb2.Decision.Name(cast(Any, decision)).removeprefix('DECISION_')}"
            )
        intent_id = require_id(request.intent_id, "intent_id")
        ack = await self._svc.decide(current_principal(), intent_id, approval, update, reason)
        return intent_to_pb(await self._svc.get(intent_id)), ack.quorum_met

    async def ApproveIntent(
        self, request: staking_pb2.ApproveIntentRequest, context: Any
    ) -> staking_pb2.ApproveIntentResponse:
        intent, quorum_met = await self._decide(request, common_pb2.DECISION_APPROVE, "approve")
        return staking_pb2.ApproveIntentResponse(intent=intent, quorum_met=quorum_met)

    async def RejectIntent(
        self, request: staking_pb2.RejectIntentRequest, context: Any
    ) -> staking_pb2.RejectIntentResponse:
        intent, _ = await self._decide(request, common_pb2.DECISION_REJECT, "reject", _reason(request.reason))
        return staking_pb2.RejectIntentResponse(intent=intent)

    async def CancelIntent(
        self, request: staking_pb2.CancelIntentRequest, context: Any
    ) -> staking_pb2.CancelIntentResponse:
        view = await self._svc.cancel(
            current_principal(), require_id(request.intent_id, "intent_id"), request.reason
        )
        return staking_pb2.CancelIntentResponse(intent=intent_to_pb(view))

    async def WatchIntent(
        self, request: staking_pb2.WatchIntentRequest, context: Any
    ) -> AsyncIterator[staking_pb2.WatchIntentResponse]:
        intent_id = require_id(request.intent_id, "intent_id")
        after = bounded_int(request.after_sequence, "after_sequence", maximum=MAX_SEQUENCE)
        # aclosing: a cancelled stream closes the watch at once, unregistering its wake-up
        async with aclosing(self._svc.watch(intent_id, after)) as events:
            async for e in events:
                yield staking_pb2.WatchIntentResponse(event=event_to_pb(intent_id, e))

    async def RecordDecision(
        self, request: staking_pb2.RecordDecisionRequest, context: Any
    ) -> staking_pb2.RecordDecisionResponse:
        if not request.HasField("approval"):
            raise InvalidArgument("approval is required")
        record = DecisionRecord(
            intent_id=require_id(request.intent_id, "intent_id"),
            approval=approval_from_pb(request.approval),
            reason=_reason(request.reason),
            quorum_met=request.quorum_met,
        )
        recorded = await self._svc.record_decision(current_principal(), record)
        return staking_pb2.RecordDecisionResponse(recorded=recorded)

    async def RecordTransition(
        self, request: staking_pb2.RecordTransitionRequest, context: Any
    ) -> staking_pb2.RecordTransitionResponse:
        recorded = await self._svc.record_transition(current_principal(), transition_from_pb(request))
        return staking_pb2.RecordTransitionResponse(recorded=recorded)


def _reason(text: str) -> str:
    """A rejection's reason: one line, at most :data:`MAX_REASON` characters."""
    reason = text.strip()
    if len(reason) > MAX_REASON:
        raise InvalidArgument(f"reason must be at most {MAX_REASON} characters (got {len(reason)})")
    if any(c in reason for c in "\r\n\x00"):
        raise InvalidArgument("reason must be one line")
    return reason
