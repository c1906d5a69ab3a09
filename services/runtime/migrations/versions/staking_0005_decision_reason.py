"""staking: the reason an approver gave with a rejection

Revision ID: staking_0005
Revises: staking_0004
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.runtime.migrate import schema

revision: str = "staking_0005"
down_revision: str | None = "staking_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("staking_approvals", schema=schema("staking")) as batch:
        batch.add_column(sa.Column("reason", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("staking_approvals", schema=schema("staking")) as batch:
        batch.drop_column("reason")
