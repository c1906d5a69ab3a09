"""staking: intents read model, transitions, approvals

Revision ID: staking_0001
Revises:
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.runtime.db import UTCDateTime

revision: str = "staking_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ("staking",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "staking_intents",
        sa.Column("intent_id", sa.String(64), nullable=False),
        sa.Column("initiator", sa.String(128), nullable=False),
        sa.Column("idempotency_key", sa.String(128), nullable=False),
        sa.Column("request_digest", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("chain", sa.String(64), nullable=False),
        sa.Column("vault_id", sa.String(128), nullable=False),
        sa.Column("amount", sa.String(80), nullable=False),
        sa.Column("spec_json", sa.Text(), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("policy_version", sa.String(64), nullable=False),
        sa.Column("requirement_json", sa.Text(), nullable=False),
        sa.Column("approval_deadline", UTCDateTime(), nullable=True),
        sa.Column("tx_hash", sa.String(80), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("workflow_started", sa.Integer(), nullable=False),
        sa.Column("last_sequence", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("intent_id", name=op.f("pk_staking_intents")),
        sa.UniqueConstraint(
            "initiator", "idempotency_key", name=op.f("uq_staking_intents_initiator_idempotency_key")
        ),
    )
    for col in ("initiator", "action", "chain", "vault_id", "state", "created_at"):
        op.create_index(op.f(f"ix_staking_intents_{col}"), "staking_intents", [col])
    op.create_table(
        "staking_intent_events",
        sa.Column("intent_id", sa.String(64), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("time", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["intent_id"],
            ["staking_intents.intent_id"],
            name=op.f("fk_staking_intent_events_intent_id_staking_intents"),
        ),
        sa.PrimaryKeyConstraint("intent_id", "sequence", name=op.f("pk_staking_intent_events")),
    )
    op.create_table(
        "staking_approvals",
        sa.Column("intent_id", sa.String(64), nullable=False),
        sa.Column("approver_id", sa.String(128), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["intent_id"],
            ["staking_intents.intent_id"],
            name=op.f("fk_staking_approvals_intent_id_staking_intents"),
        ),
        sa.PrimaryKeyConstraint("intent_id", "approver_id", name=op.f("pk_staking_approvals")),
    )


def downgrade() -> None:
    op.drop_table("staking_approvals")
    op.drop_table("staking_intent_events")
    for col in ("initiator", "action", "chain", "vault_id", "state", "created_at"):
        op.drop_index(op.f(f"ix_staking_intents_{col}"), table_name="staking_intents")
    op.drop_table("staking_intents")
