"""signer: keys and signing records

Revision ID: signer_0001
Revises:
Create Date: 2025-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.runtime.db import UTCDateTime

revision: str = "signer_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ("signer",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "signer_keys",
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("label", sa.String(128), nullable=False),
        sa.Column("hsm_id", sa.LargeBinary(32), nullable=False),
        sa.Column("vault_id", sa.String(128), nullable=False),
        sa.Column("algorithm", sa.String(16), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("public_key", sa.LargeBinary(65), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key_id", name="pk_signer_keys"),
        sa.UniqueConstraint("label", name="uq_signer_keys_label"),
        sa.UniqueConstraint("hsm_id", name="uq_signer_keys_hsm_id"),
        sa.UniqueConstraint(
            "vault_id", "purpose", "algorithm", name="uq_signer_keys_vault_id_purpose_algorithm"
        ),
    )
    op.create_table(
        "signer_signing_records",
        sa.Column("record_id", sa.String(64), nullable=False),
        sa.Column("intent_id", sa.String(128), nullable=False),
        sa.Column("step", sa.String(64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("chain", sa.String(64), nullable=False),
        sa.Column("nonce", sa.BigInteger(), nullable=False),
        sa.Column("intent_digest", sa.LargeBinary(32), nullable=False),
        sa.Column("payload_digest", sa.LargeBinary(32), nullable=False),
        sa.Column("signing_digest", sa.LargeBinary(32), nullable=False),
        sa.Column("signature", sa.LargeBinary(128), nullable=False),
        sa.Column("signed_tx", sa.LargeBinary(), nullable=False),
        sa.Column("tx_hash", sa.String(130), nullable=False),
        sa.Column("replacement", sa.Boolean(), nullable=False),
        sa.Column("replaces_id", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("attempt >= 0", name="ck_signer_signing_records_attempt_non_negative"),
        sa.CheckConstraint(
            "(attempt = 0) = (replaces_id IS NULL)",
            name="ck_signer_signing_records_replacement_names_original",
        ),
        sa.ForeignKeyConstraint(
            ["key_id"], ["signer_keys.key_id"], name="fk_signer_signing_records_key_id_signer_keys"
        ),
        sa.ForeignKeyConstraint(
            ["replaces_id"],
            ["signer_signing_records.record_id"],
            name="fk_signer_signing_records_replaces_id_signer_signing_records",
        ),
        sa.PrimaryKeyConstraint("record_id", name="pk_signer_signing_records"),
        sa.UniqueConstraint(
            "intent_id", "step", "attempt", name="uq_signer_signing_records_intent_id_step_attempt"
        ),
        sa.UniqueConstraint(
            "key_id",
            "chain",
            "nonce",
            "attempt",
            name="uq_signer_signing_records_key_id_chain_nonce_attempt",
        ),
    )


def downgrade() -> None:
    op.drop_table("signer_signing_records")
    op.drop_table("signer_keys")
