"""Schema migrations (Alembic), driven from code so no alembic.ini is needed.

Each service keeps its own migration branch (``branch_labels = ("policy",)``
and so on, each starting from ``down_revision = None``) in
``services/runtime/migrations/versions``; ``upgrade`` applies every head.

On PostgreSQL a service's tables live in the schema of its name: a migration names
it with :func:`schema` (``op.create_table("policy_x", ..., schema=schema("policy"))``),
which is ``None`` on SQLite, where there are no schemas.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path

from alembic import command, op
from alembic.config import Config
from sqlalchemy import MetaData, text

from services.runtime.db import Base, make_engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

# Modules whose models make up the schema; imported so Base.metadata is complete.
MODEL_MODULES = (
    "services.policy.models",
    "services.signer.models",
    "services.chain.models",
    "services.staking.models",
    "services.audit.models",
)


def load_models() -> MetaData:
    """Imports every service's models and returns the full metadata."""
    for name in MODEL_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:  # a real import error inside an existing module
                raise
    return Base.metadata


def target_metadata(dialect: str) -> MetaData:
    """The models as ``dialect`` stores them: on SQLite, one namespace without schemas."""
    metadata = load_models()
    if dialect != "sqlite":
        return metadata
    flat = MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.sorted_tables:
        # None (documented, missing from the stub) takes the target's schema: none
        table.to_metadata(flat, schema=None)  # type: ignore[arg-type]
    return flat


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, *, role: str | None = None) -> None:
    """Brings the database at ``url`` to the newest schema; safe to run twice.

    With ``role`` (PostgreSQL) the migrations run as that role (``SET ROLE``), so what
    they create is that role's: ``db_roles.provision`` runs them as the owner role.
    """
    cfg = alembic_config(url)
    if role is None:
        command.upgrade(cfg, "heads")
        return
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text(f'SET ROLE "{role}"'))
            conn.commit()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "heads")
    finally:
        engine.dispose()


def downgrade_all(url: str) -> None:
    command.downgrade(alembic_config(url), "base")


# Helpers for the migration scripts (they run inside Alembic's ``op`` context).


def schema(service: str) -> str | None:
    """The schema argument of ``service``'s tables: its name on PostgreSQL, none on SQLite."""
    return None if op.get_bind().dialect.name == "sqlite" else service


def move_into_schema(service: str, tables: Sequence[str], functions: Sequence[str] = ()) -> None:
    """Creates ``service``'s schema and moves its tables there, with their indexes,
    constraints and sequences, and its trigger functions (``name()``); nothing on SQLite."""
    if op.get_bind().dialect.name == "sqlite":
        return
    op.execute(f"CREATE SCHEMA IF NOT EXISTS {service}")
    for table in tables:
        op.execute(f"ALTER TABLE {table} SET SCHEMA {service}")
    for function in functions:
        op.execute(f"ALTER FUNCTION {function} SET SCHEMA {service}")


def move_out_of_schema(service: str, tables: Sequence[str], functions: Sequence[str] = ()) -> None:
    """Undoes :func:`move_into_schema`: back into the connection's default schema."""
    if op.get_bind().dialect.name == "sqlite":
        return
    default = op.get_bind().execute(text("SELECT current_schema()")).scalar_one()
    for table in tables:
        op.execute(f"ALTER TABLE {service}.{table} SET SCHEMA {default}")
    for function in functions:
        op.execute(f"ALTER FUNCTION {service}.{function} SET SCHEMA {default}")
    op.execute(f"DROP SCHEMA IF EXISTS {service}")
