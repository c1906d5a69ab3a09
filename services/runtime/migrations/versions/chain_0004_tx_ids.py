"""chain: transaction ids of any family (up to 128 characters, not only ``0x`` + 64 hex)

A Cosmos transaction hash is 64 upper-case hex digits, a Solana signature up to 88
base58 characters: the columns that hold transaction ids widen from 66 characters.

Revision ID: chain_0004
Revises: chain_schema
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.runtime.migrate import schema

revision: str = "chain_0004"
down_revision: str | None = "chain_schema"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    ("chain_nonce_reservations", "tx_hash", True),
    ("chain_broadcasts", "tx_hash", False),
    ("chain_reconcile_alerts", "seen_tx_hash", True),
)


def _alter(old: int, new: int) -> None:
    for table, column, nullable in COLUMNS:
        with op.batch_alter_table(table, schema=schema("chain")) as batch:
            batch.alter_column(
                column, type_=sa.String(new), existing_type=sa.String(old), existing_nullable=nullable
            )


def upgrade() -> None:
    _alter(66, 128)


def downgrade() -> None:
    _alter(128, 66)
