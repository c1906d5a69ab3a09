"""One real stack per database for the whole directory (see stack.py), in one event loop;
both are stopped once the directory has run.

Starting the stack and playing the honest flows (World) takes seconds; every test
then plays one attack against it and leaves it as it found it, so the stack is
shared by every module: pytest runs all tests on SQLite, then all on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from services.chain.devnet import Devnet
from services.runtime.migrate import upgrade
from services.signer.softhsm import TokenConfig
from tests.fixtures.database import PG_ADMIN_URL, create_pg_database, drop_pg_database
from tests.fixtures.temporal import _binary
from tests.security.insiders import WorkerHost
from tests.security.stack import SecurityStack, security_stack
from tests.security.world import World, build_world
from workflows.registration import ensure_registered

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here runs in the package's event loop, the one the stacks live in."""
    marker = pytest.mark.asyncio(loop_scope="package")
    for item in items:
        if _HERE in Path(str(item.fspath)).parents and pytest_asyncio.is_async_test(item):
            item.add_marker(marker, append=False)


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def temporal_address() -> AsyncIterator[str]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=_binary("temporal"),
        dev_server_extra_args=["--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=off"],
    )
    await ensure_registered(env.client)  # as the worker does
    try:
        yield env.client.service_client.config.target_host
    finally:
        await env.shutdown()


@pytest_asyncio.fixture(scope="package", loop_scope="package", params=["sqlite", "postgresql"])
async def stack(
    request: pytest.FixtureRequest,
    temporal_address: str,
    softhsm_token: TokenConfig,
    devnet: Devnet,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[SecurityStack]:
    root = tmp_path_factory.mktemp(f"security-{request.param}")
    if request.param == "sqlite":
        url, drop = f"sqlite:///{root / 'custos.db'}", None
    else:
        request.getfixturevalue("pg_server")  # skips (or fails under CI) without PostgreSQL
        url = drop = create_pg_database(PG_ADMIN_URL)
    try:
        upgrade(url)
        async with security_stack(
            root, database_url=url, temporal_address=temporal_address, token=softhsm_token, devnet=devnet
        ) as running:
            running.world = await build_world(running)
            yield running
    finally:
        if drop is not None:
            drop_pg_database(PG_ADMIN_URL, drop)


@pytest.fixture
def world(stack: SecurityStack) -> World:
    assert isinstance(stack.world, World)
    return stack.world


@pytest.fixture
def worker_host(stack: SecurityStack) -> WorkerHost:
    return WorkerHost(stack)
