"""The baseline of ``bench/workflow.py``: a bare workflow with a staking intent's Temporal shape.

Its activities do nothing and its update validator checks only that the gate is
open, so what it measures is Temporal itself (the dev server, one worker process,
the same sandbox) doing the same number of activities, updates and timers. Run as
its own process, like the custos worker: ``python -m bench._bare ADDRESS QUEUE``.

This module is imported inside the workflow sandbox: stdlib, dataclasses and
``temporalio`` only at the top.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

#: The same timeouts and retry policy as workflows/gated.py gives the quick activities.
QUICK = timedelta(seconds=30)
RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
READY = "bare worker ready"


@dataclass
class BareInput:
    """The shape to run: activity names in order, and where the approval gate sits."""

    activities: list[str]
    gate_after: int  # activities run before the wait for the updates
    updates: int  # updates that open the gate


@dataclass
class BareApproval:
    approver: str


@activity.defn(name="BareStep")
async def bare_step(step: str) -> str:
    return step


@workflow.defn(name="BareIntent")
class BareWorkflow:
    @workflow.init
    def __init__(self, inp: BareInput) -> None:
        self._needed = inp.updates
        self._got: list[str] = []

    @workflow.update
    async def approve(self, a: BareApproval) -> int:
        # as the staking workflow records each decision (RecordDecision) before it counts
        await workflow.execute_activity(
            bare_step, "RecordDecision", start_to_close_timeout=QUICK, retry_policy=RETRY
        )
        self._got.append(a.approver)
        return len(self._got)

    @approve.validator
    def _validate_approve(self, a: BareApproval) -> None:
        if len(self._got) >= self._needed or a.approver in self._got:
            raise ApplicationError("gate closed", type="ApprovalRefused", non_retryable=True)

    @workflow.run
    async def run(self, inp: BareInput) -> int:
        for i, step in enumerate(inp.activities):
            if i == inp.gate_after:
                # a timer, as the approval deadline is one in the staking workflow
                await workflow.wait_condition(
                    lambda: len(self._got) >= self._needed, timeout=timedelta(hours=24)
                )
            await workflow.execute_activity(bare_step, step, start_to_close_timeout=QUICK, retry_policy=RETRY)
        return len(inp.activities)


async def serve(address: str, queue: str) -> None:
    """One worker process on ``queue``, configured as ``workflows.staking.worker`` makes its own."""
    import asyncio

    from temporalio.client import Client
    from temporalio.worker import Worker

    from workflows.sandbox import RUNNER

    client = await Client.connect(address)
    worker = Worker(
        client,
        task_queue=queue,
        workflows=[BareWorkflow],
        activities=[bare_step],
        workflow_runner=RUNNER,
        max_concurrent_activities=50,
    )
    async with worker:
        print(READY, flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    import asyncio
    import sys

    asyncio.run(serve(sys.argv[1], sys.argv[2]))
