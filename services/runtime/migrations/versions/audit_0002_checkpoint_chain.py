"""audit: checkpoints name the checkpoint before them

Revision ID: audit_0002_checkpoint_chain
Revises: audit_0001
Create Date: 2026-11-30

Rows already there keep version 1 (no predecessor): verification passes over them and
the service signs the first chained checkpoint after checking the trail against them
once more (see ``AuditService.checkpoint``). Plain ``ADD COLUMN`` / ``DROP COLUMN``
on both databases: a batch rebuild of the table on SQLite would drop its append-only
triggers.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "audit_0002_checkpoint_chain"
down_revision: str | None = "audit_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("audit_checkpoints", sa.Column("version", sa.Integer(), server_default="1", nullable=False))
    op.add_column("audit_checkpoints", sa.Column("prev_sequence", sa.BigInteger(), nullable=True))
    op.add_column("audit_checkpoints", sa.Column("prev_digest", sa.LargeBinary(32), nullable=True))


def downgrade() -> None:
    for column in ("prev_digest", "prev_sequence", "version"):
        op.drop_column("audit_checkpoints", column)
