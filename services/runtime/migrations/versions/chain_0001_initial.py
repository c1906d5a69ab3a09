"""chain: nonce cursors, nonce reservations, broadcasts.

Revision ID: chain_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.runtime.db import UTCDateTime

revision = "chain_0001"
down_revision = None
branch_labels = ("chain",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "chain_nonce_cursors",
        sa.Column("chain", sa.String(64), nullable=False),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("next_nonce", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("chain", "address", name="pk_chain_nonce_cursors"),
    )
    op.create_table(
        "chain_nonce_reservations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("chain", sa.String(64), nullable=False),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("nonce", sa.BigInteger(), nullable=False),
        sa.Column("intent_id", sa.String(128), nullable=False),
        sa.Column("step", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("tx_hash", sa.String(66), nullable=True),
        sa.Column("reserved_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_chain_nonce_reservations"),
        sa.UniqueConstraint(
            "chain", "address", "nonce", name="uq_chain_nonce_reservations_chain_address_nonce"
        ),
        sa.UniqueConstraint(
            "chain", "intent_id", "step", name="uq_chain_nonce_reservations_chain_intent_id_step"
        ),
    )
    op.create_table(
        "chain_broadcasts",
        sa.Column("chain", sa.String(64), nullable=False),
        sa.Column("tx_hash", sa.String(66), nullable=False),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("nonce", sa.BigInteger(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("first_sent_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("chain", "tx_hash", name="pk_chain_broadcasts"),
        sa.UniqueConstraint("chain", "address", "nonce", name="uq_chain_broadcasts_chain_address_nonce"),
    )


def downgrade() -> None:
    op.drop_table("chain_broadcasts")
    op.drop_table("chain_nonce_reservations")
    op.drop_table("chain_nonce_cursors")
