"""A Temporal client: anyone who can reach the frontend's address (the dev server has no mTLS,
and a production cluster's clients are many). It starts, terminates and updates workflows
at will, so the workflow's own approval checks are whatever the client made them; only the
signer's stand between it and the vault.

Before the insider-proof approvals (d6b3e87), updates sent straight to the frontend with
keys planted in the registry took a 32 ETH deposit to CONFIRMED.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle, WorkflowUpdateFailedError

from services.policy.domain import key_id_for
from services.policy.evidence import public_key_der
from services.runtime.intent import spec_to_plain
from tests.security.insiders import WorkerHost, approval_data
from tests.security.stack import SecurityStack
from tests.security.world import World
from workflows.staking.results import intent_result
from workflows.staking.types import ApproverData, ApproverKeyData, IntentInput, IntentResult


def _approvers(keys: dict[str, ed25519.Ed25519PrivateKey]) -> list[ApproverData]:
    """A registry of the attacker's making: real approvers' names, the attacker's keys."""
    now = datetime.now(UTC)
    return [
        ApproverData(
            who,
            who.title(),
            ["operations"],
            [ApproverKeyData(key_id_for(public_key_der(k)), "ED25519", public_key_der(k).hex(), now)],
            now,
        )
        for who, k in keys.items()
    ]


async def test_a_hijacked_workflow_approved_by_the_attackers_keys(
    stack: SecurityStack, world: World, worker_host: WorkerHost
) -> None:
    """alice's exit awaits approvals. The client terminates its workflow and starts it again under
    the same id with an input whose registry gives olivia and oscar the attacker's keys, then
    approves with those keys: the workflow's validators accept them, but a decision counts only
    once the staking service recorded it (RecordDecision), which verifies it with the keys the
    registry holds: each update is refused, nothing is approved, built or signed."""
    spec = stack.unstake_spec(world.u.spec.target.validator)  # type: ignore[union-attr]
    intent = await stack.submit(spec)
    keys = {who: ed25519.Ed25519PrivateKey.generate() for who in ("olivia", "oscar")}
    original = await worker_host.workflow_input(intent.intent_id)
    doctored = replace(original, approvers=_approvers(keys))
    client = await stack.temporal()
    await client.get_workflow_handle(intent.intent_id).terminate("hijacked")
    before = await stack.evidence()
    handle = await client.start_workflow(
        "StakingIntent", doctored, id=intent.intent_id, task_queue=stack.task_queue
    )
    for who, key in keys.items():
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update("approve", approval_data(stack.approval(intent, who, key=key)))
        activity = refused.value.cause  # RecordDecision's refusal, under the activity's failure
        assert "does not verify with key" in str(getattr(activity, "cause", activity)), activity
    after = await stack.evidence()
    assert (after.records, after.nonce) == (before.records, before.nonce)
    assert (await handle.describe()).status is WorkflowExecutionStatus.RUNNING  # still awaiting approvals
    await handle.terminate("test over")


async def test_a_finished_intent_started_again_with_its_own_approvals(
    stack: SecurityStack, world: World, worker_host: WorkerHost
) -> None:
    """x is CONFIRMED. The client starts its workflow again, with x's own input, and replays x's
    approvals from its history: the validators accept them (they are x's, within x's window),
    but the signer has signed x's step already: it answers with that one transaction (a
    replay: nothing new to send) or refuses another; no new signature, no new deposit."""
    x = world.x
    inp = await worker_host.workflow_input(x.id)
    approvals = await worker_host.approvals_in_history(x.id)
    client = await stack.temporal()
    before = await stack.evidence()
    handle = await client.start_workflow(
        "StakingIntent", inp, id=x.id, task_queue=stack.task_queue, result_type=IntentResult
    )
    for a in approvals:
        await handle.execute_update("approve", approval_data(a))
    result = await intent_result(handle)
    after = await stack.evidence()
    assert (after.records, after.nonce) == (before.records, before.nonce)
    outcomes = {
        r["outcome"]: r["payload"]
        for r in stack.audit_since(before, "signer.sign")
        if r["subject"] == f"intent:{x.id}"
    }
    if "refused" in outcomes:
        assert outcomes["refused"]["error"] == "ConflictingSignature"
        assert result.state == "FAILED"
    else:
        assert outcomes["replayed"]["tx_hash"] == x.intent.tx_hash
        assert (result.state, result.tx_hash) == ("CONFIRMED", x.intent.tx_hash)


async def test_a_workflow_for_an_intent_nobody_submitted(stack: SecurityStack, world: World) -> None:
    """A workflow started under an id the staking service never issued, with the attacker's
    registry: its first transition finds no intent to record (InvalidArgument, retried), so it
    never gets as far as asking for approvals, let alone a signature."""
    u = world.u
    keys = {who: ed25519.Ed25519PrivateKey.generate() for who in ("olivia", "oscar")}
    intent_id = f"int-{uuid.uuid4().hex}"
    inp = IntentInput(
        intent_id=intent_id,
        spec=spec_to_plain(u.spec),
        initiator="alice",
        policy_version=u.intent.policy_version,
        digest_hex="00" * 32,
        approvers=_approvers(keys),
        submitted_at=datetime.now(UTC),
    )
    client = await stack.temporal()
    before = await stack.evidence()
    handle: WorkflowHandle[object, object] = await client.start_workflow(
        "StakingIntent", inp, id=intent_id, task_queue=stack.task_queue
    )
    try:
        failure = ""
        for _ in range(100):
            desc = await handle.describe()
            pending = list(desc.raw_description.pending_activities)
            if pending and pending[0].last_failure.message:
                failure = pending[0].last_failure.message
                break
            await asyncio.sleep(0.1)
        assert "no intent" in failure, failure  # RecordTransition: the staking service knows no such intent
        assert desc.status == WorkflowExecutionStatus.RUNNING
        after = await stack.evidence()
        assert (after.records, after.nonce) == (before.records, before.nonce)
        assert not stack.audit_since(before, "signer.sign")
    finally:
        await handle.terminate("test over")
