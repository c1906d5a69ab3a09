"""chain: its tables move into the ``chain`` schema, which only the chain service's role writes

See ``policy_0004_schema``. SQLite has no schemas: nothing changes there.

Revision ID: chain_schema
Revises: chain_0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from services.runtime.migrate import move_into_schema, move_out_of_schema

revision: str = "chain_schema"
down_revision: str | None = "chain_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = (
    "chain_nonce_cursors",
    "chain_nonce_reservations",
    "chain_broadcasts",
    "chain_reconcile_cursors",
    "chain_reconcile_alerts",
)


def upgrade() -> None:
    move_into_schema("chain", TABLES)


def downgrade() -> None:
    move_out_of_schema("chain", TABLES)
