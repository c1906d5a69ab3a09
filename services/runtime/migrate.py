"""Schema migrations (Alembic), driven from code so no alembic.ini is needed.

Each service keeps its own migration branch (``branch_labels = ("policy",)``
and so on, each starting from ``down_revision = None``) in
``services/runtime/migrations/versions``; ``upgrade`` applies every head.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData

from services.runtime.db import Base

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


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str) -> None:
    """Brings the database at ``url`` to the newest schema; safe to run twice."""
    command.upgrade(alembic_config(url), "heads")


def downgrade_all(url: str) -> None:
    command.downgrade(alembic_config(url), "base")
