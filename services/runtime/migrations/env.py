"""Alembic environment: runs migrations online against the configured URL."""

from __future__ import annotations

from alembic import context

from services.runtime.db import make_engine
from services.runtime.migrate import load_models

target_metadata = load_models()


def run() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run()
