"""Decisions and their record on the real parts (tests/telemetry/stack.py, in this process).

Issue 15, item 0: ``ApproveIntent`` used to hand the approval to the workflow and write the approval
row and its ``intent.approved_by`` audit record only afterwards; an answer lost in between (a client
deadline, a killed staking process) left an approval that counted with no record, and the retry got
"already decided". Here the answer of the first update is lost right after the workflow accepted it
(the staking service's Temporal call raises UNAVAILABLE as the answer arrives): the record must be
complete all the same, and the retries, the same signed approval and a re-signed one, answered.
Items 2 and 4: a rejection carries its reason to the intent, its row and its audit record, and
RejectIntent answers with the state after it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from services.audit.models import AuditRecordRow
from services.pb.custos.staking.v1 import staking_pb2
from services.policy.evidence import sign_approval
from services.runtime.convert import approval_to_pb
from services.runtime.db import make_engine, make_session_factory
from services.runtime.errors import Unavailable
from services.runtime.intent import Decision
from services.staking.client import StakingClient
from tests.staking.test_refusals_on_the_stack import ENDINGS, PROMPT, stack  # noqa: F401 (the fixture)
from tests.telemetry.stack import InProcessStack


def _signed(on: InProcessStack, intent: Any, who: str, decision: Decision = Decision.APPROVE) -> Any:
    return approval_to_pb(
        sign_approval(
            on.keys[who],
            approver_id=who,
            intent_digest=intent.digest,
            policy_version=intent.policy_version,
            decision=decision,
            expires_at=datetime.now(UTC) + timedelta(hours=1),
        )
    )


async def _approve(on: InProcessStack, intent_id: str, who: str, approval: Any) -> Any:
    async with on.client(StakingClient, who) as staking:
        return await staking.call(
            "ApproveIntent", staking_pb2.ApproveIntentRequest(intent_id=intent_id, approval=approval)
        )


def _audited(root: Path, intent_id: str, action: str) -> list[AuditRecordRow]:
    engine = make_engine(f"sqlite:///{root / 'custos.db'}")
    try:
        with make_session_factory(engine)() as s:
            return list(
                s.scalars(
                    select(AuditRecordRow)
                    .where(AuditRecordRow.subject == f"intent:{intent_id}", AuditRecordRow.action == action)
                    .order_by(AuditRecordRow.sequence)
                )
            )
    finally:
        engine.dispose()


async def test_an_approval_whose_answer_is_lost_is_recorded_and_its_retries_are_answered(
    stack: InProcessStack,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    intent = await stack.submit(stack.stake_spec())
    intent = (await stack.wait_for(intent.intent_id, {"AWAITING_APPROVALS"})).intent
    real = WorkflowHandle.execute_update
    lost: list[str] = []

    async def answer_lost(self: WorkflowHandle, update: Any, *args: Any, **kw: Any) -> Any:
        result = await real(self, update, *args, **kw)
        if not lost:  # the workflow accepted it; its answer never reaches the staking service
            lost.append(str(update))
            raise RPCError("the answer was lost on the way", RPCStatusCode.UNAVAILABLE, b"")
        return result

    monkeypatch.setattr(WorkflowHandle, "execute_update", answer_lost)
    first = _signed(stack, intent, "olivia")
    with pytest.raises(Unavailable):
        await _approve(stack, intent.intent_id, "olivia", first)
    assert lost == ["approve"]

    seen = (await stack.wait_for(intent.intent_id, {"AWAITING_APPROVALS"})).intent
    assert [a.approver_id for a in seen.approvals] == ["olivia"], "an accepted approval is not in the record"
    again = await _approve(stack, intent.intent_id, "olivia", first)  # the same signed approval
    assert [a.approver_id for a in again.intent.approvals] == ["olivia"] and not again.quorum_met
    resigned = await _approve(stack, intent.intent_id, "olivia", _signed(stack, intent, "olivia"))
    assert [a.approver_id for a in resigned.intent.approvals] == ["olivia"]
    done = await _approve(stack, intent.intent_id, "oscar", _signed(stack, intent, "oscar"))
    assert done.quorum_met

    final = (await stack.wait_for(intent.intent_id, ENDINGS, timeout=PROMPT)).intent
    assert final.state == staking_pb2.INTENT_STATE_CONFIRMED, final.reason
    assert sorted(a.approver_id for a in final.approvals) == ["olivia", "oscar"]
    approved_by = _audited(tmp_path, intent.intent_id, "intent.approved_by")
    assert sorted(r.actor for r in approved_by) == ["olivia", "oscar"], "each approval audited once"
    assert _audited(tmp_path, intent.intent_id, "approve.refused") == []


async def test_a_rejection_carries_its_reason_and_answers_with_the_ending(
    stack: InProcessStack,  # noqa: F811
    tmp_path: Path,
) -> None:
    intent = await stack.submit(stack.stake_spec())
    intent = (await stack.wait_for(intent.intent_id, {"AWAITING_APPROVALS"})).intent
    async with stack.client(StakingClient, "oscar") as staking:
        resp = await staking.call(
            "RejectIntent",
            staking_pb2.RejectIntentRequest(
                intent_id=intent.intent_id,
                approval=_signed(stack, intent, "oscar", Decision.REJECT),
                reason="wrong validator",
            ),
        )
    assert resp.intent.state == staking_pb2.INTENT_STATE_REJECTED  # the state after the rejection
    assert resp.intent.reason == "rejected by oscar: wrong validator"
    assert [(a.approver_id, a.reason) for a in resp.intent.approvals] == [("oscar", "wrong validator")]
    [record] = _audited(tmp_path, intent.intent_id, "intent.rejected_by")
    assert record.actor == "oscar" and "wrong validator" in record.payload_json
    [ended] = _audited(tmp_path, intent.intent_id, "intent.rejected")
    assert "wrong validator" in ended.payload_json
