"""Replay of committed workflow histories: a non-deterministic change fails here first."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from workflows.policy_change.workflows import PolicyChangeWorkflow
from workflows.sandbox import RUNNER
from workflows.staking.activities import StakingActivities
from workflows.staking.types import IntentInput, IntentResult, TransitionInput
from workflows.staking.workflows import StakingWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def _load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


def test_every_workflow_type_has_a_recorded_history() -> None:
    names = {p.stem for p in HISTORIES}
    assert {"staking_confirmed", "staking_expired", "policy_change_confirmed"} <= names


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
async def test_committed_history_replays(path: Path) -> None:
    replayer = Replayer(workflows=[StakingWorkflow, PolicyChangeWorkflow], workflow_runner=RUNNER)
    await replayer.replay_workflow(_load(path))


@workflow.defn(name="StakingIntent")
class ReorderedStakingWorkflow(StakingWorkflow):
    """The same workflow with one extra step at the start: an incompatible change."""

    @workflow.run
    async def run(self, inp: IntentInput) -> IntentResult:
        await workflow.execute_activity_method(
            StakingActivities.record_transition,
            TransitionInput(inp.intent_id, 99, "SUBMITTED"),
            start_to_close_timeout=timedelta(seconds=5),
        )
        return await super().run(inp)


async def test_a_non_deterministic_change_is_caught() -> None:
    replayer = Replayer(workflows=[ReorderedStakingWorkflow], workflow_runner=RUNNER)
    with pytest.raises(workflow.NondeterminismError):
        await replayer.replay_workflow(_load(Path(__file__).parent / "histories" / "staking_confirmed.json"))
