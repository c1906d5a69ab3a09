"""The staking workflow: one per intent, workflow id = intent id.

policy -> approvals -> build -> sign -> broadcast -> confirm (-> unbonding wait).
Nothing is signed before the approvals meet the quorum of the policy version the
intent was evaluated under; the signer checks that again on its own.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows.gated import QUICK, RETRY, ApprovalGatedWorkflow
    from workflows.staking.activities import StakingActivities
    from workflows.staking.types import (
        BROADCAST,
        CONFIRMED,
        DENIED,
        FAILED,
        SIGNING,
        UNBONDING,
        IntentInput,
        IntentResult,
        NonceReleaseInput,
        PlannedStep,
        ReleaseInput,
        StepInput,
        WaitInput,
    )

CONFIRM_TIMEOUT = timedelta(hours=1)
#: Histories recorded before velocity reservations replay without them.
VELOCITY_PATCH = "velocity-reservation"
#: Histories recorded before a failed intent gave its nonce back replay without it.
NONCE_RELEASE_PATCH = "nonce-release"
#: Histories recorded before intents ran their chain family's steps replay as one transaction.
FAMILY_STEPS_PATCH = "family-steps"
#: Histories recorded before a family's WAIT step followed the chain waited the configured period.
CHAIN_WAIT_PATCH = "chain-wait"
#: A transaction that expired unsent (a Solana blockhash) is rebuilt; histories before ended FAILED.
REBUILD_EXPIRED_PATCH = "rebuild-expired"
#: How many times one step is rebuilt after expiring unsent before the intent fails.
MAX_REBUILDS = 5


@workflow.defn(name="StakingIntent")
class StakingWorkflow(ApprovalGatedWorkflow):
    def _action_step(self) -> str:
        """The name of the intent's first signed step (of its one transaction, before family steps)."""
        return self._signed_steps[0] if self._signed_steps else str(self._inp.spec["action"]).lower()

    def _step(self, step: str, **kw: str) -> StepInput:
        inp = self._inp
        return StepInput(
            intent_id=inp.intent_id,
            step=step,
            spec=inp.spec,
            initiator=inp.initiator,
            policy_version=inp.policy_version,
            approvals=self._book.approvals(),
            submitted_at=inp.submitted_at,
            **kw,
        )

    @workflow.run
    async def run(self, inp: IntentInput) -> IntentResult:
        self._reserved = False
        self._signed_steps: list[str] = []
        ended = await self._collect()
        return self._finish(ended if ended is not None else await self._execute())

    async def _on_quorum(self) -> IntentResult | None:
        """Counts the intent against its vault's velocity limits before it is APPROVED."""
        if not workflow.patched(VELOCITY_PATCH):
            return None
        try:
            self._reserved = await workflow.execute_activity_method(
                StakingActivities.reserve_velocity,
                self._step(self._action_step()),
                start_to_close_timeout=QUICK,
                retry_policy=RETRY,
            )
        except ActivityError as e:
            return await self._end(DENIED, _reason(e))
        return None

    async def _fail(self, reason: str, tx_hash: str = "", *, funds_may_have_moved: bool) -> IntentResult:
        """FAILED; unless a sent transaction may still land, the intent stops counting against velocity."""
        if self._reserved and not funds_may_have_moved:
            await workflow.execute_activity_method(
                StakingActivities.release_velocity,
                ReleaseInput(self._inp.intent_id, f"failed: {reason}"),
                start_to_close_timeout=QUICK,
                retry_policy=RETRY,
            )
        return await self._end(FAILED, reason, tx_hash)

    async def _release_nonces(self, reason: str) -> None:
        """Nothing was signed: the nonce the build reserved goes to the vault's next intent now,
        instead of leaving a gap that holds the vault's later transactions back.

        Only then: once a transaction is signed, its nonce is that transaction's (the chain
        service keeps it too), since the signer signs nothing else with it.
        """
        if not workflow.patched(NONCE_RELEASE_PATCH):
            return
        await workflow.execute_activity_method(
            StakingActivities.release_nonce,
            NonceReleaseInput(self._inp.intent_id, str(self._inp.spec["chain"]), f"failed: {reason}"),
            start_to_close_timeout=QUICK,
            retry_policy=RETRY,
        )

    async def _plan(self) -> list[PlannedStep]:
        """The steps the chain's family defines for the intent (one signed transaction before)."""
        if not workflow.patched(FAMILY_STEPS_PATCH):
            return [PlannedStep(str(self._inp.spec["action"]).lower(), "SIGN")]
        return await workflow.execute_activity_method(
            StakingActivities.plan_steps,
            self._step(str(self._inp.spec["action"]).lower()),
            start_to_close_timeout=QUICK,
            retry_policy=RETRY,
        )

    async def _execute(self) -> IntentResult:
        try:
            steps = await self._plan()
        except ActivityError as e:
            await self._release_nonces(_reason(e))
            return await self._fail(_reason(e), funds_may_have_moved=False)
        self._signed_steps = [s.name for s in steps if s.kind == "SIGN"]
        sent = False
        last_hash, confirmations = "", 0
        for step in steps:
            if step.kind != "SIGN":
                try:
                    await self._wait_for_chain(step, last_hash)
                except ActivityError as e:  # the chain cannot say: what was sent may still land
                    return await self._fail(_reason(e), last_hash, funds_may_have_moved=True)
                continue
            try:
                for attempt in range(MAX_REBUILDS + 1):
                    built = await workflow.execute_activity_method(
                        StakingActivities.build_transaction,
                        self._step(step.name),
                        start_to_close_timeout=QUICK,
                        retry_policy=RETRY,
                    )
                    detail = (
                        built.summary
                        if attempt == 0
                        else f"rebuilt (the last one expired unsent): {built.summary}"
                    )
                    await self._transition(SIGNING, detail)
                    signed = await workflow.execute_activity_method(
                        StakingActivities.sign_transaction,
                        self._step(step.name, unsigned_tx_hex=built.unsigned_tx_hex),
                        start_to_close_timeout=QUICK,
                        retry_policy=RETRY,
                    )
                    sent = True
                    await workflow.execute_activity_method(
                        StakingActivities.broadcast_transaction,
                        self._step(step.name, signed_tx_hex=signed.signed_tx_hex, tx_hash=signed.tx_hash),
                        start_to_close_timeout=QUICK,
                        retry_policy=RETRY,
                    )
                    await self._transition(BROADCAST, signed.tx_hash, tx_hash=signed.tx_hash)
                    result = await workflow.execute_activity_method(
                        StakingActivities.await_confirmation,
                        self._step(step.name, tx_hash=signed.tx_hash),
                        start_to_close_timeout=CONFIRM_TIMEOUT,
                        heartbeat_timeout=timedelta(seconds=30),
                        retry_policy=RETRY,
                    )
                    # A transaction that can never land (its recent blockhash expired before it did) is
                    # built again with a fresh one: the signer's one allowed replacement of the step.
                    if not (result.expired and workflow.patched(REBUILD_EXPIRED_PATCH)):
                        break
            except ActivityError as e:
                if not sent:  # the build or the signer refused: nothing signed
                    await self._release_nonces(_reason(e))
                return await self._fail(_reason(e), last_hash, funds_may_have_moved=sent)
            if result.expired:
                reason = f"the {step.name} transaction expired unsent {MAX_REBUILDS + 1} times"
                return await self._fail(reason, signed.tx_hash, funds_may_have_moved=last_hash != "")
            if result.failed:  # the chain says it failed (reverted): nothing of this step moved
                return await self._fail(result.reason, signed.tx_hash, funds_may_have_moved=last_hash != "")
            last_hash, confirmations = signed.tx_hash, result.confirmations
        if any(s.kind == "WAIT" for s in steps) and workflow.patched(CHAIN_WAIT_PATCH):
            # the family's WAIT step followed the chain: no configured period after it
            return await self._end(CONFIRMED, f"{confirmations} confirmations", last_hash)
        unbonding = await workflow.execute_activity_method(
            StakingActivities.unbonding_seconds,
            self._step(self._action_step()),
            start_to_close_timeout=QUICK,
            retry_policy=RETRY,
        )
        if unbonding > 0:
            await self._transition(UNBONDING, f"waiting {unbonding}s for the unbonding period")
            await workflow.sleep(timedelta(seconds=unbonding))
        return await self._end(CONFIRMED, f"{confirmations} confirmations", last_hash)

    async def _wait_for_chain(self, step: PlannedStep, after_tx: str) -> None:
        """A family's WAIT step, on the chain's own clock: the chain says when the wait ends (a Cosmos
        unbonding's completion time, read from the undelegation), the workflow sleeps until then on
        a durable timer, then polls until the chain shows the funds back in the vault."""
        if workflow.patched(CHAIN_WAIT_PATCH):
            inp = WaitInput(
                self._inp.intent_id,
                str(self._inp.spec["chain"]),
                str(self._inp.spec["vault_id"]),
                step.name,
                after_tx,
            )
            status = await workflow.execute_activity_method(
                StakingActivities.chain_wait_status, inp, start_to_close_timeout=QUICK, retry_policy=RETRY
            )
            await self._transition(UNBONDING, status.detail)
            if status.until is not None and not status.done:
                delay = status.until - workflow.now()
                if delay > timedelta(0):
                    await workflow.sleep(delay)
            await workflow.execute_activity_method(
                StakingActivities.await_chain_wait,
                inp,
                start_to_close_timeout=CONFIRM_TIMEOUT,
                heartbeat_timeout=timedelta(seconds=30),
                retry_policy=RETRY,
            )
            return
        seconds = await workflow.execute_activity_method(
            StakingActivities.unbonding_seconds,
            self._step(self._action_step()),
            start_to_close_timeout=QUICK,
            retry_policy=RETRY,
        )
        await self._transition(UNBONDING, f"waiting {seconds}s for {step.waits_for or step.name}")
        if seconds > 0:
            await workflow.sleep(timedelta(seconds=seconds))


def _reason(e: ActivityError) -> str:
    cause = e.cause
    return cause.message if isinstance(cause, ApplicationError) else str(cause or e)
