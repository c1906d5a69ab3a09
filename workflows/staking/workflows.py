"""The staking workflow: one per intent, workflow id = intent id.

policy -> approvals -> build -> sign -> broadcast -> confirm (-> unbonding wait).
Nothing is signed before the approvals meet the quorum of the policy version the
intent was evaluated under; the signer checks that again on its own.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows.approvals import ApprovalBook, decided, requirement_from_outcome
    from workflows.staking.activities import StakingActivities
    from workflows.staking.types import (
        APPROVED,
        AWAITING_APPROVALS,
        BROADCAST,
        CANCELLED,
        CONFIRMED,
        DENIED,
        EXPIRED,
        FAILED,
        REJECTED,
        SIGNING,
        UNBONDING,
        ApprovalAck,
        ApprovalData,
        CancelInput,
        EvaluateInput,
        IntentInput,
        IntentResult,
        StepInput,
        TransitionInput,
    )

#: Business refusals never retry; everything else (network, node, HSM busy) does, with backoff.
NON_RETRYABLE = ["PolicyDenied", "SigningRefused", "InvalidIntent", "ApprovalRefused"]
RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=NON_RETRYABLE,
)
QUICK = timedelta(seconds=30)
CONFIRM_POLL = timedelta(seconds=2)
CONFIRM_TIMEOUT = timedelta(hours=1)


@workflow.defn(name="StakingIntent")
class StakingWorkflow:
    @workflow.init
    def __init__(self, inp: IntentInput) -> None:
        self._inp = inp
        self._book = ApprovalBook(inp)
        self._sequence = 1  # SUBMITTED was recorded by SubmitIntent
        self._state = "AWAITING_POLICY"
        self._cancel: CancelInput | None = None
        # the chain's and the signer's name for this intent's one transaction
        self._action_step = str(inp.spec["action"]).lower()

    # --- queries and updates -------------------------------------------------

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
                f"the intent can no longer be cancelled (state {self._state})",
                type="ApprovalRefused",
                non_retryable=True,
            )

    def _ack(self) -> ApprovalAck:
        ev = self._book.evidence(workflow.now())
        return ApprovalAck(
            accepted=True,
            quorum_met=bool(ev and ev.met),
            counted=sorted(ev.counted) if ev else [],
        )

    # --- the flow --------------------------------------------------------------

    async def _transition(self, state: str, detail: str = "", **extra: object) -> None:
        self._sequence += 1
        self._state = state
        await workflow.execute_activity_method(
            StakingActivities.record_transition,
            TransitionInput(self._inp.intent_id, self._sequence, state, detail, dict(extra)),
            start_to_close_timeout=QUICK,
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10)),
        )

    async def _end(self, state: str, reason: str, tx_hash: str = "") -> IntentResult:
        self._book.open = False
        await self._transition(state, reason, tx_hash=tx_hash)
        return IntentResult(state=state, reason=reason, tx_hash=tx_hash)

    def _step(self, step: str, **kw: str) -> StepInput:
        inp = self._inp
        return StepInput(
            intent_id=inp.intent_id,
            step=step,
            spec=inp.spec,
            initiator=inp.initiator,
            policy_version=inp.policy_version,
            approvals=self._book.approvals(),
            **kw,
        )

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
            f"rule {outcome.rule_id}",
            requirement=[vars(g) for g in outcome.groups],
            deadline=self._book.deadline.isoformat(),
        )

        deadline = self._book.deadline
        assert deadline is not None
        remaining = max((deadline - workflow.now()).total_seconds(), 0.0)
        try:
            await workflow.wait_condition(
                lambda: self._cancel is not None or decided(self._book, workflow.now),
                timeout=timedelta(seconds=remaining),
            )
        except TimeoutError:
            return await self._end(EXPIRED, "approvals did not meet the quorum before the deadline")
        if self._cancel is not None:
            return await self._end(CANCELLED, f"cancelled by {self._cancel.by}: {self._cancel.reason}")
        ev = self._book.evidence(workflow.now())
        assert ev is not None
        if ev.rejected:
            return await self._end(REJECTED, "rejected by an authorised approver")
        self._book.open = False
        await self._transition(APPROVED, "quorum met: " + ", ".join(sorted(ev.counted)))
        return await self._execute()

    async def _execute(self) -> IntentResult:
        try:
            built = await workflow.execute_activity_method(
                StakingActivities.build_transaction,
                self._step(self._action_step),
                start_to_close_timeout=QUICK,
                retry_policy=RETRY,
            )
            await self._transition(SIGNING, built.summary)
            signed = await workflow.execute_activity_method(
                StakingActivities.sign_transaction,
                self._step(self._action_step, unsigned_tx_hex=built.unsigned_tx_hex),
                start_to_close_timeout=QUICK,
                retry_policy=RETRY,
            )
            await workflow.execute_activity_method(
                StakingActivities.broadcast_transaction,
                self._step(self._action_step, signed_tx_hex=signed.signed_tx_hex, tx_hash=signed.tx_hash),
                start_to_close_timeout=QUICK,
                retry_policy=RETRY,
            )
            await self._transition(BROADCAST, signed.tx_hash, tx_hash=signed.tx_hash)
            result = await workflow.execute_activity_method(
                StakingActivities.await_confirmation,
                self._step(self._action_step, tx_hash=signed.tx_hash),
                start_to_close_timeout=CONFIRM_TIMEOUT,
                heartbeat_timeout=timedelta(seconds=30),
                retry_policy=RETRY,
            )
        except ActivityError as e:
            cause = e.cause
            reason = cause.message if isinstance(cause, ApplicationError) else str(cause or e)
            return await self._end(FAILED, reason)
        if result.failed:
            return await self._end(FAILED, result.reason, signed.tx_hash)
        unbonding = await workflow.execute_activity_method(
            StakingActivities.unbonding_seconds,
            self._step(self._action_step),
            start_to_close_timeout=QUICK,
            retry_policy=RETRY,
        )
        if unbonding > 0:
            await self._transition(UNBONDING, f"waiting {unbonding}s for the unbonding period")
            await workflow.sleep(timedelta(seconds=unbonding))
        return await self._end(CONFIRMED, f"{result.confirmations} confirmations", signed.tx_hash)
