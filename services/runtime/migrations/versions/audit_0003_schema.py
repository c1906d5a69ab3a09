"""audit: its tables move into the ``audit`` schema; others may only append to the trail

See ``policy_0004_schema``. The append-only trigger function moves with the tables
(it names none). SQLite has no schemas: nothing changes there.

Revision ID: audit_schema
Revises: audit_0002_checkpoint_chain
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from services.runtime.migrate import move_into_schema, move_out_of_schema

revision: str = "audit_schema"
down_revision: str | None = "audit_0002_checkpoint_chain"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("audit_records", "audit_head", "audit_checkpoints")
FUNCTIONS = ("audit_append_only()",)


def upgrade() -> None:
    move_into_schema("audit", TABLES, FUNCTIONS)


def downgrade() -> None:
    move_out_of_schema("audit", TABLES, FUNCTIONS)
