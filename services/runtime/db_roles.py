"""Least privilege in PostgreSQL: one login role per service, each writing only its own schema.

:func:`provision` (``custos db roles``) makes, in the database it is pointed at:

* an owner role (``custos_owner``) that owns the service schemas and every table in
  them, and that runs the migrations; nothing serves with it;
* a login role per service (``custos_policy``, ``custos_signer``...), which each
  service's ``CUSTOS_DATABASE_URL`` names. It may read and write the tables of its own
  schema, and touch another service's tables only as :data:`FOREIGN` says.

Which tables are whose comes from the models' metadata: a table's schema is the
service whose package declares it (``runtime.db.service_schema``), so a table added
to a service is granted to that service, and to whoever :data:`FOREIGN` lets read
that service's tables, without a word here. Grants are made to converge: every run
revokes what the roles hold on custos's tables and grants what is declared, in one
transaction, so running it twice changes nothing.

Limits, by design: the owner (and any superuser) can do anything, including
disabling the audit trail's append-only triggers; the hash chain and its signed
checkpoints are what catch that. Every service may move the audit head (an append
must); a service that moves it wrongly forks the chain, which verification names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import Connection, MetaData, Table, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from services.runtime.db import make_engine
from services.runtime.errors import FailedPrecondition, InvalidArgument, PermissionDenied, Unavailable
from services.runtime.migrate import load_models, upgrade
from services.runtime.settings import SERVICE_NAMES

#: What a service may do to the tables of its own schema.
OWN = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE"})
#: A grantee of :class:`Reach` meaning every service.
EVERY_SERVICE = "*"


@dataclass(frozen=True)
class Reach:
    """``grantee`` may do ``privileges`` on ``table`` of service ``owner`` (all its tables if None)."""

    grantee: str
    owner: str
    table: str | None
    privileges: frozenset[str]


#: Every way a service's code touches another service's tables; nothing else crosses schemas.
FOREIGN: tuple[Reach, ...] = (
    # The signer loads policy versions, the approver registry and recorded evaluations itself
    # (signer.policy_view): it trusts no caller's account of them.
    Reach("signer", "policy", None, frozenset({"SELECT"})),
    # Every service appends audit records inside its own transactions (audit.repository.append):
    # it locks and reads the head (SELECT ... FOR UPDATE needs UPDATE), inserts the record,
    # moves the head. Nobody else reads the trail: the audit service serves it.
    Reach(EVERY_SERVICE, "audit", "audit_records", frozenset({"INSERT"})),
    Reach(EVERY_SERVICE, "audit", "audit_head", frozenset({"SELECT", "UPDATE"})),
)

#: At most these on a table, for every role, its own service's included. The trail is
#: append-only (its triggers say so too) and its one head row is made by the migration;
#: signing records are the slashing protection: a signature once recorded stays recorded.
CEILING: Mapping[str, frozenset[str]] = {
    "audit.audit_records": frozenset({"SELECT", "INSERT"}),
    "audit.audit_checkpoints": frozenset({"SELECT", "INSERT"}),
    "audit.audit_head": frozenset({"SELECT", "UPDATE"}),
    "signer.signer_signing_records": frozenset({"SELECT", "INSERT"}),
}

_PREFIX = re.compile(r"[a-z][a-z0-9_]{0,39}")


def _reaches(service: str, table: Table) -> Iterable[Reach]:
    for reach in FOREIGN:
        if reach.grantee in (service, EVERY_SERVICE) and reach.owner == table.schema != service:
            if reach.table in (None, table.name):
                yield reach


def privileges(metadata: MetaData, service: str) -> dict[str, frozenset[str]]:
    """What ``service``'s role may do on each table (``schema.table``) it may touch at all."""
    out: dict[str, frozenset[str]] = {}
    for table in metadata.tables.values():
        granted = OWN if table.schema == service else frozenset()
        for reach in _reaches(service, table):
            granted |= reach.privileges
        granted &= CEILING.get(table.fullname, OWN)
        if granted:
            out[table.fullname] = granted
    return out


def check_declarations(metadata: MetaData) -> None:
    """Refuses a :data:`FOREIGN` or :data:`CEILING` entry that names what the models lack."""
    schemas = {t.schema for t in metadata.tables.values()}
    for reach in FOREIGN:
        if reach.grantee not in (*SERVICE_NAMES, EVERY_SERVICE) or reach.owner not in schemas:
            raise FailedPrecondition(f"db_roles.FOREIGN names an unknown service: {reach}")
        if reach.table is not None and f"{reach.owner}.{reach.table}" not in metadata.tables:
            raise FailedPrecondition(f"db_roles.FOREIGN names a table the models lack: {reach}")
    for name in CEILING:
        if name not in metadata.tables:
            raise FailedPrecondition(f"db_roles.CEILING names a table the models lack: {name}")


@dataclass(frozen=True)
class Roles:
    """The role names of one custos database (``prefix`` tells deployments on one server apart)."""

    prefix: str = "custos"

    def __post_init__(self) -> None:
        if not _PREFIX.fullmatch(self.prefix):
            raise InvalidArgument("a role prefix is a lower-case letter then up to 39 of [a-z0-9_]")

    @property
    def owner(self) -> str:
        return f"{self.prefix}_owner"

    def of(self, service: str) -> str:
        return f"{self.prefix}_{service}"

    @property
    def services(self) -> dict[str, str]:
        return {s: self.of(s) for s in SERVICE_NAMES}


def role_url(url: str, role: str) -> str:
    """``url`` logging in as ``role`` (no password: set one with ALTER ROLE, or use certificates)."""
    return make_url(url).set(username=role, password=None).render_as_string(hide_password=False)


def provision(admin_url: str, roles: Roles = Roles()) -> dict[str, str]:
    """Creates the roles and schemas, migrates as the owner, grants; returns each service's URL.

    ``admin_url`` names a superuser of the database: it creates roles and takes over the
    tables today's migrations made. Safe to run twice; run it again after an upgrade that
    adds tables, so that :data:`CEILING` and table-level reaches cover them (a new table is
    its own service's, and readable as a schema-wide reach says, as soon as it is created).

    Raises:
        InvalidArgument: not a PostgreSQL URL, or a bad prefix.
        PermissionDenied: the admin role may not create roles or take over the tables.
        Unavailable: the database cannot be reached.
    """
    if not admin_url.startswith(("postgresql://", "postgresql+psycopg://")):
        raise InvalidArgument(
            "database roles exist on PostgreSQL only; the embedded SQLite file has a single writer "
            "identity (see the README)"
        )
    metadata = load_models()
    check_declarations(metadata)
    engine = make_engine(admin_url)
    try:
        with engine.begin() as conn:
            _ensure_roles(conn, roles)
            _take_ownership(conn, roles, metadata)
        upgrade(admin_url, role=roles.owner)
        with engine.begin() as conn:
            _grant(conn, roles, metadata)
    except OperationalError as e:
        raise Unavailable(f"cannot reach the database: {_reason(e)}") from e
    except DBAPIError as e:
        if getattr(e.orig, "sqlstate", "") == "42501":
            raise PermissionDenied(f"{_reason(e)}: run it as a superuser") from e
        raise
    finally:
        engine.dispose()
    return {service: role_url(admin_url, role) for service, role in roles.services.items()}


def _reason(e: DBAPIError) -> str:
    diag = getattr(e.orig, "diag", None)
    primary = getattr(diag, "message_primary", None)
    return str(primary or type(e.orig).__name__)


def _ensure_roles(conn: Connection, roles: Roles) -> None:
    for role in (roles.owner, *roles.services.values()):
        # one statement that tolerates a concurrent run creating the same role
        conn.execute(
            text(
                f"DO $$ BEGIN CREATE ROLE {role}; "
                "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
            )
        )
        # whatever someone made of it since, a custos role is a plain login role
        conn.execute(
            text(f"ALTER ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS")
        )
    if conn.execute(text("SELECT current_setting('server_version_num')::int")).scalar_one() < 150000:
        # before PostgreSQL 15 every role may create tables in ``public``; since, only its owner
        conn.execute(text("REVOKE CREATE ON SCHEMA public FROM PUBLIC"))
    database = conn.execute(text("SELECT current_database()")).scalar_one()
    default = conn.execute(text("SELECT current_schema()")).scalar_one()
    conn.execute(text(f'GRANT CONNECT, CREATE ON DATABASE "{database}" TO {roles.owner}'))
    # the migrations' version table lives in the default schema
    conn.execute(text(f'GRANT USAGE, CREATE ON SCHEMA "{default}" TO {roles.owner}'))
    conn.execute(text(f'GRANT CONNECT ON DATABASE "{database}" TO {", ".join(roles.services.values())}'))


def _take_ownership(conn: Connection, roles: Roles, metadata: MetaData) -> None:
    """Hands the service schemas, custos's tables (wherever today's migrations left them, with
    their sequences), their trigger functions and the version table to the owner, so that the
    migrations it runs may move and change them."""
    for service in SERVICE_NAMES:
        conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {service} AUTHORIZATION {roles.owner}"))
        conn.execute(text(f"ALTER SCHEMA {service} OWNER TO {roles.owner}"))
    names = [t.fullname for t in metadata.tables.values()]
    names += [t.name for t in metadata.tables.values()]  # not yet moved into their schema
    names.append("alembic_version")
    found = "SELECT to_regclass(n) AS t FROM unnest(CAST(:names AS text[])) AS n"
    params = {"names": names}
    for (table,) in conn.execute(
        text(f"SELECT DISTINCT CAST(t AS text) FROM ({found}) f WHERE t IS NOT NULL"), params
    ):
        conn.execute(text(f"ALTER TABLE {table} OWNER TO {roles.owner}"))
    for (function,) in conn.execute(
        text(
            "SELECT DISTINCT CAST(CAST(tgfoid AS regprocedure) AS text) FROM pg_trigger "
            f"WHERE tgrelid IN (SELECT t FROM ({found}) f) AND NOT tgisinternal"
        ),
        params,
    ):
        conn.execute(text(f"ALTER FUNCTION {function} OWNER TO {roles.owner}"))


def _grant(conn: Connection, roles: Roles, metadata: MetaData) -> None:
    everyone = ", ".join(roles.services.values())
    for table in metadata.tables.values():
        conn.execute(text(f"REVOKE ALL ON TABLE {table.fullname} FROM {everyone}"))
    for service in SERVICE_NAMES:
        conn.execute(text(f"REVOKE ALL ON SCHEMA {service} FROM {everyone}"))
        conn.execute(text(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {service} FROM {everyone}"))
        for kind in ("TABLES", "SEQUENCES"):
            conn.execute(
                text(
                    f"ALTER DEFAULT PRIVILEGES FOR ROLE {roles.owner} IN SCHEMA {service} "
                    f"REVOKE ALL ON {kind} FROM {everyone}"
                )
            )
    for service, role in roles.services.items():
        granted = privileges(metadata, service)
        for schema in sorted({name.split(".")[0] for name in granted} | {service}):
            conn.execute(text(f"GRANT USAGE ON SCHEMA {schema} TO {role}"))
        for name, privs in sorted(granted.items()):
            conn.execute(text(f"GRANT {', '.join(sorted(privs))} ON TABLE {name} TO {role}"))
        conn.execute(text(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {service} TO {role}"))
        # tables a later migration adds (as the owner) are usable at once by their service and
        # by whoever may read that whole service; re-running this command applies CEILING to them
        _default(conn, roles, service, f"{', '.join(sorted(OWN))} ON TABLES", role)
        _default(conn, roles, service, "USAGE, SELECT ON SEQUENCES", role)
        for reach in FOREIGN:
            if reach.table is None and reach.grantee in (service, EVERY_SERVICE):
                _default(conn, roles, reach.owner, f"{', '.join(sorted(reach.privileges))} ON TABLES", role)


def _default(conn: Connection, roles: Roles, schema: str, what: str, role: str) -> None:
    conn.execute(
        text(f"ALTER DEFAULT PRIVILEGES FOR ROLE {roles.owner} IN SCHEMA {schema} GRANT {what} TO {role}")
    )
