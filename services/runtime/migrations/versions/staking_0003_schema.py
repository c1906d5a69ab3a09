"""staking: its tables move into the ``staking`` schema, which only the staking service's role writes

See ``policy_0004_schema``. SQLite has no schemas: nothing changes there.

Revision ID: staking_schema
Revises: staking_0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from services.runtime.migrate import move_into_schema, move_out_of_schema

revision: str = "staking_schema"
down_revision: str | None = "staking_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("staking_intents", "staking_intent_events", "staking_approvals")


def upgrade() -> None:
    move_into_schema("staking", TABLES)


def downgrade() -> None:
    move_out_of_schema("staking", TABLES)
