"""The policy-change workflow: the same approval machinery, the admin quorum, then activation.

A POLICY_CHANGE intent names a proposed version. The policy in force evaluates it
(its admin rule gives the quorum); once met, the policy service activates the new
version after checking the approvals itself.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from services.runtime.intent import spec_from_plain
    from workflows.gated import QUICK, RETRY, ApprovalGatedWorkflow
    from workflows.staking.activities import StakingActivities
    from workflows.staking.types import (
        CONFIRMED,
        FAILED,
        ActivateInput,
        IntentInput,
        IntentResult,
        PolicyOutcome,
    )


@workflow.defn(name="PolicyChange")
class PolicyChangeWorkflow(ApprovalGatedWorkflow):
    EXPIRED_REASON = "the admin quorum was not met before the deadline"
    REJECTED_REASON = "rejected by a policy admin"

    def _approvals_detail(self, outcome: PolicyOutcome) -> str:
        return "admin quorum"

    def _approved_detail(self, counted: frozenset[str]) -> str:
        return "admin quorum met"

    @workflow.run
    async def run(self, inp: IntentInput) -> IntentResult:
        ended = await self._collect()
        if ended is not None:
            return self._finish(ended)
        version = getattr(spec_from_plain(inp.spec).target, "policy_version", "")
        try:
            await workflow.execute_activity_method(
                StakingActivities.activate_policy,
                ActivateInput(inp.intent_id, version, inp.initiator, self._book.approvals()),
                start_to_close_timeout=QUICK,
                retry_policy=RETRY,
            )
        except ActivityError as e:
            cause = e.cause
            return self._finish(
                await self._end(FAILED, cause.message if isinstance(cause, ApplicationError) else str(e))
            )
        return self._finish(await self._end(CONFIRMED, f"policy {version[:12]} is active"))
