"""staking: transaction ids of any family (up to 128 characters)

See ``chain_0004_tx_ids``.

Revision ID: staking_0004
Revises: staking_schema
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.runtime.migrate import schema

revision: str = "staking_0004"
down_revision: str | None = "staking_schema"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _alter(old: int, new: int) -> None:
    with op.batch_alter_table("staking_intents", schema=schema("staking")) as batch:
        batch.alter_column(
            "tx_hash", type_=sa.String(new), existing_type=sa.String(old), existing_nullable=False
        )


def upgrade() -> None:
    _alter(80, 128)


def downgrade() -> None:
    _alter(128, 80)
