"""Database plumbing shared by every service: declarative base, engines, sessions.

SQLite (a file under the state folder) is the embedded default; PostgreSQL is
reached through a URL. Each service owns its own tables, named with its prefix and
placed in the schema of its name (``policy.policy_versions``): on PostgreSQL each
service's role writes only its own schema (``services.runtime.db_roles``). SQLite has
no schemas: its engines drop them (``schema_translate_map``), so the file keeps one
namespace, which the prefixes keep free of clashes. Migrated by Alembic from
``services/runtime/migrations``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, MetaData, Table, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from services.runtime.settings import SERVICE_NAMES

NAMING_CONVENTION = {
    # not %(column_0_label)s: that holds the schema, and the indexes were named before schemas
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def service_schema(module: str, table: str) -> str:
    """The schema of ``table`` declared in ``module``: the service whose package holds the model.

    Raises:
        TypeError: the model is outside a service package, or its name lacks the service's prefix.
    """
    parts = module.split(".")
    service = parts[1] if len(parts) > 2 and parts[0] == "services" else ""
    if service not in SERVICE_NAMES:
        raise TypeError(f"table {table} is declared in {module}, outside a service's package")
    if not table.startswith(f"{service}_"):
        raise TypeError(f"table {table} of the {service} service must be named {service}_...")
    return service


class Base(DeclarativeBase):
    """Declarative base of every custos model.

    A model's table goes into the schema of the service whose package declares it
    (:func:`service_schema`), so a new table is placed, and granted to its service
    (``db_roles``), without a word in the model.
    """

    metadata = MetaData(naming_convention=NAMING_CONVENTION)

    @classmethod
    def __table_cls__(cls, name: str, metadata: MetaData, *args: Any, **kw: Any) -> Table:
        schema = service_schema(cls.__module__, name)
        if kw.setdefault("schema", schema) != schema:
            raise TypeError(f"table {name} must live in the {schema} schema, not {kw['schema']}")
        # A foreign key written "policy_versions.version" names a table of the same service:
        # the metadata's default schema is what an unqualified target resolves in.
        default, metadata.schema = metadata.schema, schema
        try:
            return Table(name, metadata, *args, **kw)
        finally:
            metadata.schema = default


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Creates an engine with the settings custos relies on for ``url``.

    SQLite gets WAL, a busy timeout and ``BEGIN IMMEDIATE`` transactions, so that
    writers from several processes serialise instead of failing with
    "database is locked" halfway through a read-modify-write. Sessions opened with
    :func:`reading` begin a plain (deferred) read transaction instead.
    """
    if url.startswith("sqlite"):
        options = {"schema_translate_map": SQLITE_SCHEMAS, **kwargs.pop("execution_options", {})}
        engine = create_engine(url, connect_args={"timeout": 30}, execution_options=options, **kwargs)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # let SQLAlchemy's BEGIN below control transactions
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            # Readers (see :func:`reading`) take no write lock: under WAL they never block
            # writers, and writers never wait on them.
            read_only = conn.get_execution_options().get(_READ_ONLY, False)
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return create_engine(url, pool_pre_ping=True, **kwargs)


_READ_ONLY = "custos_read_only"
#: SQLite has one namespace per file: every service schema maps to it.
SQLITE_SCHEMAS: dict[str | None, str | None] = dict.fromkeys(SERVICE_NAMES)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work commits on success and rolls back on any error."""
    with factory() as session, session.begin():
        yield session


def read_only(engine: Engine) -> Engine:
    """``engine`` (sharing its pool) for reads that only decide whether to go on.

    On SQLite its transactions begin deferred: under WAL a reader sees one consistent
    snapshot, neither taking nor waiting for the write lock. Elsewhere it runs in
    autocommit: each statement reads its own snapshot under READ COMMITTED, without
    the two round trips of BEGIN and ROLLBACK.
    """
    if engine.dialect.name == "sqlite":
        return engine.execution_options(**{_READ_ONLY: True})
    return engine.execution_options(isolation_level="AUTOCOMMIT")


@contextmanager
def reading(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session for reads only (see :func:`read_only`): on SQLite it takes no write lock,
    so polling readers (watchers, listings) never queue behind writers or make them wait.
    Writing in it fails on SQLite only if another writer got in first; use
    :func:`transaction` to write."""
    with factory() as session:
        session.connection(execution_options={_READ_ONLY: True})
        yield session
