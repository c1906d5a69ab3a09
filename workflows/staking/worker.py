"""``custos serve worker``: one process hosting the workflows and their activities.

The worker opens no database: everything it learns or records goes through the
services' APIs (transitions through the staking service's ``RecordTransition``),
so its certificate and its Temporal connection are all it holds.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable

from temporalio.client import Client
from temporalio.worker import Worker

from services.chain.client import ChainClient
from services.policy.client import PolicyClient
from services.runtime.logs import setup_logging
from services.runtime.settings import ServiceSettings, load
from services.runtime.telemetry import setup_telemetry
from services.runtime.temporal import connect as connect_temporal
from services.signer.client import SignerClient
from services.staking.client import StakingClient
from workflows.policy_change.workflows import PolicyChangeWorkflow
from workflows.registration import ensure_registered
from workflows.sandbox import RUNNER
from workflows.staking.activities import StakingActivities
from workflows.staking.workflows import StakingWorkflow

log = logging.getLogger("custos.worker")
WORKFLOWS = [StakingWorkflow, PolicyChangeWorkflow]


class WorkerSettings(ServiceSettings):
    service = "worker"


def make_worker(client: Client, task_queue: str, activities: StakingActivities) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=activities.all(),
        workflow_runner=RUNNER,
        max_concurrent_activities=50,
    )


async def build(settings: ServiceSettings) -> tuple[Worker, Callable[[], Awaitable[None]]]:
    """The worker as ``custos serve worker`` runs it, and what to close once it has stopped."""
    policy, signer, chain, staking = (
        PolicyClient.connect(settings),
        SignerClient.connect(settings),
        ChainClient.connect(settings),
        StakingClient.connect(settings),
    )
    activities = StakingActivities(policy=policy, signer=signer, chain=chain, staking=staking)
    # the worker inherits the client's interceptors: workflow and activity spans continue the trace
    client = await connect_temporal(settings.temporal)
    await ensure_registered(client)  # an intent's first upsert would fail on a namespace without them
    worker = make_worker(client, settings.temporal.task_queue, activities)

    async def close() -> None:
        for c in (policy, signer, chain, staking):
            await c.close()

    return worker, close


async def run(settings: ServiceSettings) -> None:
    worker, close = await build(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with worker:
        log.info("worker started on task queue %s", settings.temporal.task_queue)
        await stop.wait()
        log.info("signal received: finishing in-flight tasks")
    await close()


def main() -> None:
    settings = load(WorkerSettings)
    setup_logging(settings.log_level, settings.log_format, "worker")
    setup_telemetry(settings.telemetry, "worker")
    asyncio.run(run(settings))
