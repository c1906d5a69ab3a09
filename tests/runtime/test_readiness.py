"""A service's health follows its dependencies; it refuses to start on an unmigrated database.

Real services (``custos serve``'s own start-up, :func:`start_service`) on real dependencies:
a database whose lock another session holds (SQLite and PostgreSQL), a Temporal dev server
stopped and started again, an anvil node stopped and started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from sqlalchemy import text

from services.chain.devnet import Devnet, DevnetAssets
from services.cli.main import cli
from services.runtime.db import make_engine
from services.runtime.errors import FailedPrecondition, Unavailable
from services.runtime.health import check_service
from services.runtime.ports import free_port
from services.runtime.readiness import Probe, Readiness
from services.runtime.runner import start_service
from services.runtime.server import RunningServer
from services.runtime.settings import ServiceSettings, TLSSettings
from tests.fixtures.database import create_pg_database, drop_pg_database

GRPC_NAMES = {
    "policy": "custos.policy.v1.PolicyService",
    "chain": "custos.chain.v1.ChainService",
    "staking": "custos.staking.v1.StakingService",
}


def _settings(service: str, pki_dir: Path, database_url: str, **extra: Any) -> ServiceSettings:
    cls: type[ServiceSettings] = importlib.import_module(f"services.{service}.main").SETTINGS
    return cls(
        state_dir=pki_dir.parent,
        database_url=database_url,
        listen="127.0.0.1:0",
        health_probe_seconds=0.1,
        tls=TLSSettings(pki_dir=pki_dir),
        **extra,
    )


@contextlib.asynccontextmanager
async def serving(settings: ServiceSettings) -> AsyncIterator[RunningServer]:
    running, component = await start_service(settings.service, settings)
    try:
        yield running
    finally:
        await running.stop(0)
        await component.close()


async def _status(pki_dir: Path, running: RunningServer, service: str) -> str:
    health = await check_service(pki_dir, f"127.0.0.1:{running.port}", GRPC_NAMES[service], "alice")
    return health.status


async def _becomes(pki_dir: Path, running: RunningServer, service: str, status: str, within: float) -> None:
    deadline = time.monotonic() + within
    seen = ""
    while time.monotonic() < deadline:
        seen = await _status(pki_dir, running, service)
        if seen == status:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{service} stayed {seen} for {within:g}s, not {status}")


@contextlib.contextmanager
def _locked(url: str) -> Iterator[None]:
    """Another session holding the database's lock on the policy service's tables."""
    if url.startswith("sqlite"):
        engine = make_engine(url)
        with engine.connect() as conn:
            conn.begin()  # BEGIN IMMEDIATE: the write lock, as a stuck writer holds it
            conn.execute(text("SELECT 1"))
            try:
                yield
            finally:
                conn.rollback()
        engine.dispose()
        return
    with psycopg.connect(url) as pg:
        tables = [r[0] for r in pg.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'policy'")]
        pg.execute(f"LOCK TABLE {', '.join('policy.' + t for t in tables)} IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            pg.rollback()


async def test_a_locked_database_takes_the_service_out_until_released(pki_dir: Path, db_url: str) -> None:
    async with serving(_settings("policy", pki_dir, db_url)) as running:
        await _becomes(pki_dir, running, "policy", "SERVING", 10)
        with _locked(db_url):
            await _becomes(pki_dir, running, "policy", "NOT_SERVING", 15)
        await _becomes(pki_dir, running, "policy", "SERVING", 10)


def _start_temporal(port: int, db: Path) -> subprocess.Popen[bytes]:
    temporal = shutil.which("temporal", path=str(Path(sys.executable).parent)) or "temporal"
    argv = [temporal, "server", "start-dev", "--headless", "--ip", "127.0.0.1", "--port", str(port)]
    argv += ["--db-filename", str(db), "--log-level", "error"]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _temporal_answers(port: int, within: float = 30) -> None:
    from temporalio.client import Client

    deadline = time.monotonic() + within
    while True:
        try:
            await Client.connect(f"127.0.0.1:{port}")
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


async def test_temporal_down_takes_the_staking_service_out_until_it_is_back(
    pki_dir: Path, sqlite_url: str, tmp_path: Path
) -> None:
    port = free_port()
    proc = _start_temporal(port, tmp_path / "temporal.db")
    try:
        await _temporal_answers(port)
        settings = _settings("staking", pki_dir, sqlite_url, temporal={"address": f"127.0.0.1:{port}"})
        async with serving(settings) as running:
            await _becomes(pki_dir, running, "staking", "SERVING", 10)
            _stop(proc)
            await _becomes(pki_dir, running, "staking", "NOT_SERVING", 15)
            proc = _start_temporal(port, tmp_path / "temporal.db")
            await _becomes(pki_dir, running, "staking", "SERVING", 30)
    finally:
        _stop(proc)


async def test_a_stopped_node_takes_the_chain_service_out_until_it_is_back(
    pki_dir: Path, sqlite_url: str, devnet_assets: DevnetAssets
) -> None:
    node = Devnet(assets=devnet_assets).start()
    try:
        settings = _settings(
            "chain", pki_dir, sqlite_url, chains=[node.chain_config().model_dump()], reconcile_seconds=0
        )
        async with serving(settings) as running:
            await _becomes(pki_dir, running, "chain", "SERVING", 10)
            node.stop()
            await _becomes(pki_dir, running, "chain", "NOT_SERVING", 15)
            await asyncio.to_thread(node.start)
            await _becomes(pki_dir, running, "chain", "SERVING", 10)
    finally:
        node.stop()


class _Health:
    def __init__(self) -> None:
        self.set_to: dict[str, int] = {}

    async def set(self, service: str, status: int) -> None:
        self.set_to[service] = status


async def test_one_slow_round_does_not_take_a_service_out() -> None:
    answers = iter([None, Unavailable("busy"), None, Unavailable("down"), Unavailable("down"), None])

    async def check() -> None:
        outcome = next(answers)
        if outcome is not None:
            raise outcome

    health = _Health()
    readiness = Readiness(health, ["x.v1.X"], [Probe("the thing", check)], strikes=2)
    seen = [bool(await readiness.check()) for _ in range(6)]
    assert seen == [False, False, False, False, True, False]
    assert health.set_to == {"x.v1.X": 1, "": 1}  # SERVING again at the end


# --- an unmigrated database --------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    admin = request.getfixturevalue("pg_server")
    url = create_pg_database(admin)
    try:
        yield url
    finally:
        drop_pg_database(admin, url)


async def test_a_service_refuses_to_start_on_an_unmigrated_database(pki_dir: Path, empty_db: str) -> None:
    with pytest.raises(FailedPrecondition) as e:
        await start_service("policy", _settings("policy", pki_dir, empty_db))
    assert "is not migrated" in e.value.message
    assert "run `custos db migrate --url" in e.value.message
    assert "\n" not in e.value.message


def test_custos_serve_on_an_unmigrated_database_says_so_in_one_line(pki_dir: Path, empty_db: str) -> None:
    env = {"CUSTOS_DATABASE_URL": empty_db, "CUSTOS_STATE_DIR": str(pki_dir.parent), "CUSTOS_CONFIG": ""}
    result = CliRunner().invoke(cli, ["serve", "staking"], env=env)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: FAILED_PRECONDITION: the database"), lines
    assert "custos db migrate" in lines[0]
