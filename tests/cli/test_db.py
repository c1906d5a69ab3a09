"""``custos db migrate`` and ``custos db roles`` from the command line."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
from click.testing import CliRunner
from sqlalchemy import inspect

from services.cli.main import cli
from services.runtime.db import make_engine
from services.runtime.db_roles import Roles, role_url
from tests.fixtures.database import create_pg_database, drop_pg_database


def test_migrate_brings_an_sqlite_file_to_the_newest_schema_twice(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'custos.db'}"
    for _ in range(2):
        result = CliRunner().invoke(cli, ["db", "migrate", "--url", url])
        assert result.exit_code == 0, result.output
    engine = make_engine(url)
    try:
        assert {"policy_versions", "signer_signing_records", "audit_records"} <= set(
            inspect(engine).get_table_names()
        )
    finally:
        engine.dispose()


def test_roles_prints_each_service_s_url_and_reach(pg_server: str) -> None:
    url = create_pg_database(pg_server)
    roles = Roles(f"custos_t_{uuid.uuid4().hex[:8]}")
    try:
        outputs = [
            CliRunner().invoke(cli, ["db", "roles", "--url", url, "--prefix", roles.prefix]) for _ in range(2)
        ]
        for result in outputs:
            assert result.exit_code == 0, result.output
        assert outputs[0].output == outputs[1].output
        lines = outputs[0].output.splitlines()
        assert f"signer   CUSTOS_DATABASE_URL={role_url(url, roles.of('signer'))}" in lines
        signer = lines[lines.index(next(x for x in lines if x.startswith("signer"))) + 1]
        assert "signer.signer_keys DELETE, INSERT, SELECT, UPDATE" in signer
        assert "signer.signer_signing_records INSERT, SELECT" in signer
        assert "policy.* SELECT" in signer
        assert "audit.audit_records INSERT" in signer
        chain = lines[lines.index(next(x for x in lines if x.startswith("chain"))) + 1]
        assert "policy" not in chain and "signer" not in chain
    finally:
        drop_pg_database(pg_server, url)
        with psycopg.connect(pg_server, autocommit=True) as conn:
            for role in (roles.owner, *roles.services.values()):
                conn.execute(f"DROP ROLE IF EXISTS {role}")


def test_roles_on_sqlite_is_one_clear_line() -> None:
    result = CliRunner().invoke(cli, ["db", "roles", "--url", "sqlite:///custos.db"])
    assert result.exit_code == 2
    assert "INVALID_ARGUMENT" in result.output and "PostgreSQL only" in result.output
