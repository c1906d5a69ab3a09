"""signer: its tables move into the ``signer`` schema, which only the signer's role writes

See ``policy_0004_schema``. SQLite has no schemas: nothing changes there.

Revision ID: signer_schema
Revises: signer_0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from services.runtime.migrate import move_into_schema, move_out_of_schema

revision: str = "signer_schema"
down_revision: str | None = "signer_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("signer_keys", "signer_signing_records")


def upgrade() -> None:
    move_into_schema("signer", TABLES)


def downgrade() -> None:
    move_out_of_schema("signer", TABLES)
