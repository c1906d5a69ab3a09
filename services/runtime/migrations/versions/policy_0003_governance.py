"""policy: governed changes, their admins' signatures, and the append-only governance log

The approver registry and the active policy now change only through governed
changes signed by the admin quorum pinned in each verifier's trust root. The log
is what the signer replays and verifies; UPDATE and DELETE of its entries are
refused by triggers, so no write path rewrites history by accident (a deliberate
rewrite still fails verification against the entry hashes and the signer's own
record of the head it verified).

Revision ID: policy_0003
Revises: policy_0002
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.runtime.db import UTCDateTime

revision: str = "policy_0003"
down_revision: str | None = "policy_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LOG = "policy_governance_log"
_MESSAGE = "the governance log is append-only"


def upgrade() -> None:
    op.create_table(
        "policy_governance_changes",
        sa.Column("change_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("request", sa.Text(), nullable=False),
        sa.Column("digest", sa.LargeBinary(32), nullable=False),
        sa.Column("proposer", sa.String(128), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("closed_at", UTCDateTime(), nullable=True),
        sa.Column("entry_seq", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("change_id", name="pk_policy_governance_changes"),
    )
    op.create_index(
        "ix_policy_governance_changes_state", "policy_governance_changes", ["state"], unique=False
    )
    op.create_table(
        "policy_governance_signatures",
        sa.Column("change_id", sa.String(128), nullable=False),
        sa.Column("admin_id", sa.String(128), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("decision", sa.String(8), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["change_id"],
            ["policy_governance_changes.change_id"],
            name="fk_policy_governance_signatures_change",
        ),
        sa.PrimaryKeyConstraint("change_id", "admin_id", name="pk_policy_governance_signatures"),
    )
    op.create_table(
        _LOG,
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("change_id", sa.String(128), nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.Column("entry", sa.Text(), nullable=False),
        sa.Column("applied_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_policy_governance_log"),
        sa.UniqueConstraint("change_id", name="uq_policy_governance_log_change_id"),
        sa.UniqueConstraint("hash", name="uq_policy_governance_log_hash"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION policy_governance_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{_MESSAGE}'; END $$"
        )
        op.execute(
            f"CREATE TRIGGER {_LOG}_append_only BEFORE UPDATE OR DELETE ON {_LOG} "
            "FOR EACH ROW EXECUTE FUNCTION policy_governance_append_only()"
        )
        op.execute(
            f"CREATE TRIGGER {_LOG}_no_truncate BEFORE TRUNCATE ON {_LOG} "
            "FOR EACH STATEMENT EXECUTE FUNCTION policy_governance_append_only()"
        )
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {_LOG}_no_{verb.lower()} BEFORE {verb} ON {_LOG} "
                f"BEGIN SELECT RAISE(ABORT, '{_MESSAGE}'); END"
            )


def downgrade() -> None:
    op.drop_table(_LOG)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS policy_governance_append_only()")
    op.drop_table("policy_governance_signatures")
    op.drop_index("ix_policy_governance_changes_state", table_name="policy_governance_changes")
    op.drop_table("policy_governance_changes")
