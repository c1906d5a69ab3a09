"""The staking and policy-change workflows on the time-skipping test server."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.staking.workflow_helpers import FakeActivities, Person, make_input
from workflows import search_attributes as attrs
from workflows.policy_change.workflows import PolicyChangeWorkflow
from workflows.sandbox import RUNNER
from workflows.staking.results import intent_result
from workflows.staking.types import (
    ApprovalAck,
    CancelInput,
    GroupData,
    IntentInput,
    IntentResult,
    PlannedStep,
)
from workflows.staking.workflows import StakingWorkflow

ALICE, O1, O2, O3, MALLORY = (Person(n) for n in ("alice", "olivia", "oscar", "otto", "mallory"))
OPS = GroupData("operations", 2, ["olivia", "oscar", "otto"])


def _worker(client: Client, queue: str, acts: FakeActivities) -> Worker:
    return Worker(
        client,
        task_queue=queue,
        workflows=[StakingWorkflow, PolicyChangeWorkflow],
        activities=acts.all(),
        workflow_runner=RUNNER,
    )


async def _start(env: WorkflowEnvironment, queue: str) -> tuple[WorkflowHandle, IntentInput]:
    now = await env.get_current_time()
    created = now - timedelta(days=1)  # the approvers' keys are older than the intent
    inp = make_input("alice", [p.data(["operations"], created) for p in (ALICE, O1, O2, O3)], now)
    handle = await env.client.start_workflow(StakingWorkflow.run, inp, id=inp.intent_id, task_queue=queue)
    return handle, inp


async def _accepted_updates(handle: WorkflowHandle) -> int:
    n = 0
    async for e in handle.fetch_history_events():
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            n += 1
    return n


async def test_expiry_timer_of_24_hours_fires(time_skipping_env: WorkflowEnvironment) -> None:
    env, queue = time_skipping_env, f"q-{uuid.uuid4().hex}"
    acts = FakeActivities([OPS], expiry_seconds=24 * 3600)
    async with _worker(env.client, queue, acts):
        handle, _ = await _start(env, queue)
        result: IntentResult = await intent_result(handle)
    assert result.state == "EXPIRED"
    assert [t.state for t in acts.transitions] == ["AWAITING_POLICY", "AWAITING_APPROVALS", "EXPIRED"]
    assert acts.signed == []


async def test_approvals_right_after_start_are_not_lost(time_skipping_env: WorkflowEnvironment) -> None:
    env, queue = time_skipping_env, f"q-{uuid.uuid4().hex}"
    acts = FakeActivities([OPS])
    async with _worker(env.client, queue, acts):
        for _ in range(10):
            handle, inp = await _start(env, queue)
            exp = await env.get_current_time() + timedelta(hours=12)
            a1 = await handle.execute_update(StakingWorkflow.approve, O1.decide(inp, expires_at=exp))
            a2 = await handle.execute_update(StakingWorkflow.approve, O2.decide(inp, expires_at=exp))
            assert a1.accepted and a2.accepted
            result: IntentResult = await intent_result(handle)
            assert result.state == "CONFIRMED", result
    assert len(acts.signed) == 10
    assert all(len(s.approvals) == 2 for s in acts.signed)


async def test_refused_approvals_leave_no_history(time_skipping_env: WorkflowEnvironment) -> None:
    env, queue = time_skipping_env, f"q-{uuid.uuid4().hex}"
    acts = FakeActivities([OPS])
    async with _worker(env.client, queue, acts):
        handle, inp = await _start(env, queue)
        now = await env.get_current_time()
        exp = now + timedelta(hours=12)
        good = O1.decide(inp, expires_at=exp)
        ack: ApprovalAck = await handle.execute_update(StakingWorkflow.approve, good)
        assert ack.accepted and not ack.quorum_met
        forged = O2.decide(inp, expires_at=exp)
        forged.signature_hex = O3.decide(inp, expires_at=exp).signature_hex
        refused = {
            # another decision of the same approver (an identical one is a retry: answered, not refused)
            "already decided": O1.decide(inp, expires_at=exp - timedelta(minutes=1)),
            "initiator cannot": ALICE.decide(inp, expires_at=exp),
            "unknown approver": MALLORY.decide(inp, expires_at=exp),
            "does not verify": forged,
            "has expired": O2.decide(inp, expires_at=now - timedelta(seconds=1)),
            "another intent": O2.decide(inp, expires_at=exp, digest_hex="00" * 32),
            "policy version": O2.decide(inp, expires_at=exp, version="b" * 64),
        }
        for reason, approval in refused.items():
            with pytest.raises(WorkflowUpdateFailedError) as e:
                await handle.execute_update(StakingWorkflow.approve, approval)
            assert reason in str(e.value.cause), (reason, e.value.cause)
        assert await _accepted_updates(handle) == 1
        await handle.execute_update(StakingWorkflow.approve, O3.decide(inp, expires_at=exp))
        result: IntentResult = await intent_result(handle)
    assert result.state == "CONFIRMED"
    assert sorted(a.approver_id for a in acts.signed[0].approvals) == ["olivia", "otto"]


async def test_late_approval_after_deadline_is_refused(time_skipping_env: WorkflowEnvironment) -> None:
    env, queue = time_skipping_env, f"q-{uuid.uuid4().hex}"
    acts = FakeActivities([OPS], expiry_seconds=3600)
    async with _worker(env.client, queue, acts):
        handle, inp = await _start(env, queue)
        await env.sleep(timedelta(hours=2))
        exp = await env.get_current_time() + timedelta(hours=12)
        # the intent expired at 1h and its workflow closed: nothing can be added to it
        with pytest.raises((WorkflowUpdateFailedError, RPCError)):
            await handle.execute_update(StakingWorkflow.approve, O1.decide(inp, expires_at=exp))
        result: IntentResult = await intent_result(handle)
        assert await _accepted_updates(handle) == 0
    assert result.state == "EXPIRED"


async def test_one_reject_ends_it_and_nothing_is_signed(time_skipping_env: WorkflowEnvironment) -> None:
    env, queue = time_skipping_env, f"q-{uuid.uuid4().hex}"
    acts = FakeActivities([OPS])
    async with _worker(env.client, queue, acts):
        handle, inp = await _start(env, queue)
        exp = await env.get_current_time() + timedelta(hours=12)
        await handle.execute_update(StakingWorkflow.approve, O1.decide(inp, expires_at=exp))
        await handle.execute_update(StakingWorkflow.reject, O2.decide(inp, "REJECT", expires_at=exp))
        result: IntentResult = await intent_result(handle)
    assert result.state == "REJECTED"
    assert acts.signed == []


async def test_quorum_of_the_policy_in_force_counts(time_skipping_env: WorkflowEnvironment) -> None:
    """A 3-of-3 requirement is not met by two approvals, whatever the approvers' own groups say."""
    env, queue = time_skipping_env, f"q-{uuid.uuid4().hex}"
    acts = FakeActivities([GroupData("operations", 3, ["olivia", "oscar", "otto"])], expiry_seconds=3600)
    async with _worker(env.client, queue, acts):
        handle, inp = await _start(env, queue)
        exp = await env.get_current_time() + timedelta(minutes=30)  # within the 1 h approval window
        await handle.execute_update(StakingWorkflow.approve, O1.decide(inp, expires_at=exp))
        ack = await handle.execute_update(StakingWorkflow.approve, O2.decide(inp, expires_at=exp))
        assert not ack.quorum_met
        result: IntentResult = await intent_result(handle)
    assert result.state == "EXPIRED"
    assert acts.signed == []


async def test_denied_and_cancelled(time_skipping_env: WorkflowEnvironment) -> None:
    env, queue = time_skipping_env, f"q-{uuid.uuid4().hex}"
    async with _worker(env.client, queue, FakeActivities([OPS], allow=False)):
        handle, _ = await _start(env, queue)
        denied: IntentResult = await intent_result(handle)
    assert denied.state == "DENIED" and "cap" in denied.reason
    queue = f"q-{uuid.uuid4().hex}"
    acts = FakeActivities([OPS])
    async with _worker(env.client, queue, acts):
        handle, _ = await _start(env, queue)
        await handle.execute_update(StakingWorkflow.cancel, CancelInput("changed our mind", "alice"))
        cancelled: IntentResult = await intent_result(handle)
    assert cancelled.state == "CANCELLED"
    assert acts.signed == []


async def test_velocity_is_reserved_before_approved_and_a_full_window_denies(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    env, queue = time_skipping_env, f"q-{uuid.uuid4().hex}"
    acts = FakeActivities([OPS])
    async with _worker(env.client, queue, acts):
        handle, inp = await _start(env, queue)
        exp = await env.get_current_time() + timedelta(hours=12)
        for p in (O1, O2):
            await handle.execute_update(StakingWorkflow.approve, p.decide(inp, expires_at=exp))
        ok: IntentResult = await intent_result(handle)
    assert ok.state == "CONFIRMED" and acts.reserved == [inp.intent_id] and acts.released == []
    queue = f"q-{uuid.uuid4().hex}"
    acts = FakeActivities([OPS], velocity_room=False)
    async with _worker(env.client, queue, acts):
        handle, inp = await _start(env, queue)
        # the time-skipping server may have moved the clock past the first intent's timers
        exp = await env.get_current_time() + timedelta(hours=12)
        for p in (O1, O2):
            await handle.execute_update(StakingWorkflow.approve, p.decide(inp, expires_at=exp))
        denied: IntentResult = await intent_result(handle)
    assert denied.state == "DENIED" and "velocity" in denied.reason
    assert [t.state for t in acts.transitions][-2:] == ["AWAITING_APPROVALS", "DENIED"]
    assert acts.signed == []


async def test_a_failure_before_broadcast_releases_the_velocity_reservation(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    env, queue = time_skipping_env, f"q-{uuid.uuid4().hex}"
    acts = FakeActivities([OPS], sign_refuses=True)
    async with _worker(env.client, queue, acts):
        handle, inp = await _start(env, queue)
        exp = await env.get_current_time() + timedelta(hours=12)
        for p in (O1, O2):
            await handle.execute_update(StakingWorkflow.approve, p.decide(inp, expires_at=exp))
        result: IntentResult = await intent_result(handle)
    assert result.state == "FAILED" and "nonce reused" in result.reason
    assert acts.reserved == [inp.intent_id]
    assert [r.intent_id for r in acts.released] == [inp.intent_id]


@pytest.mark.parametrize("fails_at", ["build", "sign"])
async def test_an_intent_that_fails_before_signing_gives_its_nonce_back_before_it_ends(
    fails_at: str, time_skipping_env: WorkflowEnvironment
) -> None:
    env, queue = time_skipping_env, f"q-{uuid.uuid4().hex}"
    acts = FakeActivities([OPS], build_fails=fails_at == "build", sign_refuses=fails_at == "sign")
    async with _worker(env.client, queue, acts):
        handle, inp = await _start(env, queue)
        exp = await env.get_current_time() + timedelta(hours=12)
        for p in (O1, O2):
            await handle.execute_update(StakingWorkflow.approve, p.decide(inp, expires_at=exp))
        result: IntentResult = await intent_result(handle)
    assert result.state == "FAILED"
    assert [(r.intent_id, r.chain) for r in acts.nonces_released] == [(inp.intent_id, "ethereum-devnet")]
    assert acts.nonces_released[0].reason.startswith("failed: ")
    # given back before FAILED is recorded: whoever sees FAILED finds the nonce free
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in (await handle.fetch_history()).events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert scheduled[-3:] == ["ReleaseNonce", "ReleaseVelocity", "RecordTransition"]


async def test_a_signed_transaction_keeps_its_nonce_when_the_broadcast_is_refused(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    """The signature exists: only that transaction (or its replacement) may use the nonce."""
    env, queue = time_skipping_env, f"q-{uuid.uuid4().hex}"
    acts = FakeActivities([OPS], broadcast_refuses=True)
    async with _worker(env.client, queue, acts):
        handle, inp = await _start(env, queue)
        exp = await env.get_current_time() + timedelta(hours=12)
        for p in (O1, O2):
            await handle.execute_update(StakingWorkflow.approve, p.decide(inp, expires_at=exp))
        result: IntentResult = await intent_result(handle)
    assert result.state == "FAILED" and "broadcast refused" in result.reason
    assert len(acts.signed) == 1
    assert acts.nonces_released == [] and acts.released == []


async def test_a_wait_step_sleeps_until_the_chain_s_completion_time_then_polls_the_chain(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    """A family's WAIT step (a Cosmos unbonding): the chain says when it ends; the workflow sleeps
    until then on one durable timer, then asks the chain until the funds are back, and no
    configured period is waited on top of it."""
    env, queue = time_skipping_env, f"q-{uuid.uuid4().hex}"
    until = await env.get_current_time() + timedelta(days=21)
    plan = [PlannedStep("unstake", "SIGN"), PlannedStep("unbonding", "WAIT", "unbonding")]
    acts = FakeActivities([OPS], plan=plan, wait_until=until)
    async with _worker(env.client, queue, acts):
        handle, inp = await _start(env, queue)
        exp = await env.get_current_time() + timedelta(hours=12)
        for p in (O1, O2):
            await handle.execute_update(StakingWorkflow.approve, p.decide(inp, expires_at=exp))
        result: IntentResult = await intent_result(handle)
        events = (await handle.fetch_history()).events
    assert result.state == "CONFIRMED", result
    assert [(w.step, w.tx_hash) for w in acts.wait_polls] == [("unbonding", "0x" + "01" * 32)]
    kinds = []
    for e in events:
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            kinds.append(e.activity_task_scheduled_event_attributes.activity_type.name)
        elif e.event_type == EventType.EVENT_TYPE_TIMER_STARTED:
            timeout = e.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta()
            kinds.append(f"timer {round(timeout / timedelta(days=1))}d")
    after_broadcast = kinds[kinds.index("AwaitConfirmation") :]
    assert after_broadcast[:4] == ["AwaitConfirmation", "ChainWaitStatus", "RecordTransition", "timer 21d"]
    assert "AwaitChainWait" in after_broadcast and "UnbondingSeconds" not in kinds
    states = [t.state for t in acts.transitions]
    assert states.count("UNBONDING") == 1 and states[-1] == "CONFIRMED"


@pytest.mark.parametrize(("expiries", "ending"), [(2, "CONFIRMED"), (6, "FAILED")])
async def test_a_transaction_that_expired_unsent_is_rebuilt_and_signed_again_a_few_times(
    expiries: int, ending: str, time_skipping_env: WorkflowEnvironment
) -> None:
    """A Solana transaction whose recent blockhash expired can never land: the step is built again
    (fresh blockhash) and signed again (the signer's one allowed replacement), at most 6 times."""
    env, queue = time_skipping_env, f"q-{uuid.uuid4().hex}"
    acts = FakeActivities([OPS], expire_first=expiries)
    async with _worker(env.client, queue, acts):
        handle, inp = await _start(env, queue)
        exp = await env.get_current_time() + timedelta(hours=12)
        for p in (O1, O2):
            await handle.execute_update(StakingWorkflow.approve, p.decide(inp, expires_at=exp))
        result: IntentResult = await intent_result(handle)
    attempts = min(expiries + 1, 6)
    assert result.state == ending, result
    assert (acts.built, len(acts.signed)) == (attempts, attempts)
    assert len({s.unsigned_tx_hex for s in acts.signed}) == attempts  # each a new payload of the one step
    assert {s.step for s in acts.signed} == {"unstake"}
    signing = [t.detail for t in acts.transitions if t.state == "SIGNING"]
    assert len(signing) == attempts and all(
        d.startswith("rebuilt (the last one expired") for d in signing[1:]
    )
    if ending == "FAILED":
        assert result.reason == "the unstake transaction expired unsent 6 times"
    else:
        assert result.tx_hash == "0x" + f"{attempts:02x}" * 32


async def test_an_intent_that_does_not_confirm_is_a_failed_workflow_not_a_completed_one(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    """Operators see DENIED, REJECTED, EXPIRED, CANCELLED and FAILED intents as failed workflows
    (an ``Intent<State>`` error carrying the result), CONFIRMED ones as completed."""
    env = time_skipping_env
    queue = f"q-{uuid.uuid4().hex}"
    async with _worker(env.client, queue, FakeActivities([OPS], allow=False)):
        denied, _ = await _start(env, queue)
        with pytest.raises(WorkflowFailureError) as e:
            await denied.result()
        assert isinstance(e.value.cause, ApplicationError) and e.value.cause.type == "IntentDenied"
        assert e.value.cause.non_retryable and "DENIED: " in e.value.cause.message
    queue = f"q-{uuid.uuid4().hex}"
    async with _worker(env.client, queue, FakeActivities([OPS])):
        confirmed, inp = await _start(env, queue)
        exp = await env.get_current_time() + timedelta(hours=12)
        for p in (O1, O2):
            await confirmed.execute_update(StakingWorkflow.approve, p.decide(inp, expires_at=exp))
        assert (await confirmed.result()).state == "CONFIRMED"
        cancelled, _ = await _start(env, queue)
        await cancelled.execute_update(StakingWorkflow.cancel, CancelInput("changed our mind", "alice"))
        assert (await intent_result(cancelled)).state == "CANCELLED"
    statuses = {h.id: (await h.describe()).status for h in (denied, confirmed, cancelled)}
    assert statuses == {
        denied.id: WorkflowExecutionStatus.FAILED,
        confirmed.id: WorkflowExecutionStatus.COMPLETED,
        cancelled.id: WorkflowExecutionStatus.FAILED,
    }


async def test_an_intent_s_state_vault_chain_and_action_are_search_attributes(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    env, queue = time_skipping_env, f"q-{uuid.uuid4().hex}"
    async with _worker(env.client, queue, FakeActivities([OPS])):
        handle, inp = await _start(env, queue)
        await handle.execute_update(StakingWorkflow.cancel, CancelInput("changed our mind", "alice"))
        await intent_result(handle)
    found = (await handle.describe()).typed_search_attributes
    spec = inp.spec
    assert {k.name: found.get(k) for k in attrs.KEYS} == {
        "CustosState": "CANCELLED",
        "CustosVault": spec["vault_id"],
        "CustosChain": spec["chain"],
        "CustosAction": spec["action"],
    }


# --- decisions and their record (issue 15, items 0, 2, 3, 4) ------------------------------------------

ERIN = Person("erin")  # a registered approver, in none of the groups this policy names


async def _start_with_erin(env: WorkflowEnvironment, queue: str) -> tuple[WorkflowHandle, IntentInput]:
    now = await env.get_current_time()
    created = now - timedelta(days=1)
    people = [p.data(["operations"], created) for p in (ALICE, O1, O2, O3)] + [ERIN.data(["audit"], created)]
    inp = make_input("alice", people, now)
    handle = await env.client.start_workflow(StakingWorkflow.run, inp, id=inp.intent_id, task_queue=queue)
    return handle, inp


async def test_each_decision_is_recorded_before_it_counts_and_a_retry_is_answered_not_refused(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    """The staking service is down for the first attempts to record olivia's approval: the workflow
    retries the record, counts the approval only once it is recorded, and the retried update of the
    same signed approval (its first answer lost) gets the same answer, not "already decided"."""
    env, queue = time_skipping_env, f"q-{uuid.uuid4().hex}"
    acts = FakeActivities([OPS])
    acts.decision_failures = 2
    async with _worker(env.client, queue, acts):
        handle, inp = await _start(env, queue)
        exp = await env.get_current_time() + timedelta(hours=12)
        first = O1.decide(inp, expires_at=exp)
        ack: ApprovalAck = await handle.execute_update(StakingWorkflow.approve, first)
        assert ack.accepted and ack.recorded and not ack.quorum_met
        again: ApprovalAck = await handle.execute_update(StakingWorkflow.approve, first)
        assert again.recorded and again.counted == ack.counted
        last: ApprovalAck = await handle.execute_update(
            StakingWorkflow.approve, O2.decide(inp, expires_at=exp)
        )
        assert last.quorum_met and last.recorded
        result: IntentResult = await intent_result(handle)
    assert result.state == "CONFIRMED"
    assert [(d.approval.approver_id, d.quorum_met) for d in acts.decisions] == [
        ("olivia", False),
        ("oscar", True),
    ]
    assert sorted(a.approver_id for a in acts.signed[0].approvals) == ["olivia", "oscar"]  # counted once each
    states = [t.state for t in acts.transitions]
    assert states.index("APPROVED") > states.index("AWAITING_APPROVALS")


async def test_a_decision_from_outside_every_required_group_is_refused_and_never_counts(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    env, queue = time_skipping_env, f"q-{uuid.uuid4().hex}"
    acts = FakeActivities([OPS])
    async with _worker(env.client, queue, acts):
        # sent at once, before the policy has said who decides: refused once it has
        handle, inp = await _start_with_erin(env, queue)
        exp = await env.get_current_time() + timedelta(hours=12)
        with pytest.raises(WorkflowUpdateFailedError) as early:
            await handle.execute_update(StakingWorkflow.approve, ERIN.decide(inp, expires_at=exp))
        assert isinstance(early.value.cause, ApplicationError)
        assert early.value.cause.type == "ApprovalOutsideRequirement"
        assert "erin is in none of the groups" in str(early.value.cause)
        # and once it has, by the validator: nothing reaches the history
        accepted = await _accepted_updates(handle)
        for decision, update in (("APPROVE", StakingWorkflow.approve), ("REJECT", StakingWorkflow.reject)):
            with pytest.raises(WorkflowUpdateFailedError) as late:
                await handle.execute_update(update, ERIN.decide(inp, decision, expires_at=exp))
            assert isinstance(late.value.cause, ApplicationError)
            assert late.value.cause.type == "ApprovalOutsideRequirement"
        assert await _accepted_updates(handle) == accepted
        for p in (O1, O2):
            await handle.execute_update(StakingWorkflow.approve, p.decide(inp, expires_at=exp))
        result: IntentResult = await intent_result(handle)
    assert result.state == "CONFIRMED"
    assert [d.approval.approver_id for d in acts.decisions] == ["olivia", "oscar"]
    assert sorted(a.approver_id for a in acts.signed[0].approvals) == ["olivia", "oscar"]


async def test_a_reject_carries_its_reason_and_answers_with_the_ending(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    env, queue = time_skipping_env, f"q-{uuid.uuid4().hex}"
    acts = FakeActivities([OPS])
    async with _worker(env.client, queue, acts):
        handle, inp = await _start(env, queue)
        exp = await env.get_current_time() + timedelta(hours=12)
        no = O2.decide(inp, "REJECT", expires_at=exp)
        no.reason = "wrong validator"
        ack: ApprovalAck = await handle.execute_update(StakingWorkflow.reject, no)
        assert ack.state == "REJECTED"  # not AWAITING_APPROVALS: the ending is recorded before the answer
        assert acts.transitions[-1].state == "REJECTED"
        result: IntentResult = await intent_result(handle)
    assert result.state == "REJECTED"
    assert result.reason == "rejected by oscar: wrong validator"
    assert [(d.approval.approver_id, d.approval.reason) for d in acts.decisions] == [
        ("oscar", "wrong validator")
    ]


async def test_a_cancel_answers_with_the_state_it_led_to(time_skipping_env: WorkflowEnvironment) -> None:
    env, queue = time_skipping_env, f"q-{uuid.uuid4().hex}"
    acts = FakeActivities([OPS])
    async with _worker(env.client, queue, acts):
        handle, _ = await _start(env, queue)
        state = await handle.execute_update(StakingWorkflow.cancel, CancelInput("changed our mind", "alice"))
        assert state == "CANCELLED"
        assert acts.transitions[-1].state == "CANCELLED"
        assert (await intent_result(handle)).state == "CANCELLED"
