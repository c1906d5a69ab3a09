"""chain: reconciliation cursors and alerts.

Revision ID: chain_0002
Revises: chain_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.runtime.db import UTCDateTime

revision = "chain_0002"
down_revision = "chain_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "chain_reconcile_cursors",
        sa.Column("chain", sa.String(64), nullable=False),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("settled_below", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("chain", "address", name="pk_chain_reconcile_cursors"),
    )
    op.create_table(
        "chain_reconcile_alerts",
        sa.Column("alert_id", sa.String(64), nullable=False),
        sa.Column("chain", sa.String(64), nullable=False),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("nonce", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("vault_id", sa.String(128), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("seen_tx_hash", sa.String(66), nullable=True),
        sa.Column("seen_block", sa.BigInteger(), nullable=True),
        sa.Column("seen_to", sa.String(64), nullable=True),
        sa.Column("seen_value", sa.String(80), nullable=True),
        sa.Column("signed_tx_hashes", sa.JSON(), nullable=False),
        sa.Column("raised_at", UTCDateTime(), nullable=False),
        sa.Column("acknowledged_at", UTCDateTime(), nullable=True),
        sa.Column("acknowledged_by", sa.String(256), nullable=True),
        sa.Column("acknowledge_reason", sa.String(512), nullable=True),
        sa.PrimaryKeyConstraint("alert_id", name="pk_chain_reconcile_alerts"),
        sa.UniqueConstraint(
            "chain", "address", "nonce", name="uq_chain_reconcile_alerts_chain_address_nonce"
        ),
    )


def downgrade() -> None:
    op.drop_table("chain_reconcile_alerts")
    op.drop_table("chain_reconcile_cursors")
