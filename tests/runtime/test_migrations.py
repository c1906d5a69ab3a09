"""Migrations apply on SQLite and PostgreSQL, are idempotent, and match the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from services.runtime.db import make_engine
from services.runtime.migrate import downgrade_all, target_metadata, upgrade


def test_migrations_apply_twice_and_match_the_models(db_url: str) -> None:
    upgrade(db_url)  # the fixture already applied them once: this must be a no-op
    engine = make_engine(db_url)
    try:
        dialect = engine.dialect.name
        models = target_metadata(dialect)
        with engine.connect() as conn:
            opts = {"compare_type": True, "include_schemas": dialect == "postgresql"}
            ctx = MigrationContext.configure(conn, opts=opts)
            diffs = compare_metadata(ctx, models)
        assert diffs == [], f"models and migrations differ: {diffs}"
        found = inspect(engine)
        for table in models.tables.values():
            assert found.has_table(table.name, schema=table.schema), table.fullname
    finally:
        engine.dispose()


def test_downgrade_removes_every_table(db_url: str) -> None:
    downgrade_all(db_url)
    engine = make_engine(db_url)
    try:
        left = set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()
    assert left == set()
