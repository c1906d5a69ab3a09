"""Alembic environment: runs migrations online against the configured URL.

``migrate.upgrade(url, role=...)`` hands in its own connection (already switched
to the owner role) through ``config.attributes["connection"]``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from services.runtime.db import make_engine
from services.runtime.migrate import target_metadata


def migrate(connection: Connection) -> None:
    dialect = connection.dialect.name
    context.configure(
        connection=connection,
        target_metadata=target_metadata(dialect),
        render_as_batch=dialect == "sqlite",
        # PostgreSQL: each service's tables are in its own schema
        include_schemas=dialect == "postgresql",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    given = context.config.attributes.get("connection")
    if given is not None:
        migrate(given)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = make_engine(url)
    with engine.connect() as connection:
        migrate(connection)
    engine.dispose()


run()
