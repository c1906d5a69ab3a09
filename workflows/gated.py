"""The base of every approval-gated workflow: its updates, its transitions, its wait.

Subclasses (the staking and the policy-change workflows) add ``@workflow.defn`` and
a ``@workflow.run`` that calls :meth:`ApprovalGatedWorkflow._collect` and then does
what the approvals allow. The update handlers and their validators live here once,
so both workflows refuse exactly the same approvals.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows import search_attributes as attrs
    from workflows.approvals import (
        REFUSED,
        ApprovalBook,
        decided,
        outside_refusal,
        requirement_from_outcome,
    )
    from workflows.staking.activities import StakingActivities
    from workflows.staking.types import (
        APPROVED,
        AWAITING_APPROVALS,
        CANCELLED,
        CONFIRMED,
        DENIED,
        EXPIRED,
        REJECTED,
        ApprovalAck,
        ApprovalData,
        CancelInput,
        DecisionInput,
        EvaluateInput,
        IntentInput,
        IntentResult,
        PolicyOutcome,
        TransitionInput,
    )

#: Business refusals never retry; everything else (network, node, HSM busy) does, with backoff.
NON_RETRYABLE = ["PolicyDenied", "SigningRefused", "InvalidIntent", REFUSED]
RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=NON_RETRYABLE,
)
#: Recording a decision retries until it is recorded; a refusal (the record cannot be made) does not.
RECORD_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=10), non_retryable_error_types=NON_RETRYABLE)
#: Start-to-close of the short activities: a worker that dies mid-activity is noticed this soon
#: (its work is retried elsewhere; every activity is idempotent).
QUICK = timedelta(seconds=10)
#: Approvals count only within the intent's approval window (submission + the rule's expiry), as
#: the signer counts them; histories recorded before replay without the bound.
APPROVAL_WINDOW_PATCH = "approval-window"
#: Intents recorded before they carried search attributes (state, vault, chain, action) replay without.
SEARCH_ATTRIBUTES_PATCH = "search-attributes"
#: Intents recorded before an ending other than CONFIRMED failed the workflow replay as completed.
FAILED_ENDINGS_PATCH = "failed-endings"
#: Each accepted decision is recorded (read model and audit trail, by the staking service) before
#: it counts, and only from someone in a required group; a reject or cancel answers once the
#: intent has ended. Histories recorded before counted at once and left the record to the caller.
DECISION_RECORD_PATCH = "decision-record"


class ApprovalGatedWorkflow:
    """Approvals, rejections and cancellation as updates, validated before they reach history."""

    #: What the endings say; subclasses word them for their audience.
    EXPIRED_REASON = "approvals did not meet the quorum before the deadline"
    REJECTED_REASON = "rejected by an authorised approver"

    @workflow.init
    def __init__(self, inp: IntentInput) -> None:
        self._inp = inp
        self._book = ApprovalBook(inp)
        self._sequence = 1  # SUBMITTED was recorded by SubmitIntent
        self._state = "AWAITING_POLICY"
        self._cancel: CancelInput | None = None
        self._indexed = False  # whether this run keeps its search attributes (patched)
        #: Approvers whose decision the staking service has recorded (``RecordDecision``).
        self._recorded: set[str] = set()
        #: Set once the ending's transition is recorded: a reject or cancel answers after it.
        self._ended = False

    @workflow.query
    def state(self) -> str:
        return self._state

    @workflow.update
    async def approve(self, a: ApprovalData) -> ApprovalAck:
        return await self._decide(a)

    @approve.validator
    def _validate_approve(self, a: ApprovalData) -> None:
        self._book.validate(a, "APPROVE", workflow.now())

    @workflow.update
    async def reject(self, a: ApprovalData) -> ApprovalAck:
        return await self._decide(a)

    @reject.validator
    def _validate_reject(self, a: ApprovalData) -> None:
        self._book.validate(a, "REJECT", workflow.now())

    @workflow.update
    async def cancel(self, c: CancelInput) -> str:
        self._cancel = c
        if workflow.patched(DECISION_RECORD_PATCH):
            # answer with the state the cancellation led to (CANCELLED, or the ending that beat it)
            await workflow.wait_condition(lambda: self._ended)
        return self._state

    @cancel.validator
    def _validate_cancel(self, c: CancelInput) -> None:
        if not self._book.open:
            raise ApplicationError(
                f"the intent can no longer be cancelled (state {self._state})",
                type=REFUSED,
                non_retryable=True,
            )

    async def _decide(self, a: ApprovalData) -> ApprovalAck:
        """Counts ``a`` once the requirement says its approver may decide and once it is recorded.

        The record (``RecordDecision``, an activity: it survives a killed worker or staking
        process, and is idempotent per approver) comes first, so every decision that counts is
        in the read model and the audit trail, whatever happens to the caller's answer. A retry
        of an accepted decision waits for that record and gets the same answer.
        """
        if not workflow.patched(DECISION_RECORD_PATCH):
            self._book.add(a)
            return self._ack()
        if self._book.is_retry(a):
            await workflow.wait_condition(lambda: a.approver_id not in self._book.pending)
            if not any(r.approver_id == a.approver_id for r in self._book.received):
                raise ApplicationError(
                    f"{a.approver_id}'s decision did not count: the intent no longer accepts approvals"
                    f" (state {self._state})",
                    type=REFUSED,
                    non_retryable=True,
                )
            return await self._answer(a)
        self._book.pending[a.approver_id] = a
        try:
            # approvals may arrive before the policy has said who decides: they wait for it
            await workflow.wait_condition(lambda: self._book.requirement is not None or not self._book.open)
            requirement = self._book.requirement
            if requirement is None or not self._book.open:
                raise ApplicationError(
                    f"the intent no longer accepts approvals (state {self._state})",
                    type=REFUSED,
                    non_retryable=True,
                )
            if not self._book.in_requirement(a.approver_id):
                raise outside_refusal(a.approver_id, requirement)
            self._book.check_window(a)  # the window is known only with the requirement
            ev = self._book.evidence(workflow.now(), extra=a)
            await workflow.execute_activity_method(
                StakingActivities.record_decision,
                DecisionInput(self._inp.intent_id, a, bool(ev and ev.met)),
                start_to_close_timeout=QUICK,
                retry_policy=RECORD_RETRY,
            )
            self._book.add(a)
            self._recorded.add(a.approver_id)
        finally:
            self._book.pending.pop(a.approver_id, None)
        return await self._answer(a)

    async def _answer(self, a: ApprovalData) -> ApprovalAck:
        ev = self._book.evidence(workflow.now())
        if a.decision == "REJECT" and ev is not None and ev.rejected:
            # the rejection ends the intent: answer with that ending, recorded
            await workflow.wait_condition(lambda: self._ended)
        return self._ack(recorded=a.approver_id in self._recorded)

    def _ack(self, *, recorded: bool = False) -> ApprovalAck:
        ev = self._book.evidence(workflow.now())
        return ApprovalAck(
            accepted=True,
            quorum_met=bool(ev and ev.met),
            counted=sorted(ev.counted) if ev else [],
            recorded=recorded,
            state=self._state,
        )

    async def _transition(self, state: str, detail: str = "", **extra: object) -> None:
        self._sequence += 1
        self._state = state
        if self._indexed:
            workflow.upsert_search_attributes([attrs.STATE.value_set(state)])
        await workflow.execute_activity_method(
            StakingActivities.record_transition,
            TransitionInput(self._inp.intent_id, self._sequence, state, detail, dict(extra)),
            start_to_close_timeout=QUICK,
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10)),
        )

    async def _end(self, state: str, reason: str, tx_hash: str = "") -> IntentResult:
        self._book.open = False
        await self._transition(state, reason, tx_hash=tx_hash)
        self._ended = True
        if not workflow.all_handlers_finished():  # a reject or cancel waiting to answer with this ending
            await workflow.wait_condition(workflow.all_handlers_finished)
        return IntentResult(state=state, reason=reason, tx_hash=tx_hash)

    def _finish(self, result: IntentResult) -> IntentResult:
        """The workflow's ending: CONFIRMED completes it; any other ending fails it (red in the
        Temporal UI, not a green COMPLETED) with an ``Intent<State>`` error carrying the result.

        The intent's state is the read model's, as every ending is recorded by ``_end`` first;
        a caller reading the workflow itself takes the result from the error's details
        (``workflows.staking.results.intent_result``).
        """
        if result.state == CONFIRMED or not workflow.patched(FAILED_ENDINGS_PATCH):
            return result
        raise ApplicationError(
            f"{result.state}: {result.reason}",
            result,
            type=f"Intent{result.state.capitalize()}",
            non_retryable=True,
        )

    def _rejected_detail(self) -> str:
        """Who rejected, and why as they said it (histories recorded before say neither)."""
        by = [a for a in self._book.approvals() if a.decision == "REJECT"]
        if not by or not workflow.patched(DECISION_RECORD_PATCH):
            return self.REJECTED_REASON
        detail = f"rejected by {by[0].approver_id}"
        return f"{detail}: {by[0].reason}" if by[0].reason else detail

    def _approvals_detail(self, outcome: PolicyOutcome) -> str:
        return f"rule {outcome.rule_id}"

    def _approved_detail(self, counted: frozenset[str]) -> str:
        return "quorum met: " + ", ".join(sorted(counted))

    async def _collect(self) -> IntentResult | None:
        """Policy, then approvals until quorum, reject, cancel or expiry.

        Returns the ending when the intent may not proceed, or None once it is APPROVED.
        """
        inp = self._inp
        self._book.bound_window = workflow.patched(APPROVAL_WINDOW_PATCH)
        if workflow.patched(SEARCH_ATTRIBUTES_PATCH):
            self._indexed = True
            spec = inp.spec
            given = {
                attrs.VAULT: str(spec.get("vault_id", "")),
                attrs.CHAIN: str(spec.get("chain", "")),
                attrs.ACTION: str(spec.get("action", "")),
            }
            workflow.upsert_search_attributes([k.value_set(v) for k, v in given.items() if v])
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
        deadline = self._book.deadline
        assert deadline is not None
        await self._transition(
            AWAITING_APPROVALS,
            self._approvals_detail(outcome),
            requirement=[vars(g) for g in outcome.groups],
            # what people see: when approvals stop counting (submission + expiry, as the signer bounds
            # them); the timer above starts at evaluation, a moment later
            deadline=(self._book.approval_deadline or deadline).isoformat(),
        )
        try:
            await workflow.wait_condition(
                lambda: self._cancel is not None or decided(self._book, workflow.now),
                timeout=timedelta(seconds=max((deadline - workflow.now()).total_seconds(), 0.0)),
            )
        except TimeoutError:
            return await self._end(EXPIRED, self.EXPIRED_REASON)
        self._book.open = False
        if self._book.pending:  # decisions being recorded count before the outcome is told
            await workflow.wait_condition(lambda: not self._book.pending)
        if self._cancel is not None:
            return await self._end(CANCELLED, f"cancelled by {self._cancel.by}: {self._cancel.reason}")
        ev = self._book.evidence(workflow.now())
        assert ev is not None
        if ev.rejected:
            return await self._end(REJECTED, self._rejected_detail())
        ended = await self._on_quorum()
        if ended is not None:
            return ended
        await self._transition(APPROVED, self._approved_detail(ev.counted))
        return None

    async def _on_quorum(self) -> IntentResult | None:
        """Runs once the quorum is met, before APPROVED; an ending here stops the intent."""
        return None
