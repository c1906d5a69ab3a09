"""The whole stack on PostgreSQL, each service as its own role (``custos dev up --postgres``):
the demo's scenario runs as on SQLite, and no service can write another's tables."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from services.cli import devstack
from services.cli.scenario import run_scenario
from services.runtime.db_roles import Roles
from tests.fixtures.database import create_pg_database, drop_pg_database


@pytest.fixture(scope="module")
def pg_stack(
    tmp_path_factory: pytest.TempPathFactory, pg_server: str
) -> Iterator[tuple[devstack.Stack, str]]:
    url = create_pg_database(pg_server)
    stack = devstack.Stack.named(tmp_path_factory.mktemp("stack"), f"pg{uuid.uuid4().hex[:8]}")
    roles = Roles(f"custos_{stack.root.name}")
    try:
        devstack.up(stack, postgres=url)
        procs = stack.running()
        try:
            yield stack, url
        finally:
            devstack.down(stack)
            assert devstack.leftover(procs) == [], "dev down left processes behind"
    finally:
        drop_pg_database(pg_server, url)
        with psycopg.connect(pg_server, autocommit=True) as conn:
            for role in (roles.owner, *roles.services.values()):
                conn.execute(f"DROP ROLE IF EXISTS {role}")


def _database_url(pid: int) -> str:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return next(v.split(b"=", 1)[1].decode() for v in environ if v.startswith(b"CUSTOS_DATABASE_URL="))


async def test_the_scenario_runs_with_a_role_per_service(pg_stack: tuple[devstack.Stack, str]) -> None:
    stack, url = pg_stack
    lines: list[str] = []
    results = await run_scenario(stack, lines.append)
    assert results == {
        "stake": "CONFIRMED",
        "unstake": "CONFIRMED",
        "restake": "CONFIRMED",
        "cosmos_stake": "CONFIRMED",
        "cosmos_restake": "CONFIRMED",
        "cosmos_unstake": "CONFIRMED",
        "cosmos_vote": "CONFIRMED",
        "cosmos_claim": "CONFIRMED",
        "solana_stake": "CONFIRMED",
        "solana_unstake": "CONFIRMED",
        "self_approval": "REFUSED",
        "over_limit": "DENIED",
        "lone_admin": "REFUSED",
        "audit": "OK",
    }, "\n".join(lines)
    roles = Roles(f"custos_{stack.root.name}")
    with psycopg.connect(url) as conn:
        users = {
            u
            for (u,) in conn.execute(
                "SELECT usename FROM pg_stat_activity WHERE datname = current_database()"
            )
        }
    # every service kept its pooled connections, each logged in as its own role
    assert set(roles.services.values()) <= users
    assert roles.owner not in users


def test_each_process_keeps_its_role_across_a_restart(pg_stack: tuple[devstack.Stack, str]) -> None:
    stack, _ = pg_stack
    roles = Roles(f"custos_{stack.root.name}")
    pids = {p["name"]: p["pid"] for p in stack.running()}
    for service in ("policy", "signer", "chain", "audit", "staking"):
        assert f"//{roles.of(service)}@" in _database_url(pids[service])
    devstack.restart(stack, "signer")
    restarted = {p["name"]: p["pid"] for p in stack.running()}["signer"]
    assert restarted != pids["signer"]
    assert f"//{roles.of('signer')}@" in _database_url(restarted)
