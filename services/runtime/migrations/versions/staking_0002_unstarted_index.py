"""staking: index for the reconciler's look for unstarted workflows

Revision ID: staking_0002
Revises: staking_0001
Create Date: 2026-11-21
"""

from collections.abc import Sequence

from alembic import op

revision: str = "staking_0002"
down_revision: str | None = "staking_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_staking_intents_unstarted", "staking_intents", ["workflow_started", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_staking_intents_unstarted", table_name="staking_intents")
