"""The policy-change workflow: the same approval machinery, the admin quorum, then activation.

A POLICY_CHANGE intent names a proposed version. The policy in force evaluates it
(its admin rule gives the quorum); once met, the policy service activates the new
version after checking the approvals itself.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from services.runtime.intent import spec_from_plain
    from workflows.approvals import ApprovalBook, decided, requirement_from_outcome
    from workflows.staking.activities import StakingActivities
    from workflows.staking.types import (
        APPROVED,
        AWAITING_APPROVALS,
        CANCELLED,
        CONFIRMED,
        DENIED,
        EXPIRED,
        FAILED,
        REJECTED,
        ActivateInput,
        ApprovalAck,
        ApprovalData,
        CancelInput,
        EvaluateInput,
        IntentInput,
        IntentResult,
        TransitionInput,
    )
    from workflows.staking.workflows import QUICK, RETRY


@workflow.defn(name="PolicyChange")
class PolicyChangeWorkflow:
    @workflow.init
    def __init__(self, inp: IntentInput) -> None:
        self._inp = inp
        self._book = ApprovalBook(inp)
        self._sequence = 1
        self._state = "AWAITING_POLICY"
        self._cancel: CancelInput | None = None

    @workflow.query
    def state(self) -> str:
        return self._state

    @workflow.update
    async def approve(self, a: ApprovalData) -> ApprovalAck:
        self._book.add(a)
        return self._ack()

    @approve.validator
    def _validate_approve(self, a: ApprovalData) -> None:
        self._book.validate(a, "APPROVE", workflow.now())

    @workflow.update
    async def reject(self, a: ApprovalData) -> ApprovalAck:
        self._book.add(a)
        return self._ack()

    @reject.validator
    def _validate_reject(self, a: ApprovalData) -> None:
        self._book.validate(a, "REJECT", workflow.now())

    @workflow.update
    async def cancel(self, c: CancelInput) -> str:
        self._cancel = c
        return self._state

    @cancel.validator
    def _validate_cancel(self, c: CancelInput) -> None:
        if not self._book.open:
            raise ApplicationError(
                "the change can no longer be cancelled", type="ApprovalRefused", non_retryable=True
            )

    def _ack(self) -> ApprovalAck:
        ev = self._book.evidence(workflow.now())
        return ApprovalAck(True, bool(ev and ev.met), sorted(ev.counted) if ev else [])

    async def _transition(self, state: str, detail: str = "", **extra: object) -> None:
        self._sequence += 1
        self._state = state
        await workflow.execute_activity_method(
            StakingActivities.record_transition,
            TransitionInput(self._inp.intent_id, self._sequence, state, detail, dict(extra)),
            start_to_close_timeout=QUICK,
            retry_policy=RETRY,
        )

    async def _end(self, state: str, reason: str) -> IntentResult:
        self._book.open = False
        await self._transition(state, reason)
        return IntentResult(state=state, reason=reason)

    @workflow.run
    async def run(self, inp: IntentInput) -> IntentResult:
        await self._transition("AWAITING_POLICY")
        outcome = await workflow.execute_activity_method(
            StakingActivities.evaluate_policy,
            EvaluateInput(inp.intent_id, inp.spec, inp.initiator, inp.policy_version),
            start_to_close_timeout=QUICK,
            retry_policy=RETRY,
        )
        if not outcome.allowed:
            return await self._end(DENIED, "; ".join(outcome.reasons) or "denied by policy")
        self._book.set_requirement(requirement_from_outcome(outcome, inp.policy_version), workflow.now())
        assert self._book.deadline is not None
        await self._transition(
            AWAITING_APPROVALS,
            "admin quorum",
            requirement=[vars(g) for g in outcome.groups],
            deadline=self._book.deadline.isoformat(),
        )
        deadline = self._book.deadline
        assert deadline is not None
        try:
            await workflow.wait_condition(
                lambda: self._cancel is not None or decided(self._book, workflow.now),
                timeout=timedelta(seconds=max((deadline - workflow.now()).total_seconds(), 0.0)),
            )
        except TimeoutError:
            return await self._end(EXPIRED, "the admin quorum was not met before the deadline")
        if self._cancel is not None:
            return await self._end(CANCELLED, f"cancelled by {self._cancel.by}: {self._cancel.reason}")
        ev = self._book.evidence(workflow.now())
        assert ev is not None
        if ev.rejected:
            return await self._end(REJECTED, "rejected by a policy admin")
        self._book.open = False
        await self._transition(APPROVED, "admin quorum met")
        target = spec_from_plain(inp.spec).target
        version = getattr(target, "policy_version", "")
        try:
            await workflow.execute_activity_method(
                StakingActivities.activate_policy,
                ActivateInput(inp.intent_id, version, inp.initiator, self._book.approvals()),
                start_to_close_timeout=QUICK,
                retry_policy=RETRY,
            )
        except ActivityError as e:
            cause = e.cause
            return await self._end(FAILED, cause.message if isinstance(cause, ApplicationError) else str(e))
        return await self._end(CONFIRMED, f"policy {version[:12]} is active")
