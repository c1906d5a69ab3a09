"""Per-service PostgreSQL roles: each writes only its own schema, as ``custos db roles`` grants.

The attack these play: a compromised service host holds its service's database
credentials and writes another service's facts (an approver key, a policy version's
status, a recorded evaluation, the velocity ledger, a signing record, the audit trail).
Every statement runs as the role a service's ``CUSTOS_DATABASE_URL`` names.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from alembic import command
from psycopg import errors
from sqlalchemy import Table

from services.audit.writer import AuditWriter
from services.runtime.db import make_engine, make_session_factory
from services.runtime.db_roles import FOREIGN, OWN, Roles, check_declarations, privileges, provision
from services.runtime.errors import InvalidArgument, PermissionDenied
from services.runtime.migrate import alembic_config, load_models, upgrade
from services.runtime.settings import SERVICE_NAMES
from tests.fixtures.database import PgRoles, create_pg_database, drop_pg_database

METADATA = load_models()
TABLES = {t.fullname: t for t in METADATA.sorted_tables}
VERBS = ("SELECT", "INSERT", "UPDATE", "DELETE")
WRITES = ("INSERT", "UPDATE", "DELETE")

FOREIGN_PAIRS = [(s, name) for s in SERVICE_NAMES for name, t in TABLES.items() if t.schema != s]
#: What the security review named: facts the signer relies on, writable by the policy service only.
POLICY_FACTS = {
    "policy.policy_approvers",
    "policy.policy_approver_groups",
    "policy.policy_approver_keys",
    "policy.policy_versions",
    "policy.policy_evaluations",
    "policy.policy_velocity",
}


def statement(verb: str, table: Table) -> str:
    """``verb`` on ``table`` touching no row: the privilege check still runs, first."""
    column = next(iter(table.columns)).name
    return {
        "SELECT": f"SELECT 1 FROM {table.fullname} WHERE false",
        "INSERT": f"INSERT INTO {table.fullname} DEFAULT VALUES",
        "UPDATE": f"UPDATE {table.fullname} SET {column} = NULL WHERE false",
        "DELETE": f"DELETE FROM {table.fullname} WHERE false",
        "TRUNCATE": f"TRUNCATE {table.fullname}",
    }[verb]


class Sessions:
    """One connection per role, each statement in a transaction rolled back."""

    def __init__(self, db: PgRoles) -> None:
        self.db = db
        self._conns: dict[str, psycopg.Connection] = {}

    def conn(self, service: str) -> psycopg.Connection:
        if service not in self._conns:
            self._conns[service] = psycopg.connect(self.db.urls[service])
        return self._conns[service]

    def allowed(self, service: str, sql: str) -> bool:
        """False when the database refuses ``service``'s role the privilege; other errors
        (a NOT NULL column of a row-less INSERT) mean the privilege was granted."""
        conn = self.conn(service)
        try:
            conn.execute(sql)
        except errors.InsufficientPrivilege:
            return False
        except psycopg.Error:
            return True
        finally:
            conn.rollback()
        return True

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()


@pytest.fixture(scope="module")
def sessions(pg_roles: PgRoles) -> Iterator[Sessions]:
    s = Sessions(pg_roles)
    yield s
    s.close()


def test_the_declarations_name_what_the_models_hold() -> None:
    check_declarations(METADATA)
    assert any(r.grantee == "signer" and r.owner == "policy" for r in FOREIGN)


@pytest.mark.parametrize(("service", "table"), FOREIGN_PAIRS)
def test_a_role_touches_another_service_s_table_only_as_declared(
    sessions: Sessions, service: str, table: str
) -> None:
    declared = privileges(METADATA, service).get(table, frozenset())
    assert declared <= {"SELECT", "INSERT", "UPDATE"}, "no role deletes another service's rows"
    held = {verb for verb in VERBS if sessions.allowed(service, statement(verb, TABLES[table]))}
    assert held == declared


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_a_role_reads_and_writes_its_own_tables(sessions: Sessions, service: str) -> None:
    own = [t for t in TABLES.values() if t.schema == service]
    assert own
    for table in own:
        declared = privileges(METADATA, service)[table.fullname]
        held = {verb for verb in VERBS if sessions.allowed(service, statement(verb, table))}
        assert held == declared, table.fullname


def test_only_the_policy_service_writes_the_registry_versions_evaluations_and_velocity(
    sessions: Sessions,
) -> None:
    policy_tables = {name for name, t in TABLES.items() if t.schema == "policy"}
    assert policy_tables >= POLICY_FACTS
    for service in SERVICE_NAMES:
        for name in sorted(policy_tables):
            for verb in WRITES:
                may = sessions.allowed(service, statement(verb, TABLES[name]))
                assert may is (service == "policy"), f"{service} {verb} {name}"


def test_only_the_signer_writes_the_signer_tables(sessions: Sessions) -> None:
    signer_tables = [t for t in TABLES.values() if t.schema == "signer"]
    assert {t.name for t in signer_tables} >= {"signer_keys", "signer_signing_records"}
    for service in SERVICE_NAMES:
        for table in signer_tables:
            assert sessions.allowed(service, statement("INSERT", table)) is (service == "signer")
            for verb in ("UPDATE", "DELETE"):
                assert not sessions.allowed(service, statement(verb, table)) or (
                    service == "signer" and table.name == "signer_keys"
                ), f"{service} {verb} {table.fullname}"


def test_audit_records_are_append_only_for_everyone(sessions: Sessions, pg_roles: PgRoles) -> None:
    trail = [TABLES["audit.audit_records"], TABLES["audit.audit_checkpoints"]]
    for service in SERVICE_NAMES:
        assert sessions.allowed(service, statement("INSERT", trail[0])), service
        for table in trail:
            for verb in ("UPDATE", "DELETE", "TRUNCATE"):
                assert not sessions.allowed(service, statement(verb, table)), f"{service} {verb}"
    # the owner holds every privilege; the triggers still refuse (the hash chain catches the rest)
    engine = make_engine(pg_roles.urls["chain"])
    try:
        AuditWriter(make_session_factory(engine), "svc:chain").record("chain.test", "x:1", "ok", {})
    finally:
        engine.dispose()
    with psycopg.connect(pg_roles.admin_url, autocommit=True) as conn:
        conn.execute(f"SET ROLE {pg_roles.roles.owner}")
        conn.execute(
            "INSERT INTO audit.audit_checkpoints VALUES (1, %s, now(), 'k', %s, %s)",
            (bytes(32), bytes(32), bytes(64)),
        )
        for table in trail:
            for sql in (
                f"UPDATE {table.fullname} SET sequence = 0",
                f"DELETE FROM {table.fullname}",
                f"TRUNCATE {table.fullname}",
            ):
                with pytest.raises(errors.RaiseException, match="append-only"):
                    conn.execute(sql)


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_a_role_cannot_change_the_rules_it_is_held_to(
    sessions: Sessions, pg_roles: PgRoles, service: str
) -> None:
    """No service role alters a table, adds a trigger, creates anything, or becomes the owner."""
    own = next(t for t in TABLES.values() if t.schema == service)
    for sql in (
        f"ALTER TABLE {own.fullname} DISABLE TRIGGER USER",
        "ALTER TABLE audit.audit_records DISABLE TRIGGER USER",
        f"CREATE TRIGGER t BEFORE INSERT ON {own.fullname} EXECUTE FUNCTION audit.audit_append_only()",
        f"CREATE TABLE {service}.{service}_shadow (x int)",
        "CREATE TABLE public.shadow (x int)",
        "CREATE SCHEMA shadow",
        f"SET ROLE {pg_roles.roles.owner}",
    ):
        assert not sessions.allowed(service, sql), sql


def test_provisioning_twice_changes_nothing(pg_roles: PgRoles) -> None:
    def grants() -> list[tuple[str, ...]]:
        with psycopg.connect(pg_roles.admin_url) as conn:
            return conn.execute(
                "SELECT table_schema, table_name, grantee, privilege_type "
                "FROM information_schema.role_table_grants WHERE grantee LIKE %s UNION ALL "
                "SELECT nspname, CAST(defaclobjtype AS text), CAST(defaclacl AS text), '' "
                "FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace ORDER BY 1, 2, 3, 4",
                (f"{pg_roles.roles.prefix}%",),
            ).fetchall()

    before = grants()
    assert provision(pg_roles.admin_url, pg_roles.roles) == pg_roles.urls
    assert grants() == before


def test_a_table_a_later_migration_adds_is_its_service_s_at_once(
    sessions: Sessions, pg_roles: PgRoles
) -> None:
    """Default privileges: the owner's new table in ``policy`` is the policy role's, readable by the
    signer (which reads every policy table), and nobody else's, before ``custos db roles`` runs again."""
    with psycopg.connect(pg_roles.admin_url) as conn:
        conn.execute(f"SET ROLE {pg_roles.roles.owner}")
        conn.execute("CREATE TABLE policy.policy_later (id serial PRIMARY KEY, v text)")
        conn.commit()
    try:
        for service in SERVICE_NAMES:
            wrote = sessions.allowed(service, "INSERT INTO policy.policy_later (v) VALUES ('x')")
            read = sessions.allowed(service, "SELECT v FROM policy.policy_later")
            assert (wrote, read) == (service == "policy", service in ("policy", "signer")), service
    finally:
        with psycopg.connect(pg_roles.admin_url) as conn:
            conn.execute("DROP TABLE policy.policy_later")


def test_only_an_administrator_provisions(pg_roles: PgRoles) -> None:
    with pytest.raises(PermissionDenied, match="superuser"):
        provision(pg_roles.urls["policy"], Roles(f"custos_t_{uuid.uuid4().hex[:8]}"))


def test_roles_refuse_sqlite_and_bad_prefixes() -> None:
    with pytest.raises(InvalidArgument, match="PostgreSQL only"):
        provision("sqlite:///custos.db")
    for prefix in ("", "Custos", "1x", "a;b", "x" * 41):
        with pytest.raises(InvalidArgument):
            Roles(prefix)


def test_a_database_migrated_before_schemas_upgrades_and_keeps_its_rows(pg_server: str) -> None:
    """Today's deployments: tables in the default schema, owned by whoever migrated them."""
    url = create_pg_database(pg_server)
    roles = Roles(f"custos_t_{uuid.uuid4().hex[:8]}")
    try:
        old_heads = ["policy@policy_0002", "signer@signer_0001", "chain@chain_0001", "audit@audit_0001"]
        for head in [*old_heads, "staking@staking_0002"]:
            command.upgrade(alembic_config(url), head)
        with psycopg.connect(url) as conn:
            conn.execute("INSERT INTO policy_approvers VALUES ('alice', 'Alice', now())")
        urls = provision(url, roles)
        upgrade(url)  # a second run as anyone is a no-op
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM policy.policy_approvers").fetchone() == (1,)
            left = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
            assert left == [("alembic_version",)]
        with psycopg.connect(urls["policy"]) as conn:
            # the registry trigger runs as the policy role, whose search path lacks the schema
            before = conn.execute("SELECT revision FROM policy.policy_registry_revision").fetchone()
            conn.execute("INSERT INTO policy.policy_approver_groups VALUES ('alice', 'ops')")
            after = conn.execute("SELECT revision FROM policy.policy_registry_revision").fetchone()
            assert before is not None and after is not None and after[0] > before[0]
        with psycopg.connect(urls["chain"]) as conn, pytest.raises(errors.InsufficientPrivilege):
            conn.execute("INSERT INTO policy.policy_approver_groups VALUES ('alice', 'treasury')")
    finally:
        drop_pg_database(pg_server, url)
        with psycopg.connect(pg_server, autocommit=True) as conn:
            for role in (roles.owner, *roles.services.values()):
                conn.execute(f"DROP ROLE IF EXISTS {role}")


def test_own_privileges_are_the_ceiling_of_what_is_declared() -> None:
    for service in SERVICE_NAMES:
        for name, granted in privileges(METADATA, service).items():
            assert granted <= OWN, name
