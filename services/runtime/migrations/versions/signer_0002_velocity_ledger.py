"""signer: each signing record names its intent's vault, action and amount (the signer's velocity ledger)

The signer enforces the policy's velocity limits itself, from records only it
writes, instead of trusting the policy service's ledger (a row any writer of the
database could reset). Records made before this migration count as zero.

Revision ID: signer_0002
Revises: signer_0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "signer_0002"
down_revision: str | None = "signer_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "signer_signing_records"


def upgrade() -> None:
    with op.batch_alter_table(_TABLE) as batch:
        batch.add_column(sa.Column("vault_id", sa.String(128), nullable=False, server_default=""))
        batch.add_column(sa.Column("action", sa.String(16), nullable=False, server_default=""))
        batch.add_column(sa.Column("amount", sa.String(78), nullable=False, server_default="0"))
    op.create_index("ix_signer_signing_records_vault_time", _TABLE, ["vault_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_signer_signing_records_vault_time", table_name=_TABLE)
    with op.batch_alter_table(_TABLE) as batch:
        batch.drop_column("amount")
        batch.drop_column("action")
        batch.drop_column("vault_id")
