"""Records the workflow histories the replay tests run: ``python -m tests.staking.record_histories``.

Run it when a workflow change is *meant* to be incompatible (and version the
workflow instead where running intents exist); commit the JSON files it writes.
``python -m tests.staking.record_histories _SUFFIX`` writes ``<name>_SUFFIX.json`` beside the
existing ones instead: the histories of a new (patched) workflow version, the old ones kept.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import uuid
from datetime import timedelta
from pathlib import Path

from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from services.runtime.intent import (
    Action,
    IntentBinding,
    IntentSpec,
    PolicyChangeTarget,
    intent_digest,
    spec_to_plain,
)
from tests.staking.workflow_helpers import FakeActivities, Person, make_input
from workflows.policy_change.workflows import PolicyChangeWorkflow
from workflows.registration import ensure_registered
from workflows.sandbox import RUNNER
from workflows.staking.results import intent_result
from workflows.staking.types import ApproverData, GroupData
from workflows.staking.workflows import StakingWorkflow

OUT = Path(__file__).parent / "histories"
SUFFIX = sys.argv[1] if len(sys.argv) > 1 else ""
PEOPLE = [Person(n) for n in ("alice", "olivia", "oscar", "otto")]
GROUP = GroupData("operations", 2, ["olivia", "oscar", "otto"])


async def record() -> None:
    server = shutil.which("temporal-test-server", path=str(Path(sys.executable).parent))
    env = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=server)
    await ensure_registered(env.client)
    queue = f"q-{uuid.uuid4().hex}"
    try:
        async with Worker(
            env.client,
            task_queue=queue,
            workflows=[StakingWorkflow, PolicyChangeWorkflow],
            activities=FakeActivities([GROUP]).all(),
            workflow_runner=RUNNER,
        ):
            now = await env.get_current_time()
            created = now - timedelta(days=1)
            registry = [p.data(["operations"], created) for p in PEOPLE]
            exp = now + timedelta(hours=12)  # within the approval window (submission + 24h)
            # a stake-type intent that is approved and confirmed
            inp = make_input("alice", registry, now)
            h = await env.client.start_workflow(StakingWorkflow.run, inp, id=inp.intent_id, task_queue=queue)
            await h.execute_update(StakingWorkflow.approve, PEOPLE[1].decide(inp, expires_at=exp))
            await h.execute_update(StakingWorkflow.approve, PEOPLE[2].decide(inp, expires_at=exp))
            await intent_result(h)
            (OUT / f"staking_confirmed{SUFFIX}.json").write_text((await h.fetch_history()).to_json())
            # an intent that expires
            inp = make_input("alice", registry, now)
            h = await env.client.start_workflow(StakingWorkflow.run, inp, id=inp.intent_id, task_queue=queue)
            await intent_result(h)
            (OUT / f"staking_expired{SUFFIX}.json").write_text((await h.fetch_history()).to_json())
            # a policy change approved by the admin quorum (the expiry above moved the clock on)
            now = await env.get_current_time()
            exp = now + timedelta(hours=12)
            inp = make_input("alice", registry, now)
            spec = IntentSpec(Action.POLICY_CHANGE, "", "", 0, PolicyChangeTarget("b" * 64))
            inp.spec = spec_to_plain(spec)
            binding = IntentBinding(inp.intent_id, inp.initiator, inp.submitted_at)
            inp.digest_hex = intent_digest(spec, inp.policy_version, binding).hex()
            p = await env.client.start_workflow(
                PolicyChangeWorkflow.run, inp, id=inp.intent_id, task_queue=queue
            )
            await p.execute_update(PolicyChangeWorkflow.approve, PEOPLE[1].decide(inp, expires_at=exp))
            await p.execute_update(PolicyChangeWorkflow.approve, PEOPLE[3].decide(inp, expires_at=exp))
            await intent_result(p)
            (OUT / f"policy_change_confirmed{SUFFIX}.json").write_text((await p.fetch_history()).to_json())
        await record_sign_refused(env, registry)
    finally:
        await env.shutdown()


async def record_sign_refused(env: WorkflowEnvironment, registry: list[ApproverData]) -> None:
    """An approved intent whose signing is refused: it ends FAILED before anything is sent."""
    queue = f"q-{uuid.uuid4().hex}"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[StakingWorkflow],
        activities=FakeActivities([GROUP], sign_refuses=True).all(),
        workflow_runner=RUNNER,
    ):
        now = await env.get_current_time()
        exp = now + timedelta(hours=12)  # the clock moved on while the other histories ran
        inp = make_input("alice", registry, now)
        h = await env.client.start_workflow(StakingWorkflow.run, inp, id=inp.intent_id, task_queue=queue)
        await h.execute_update(StakingWorkflow.approve, PEOPLE[1].decide(inp, expires_at=exp))
        await h.execute_update(StakingWorkflow.approve, PEOPLE[2].decide(inp, expires_at=exp))
        await intent_result(h)
        (OUT / f"staking_sign_refused{SUFFIX}.json").write_text((await h.fetch_history()).to_json())


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    asyncio.run(record())
    print(f"histories written to {OUT}")
