"""policy: a registry revision the database bumps on every registry change; evaluation lookup index

The signer checks approvals against the approver registry on every Sign and must
never use a registry older than the moment it was asked. Reading three tables per
signature for that is most of its database work. Instead the database keeps one
counter, ``policy_registry_revision.revision``, that triggers raise in the same
transaction as any insert, update or delete of an approver, a group membership or
a key. A reader that sees the revision it last loaded knows the registry has not
changed since; it reads one row instead of the registry.

Triggers, not application code, so that no write path (a migration, an operator's
SQL, a future feature) can change the registry without moving the revision.

The index serves the signer's lookup of an intent's recorded evaluation (by
initiator and policy version, newest first), which otherwise scans every evaluation.

Revision ID: policy_0002
Revises: policy_0001
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "policy_0002"
down_revision: str | None = "policy_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REGISTRY_TABLES = ("policy_approvers", "policy_approver_groups", "policy_approver_keys")
BUMP = "UPDATE policy_registry_revision SET revision = revision + 1 WHERE id = 1"


def upgrade() -> None:
    op.create_table(
        "policy_registry_revision",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_policy_registry_revision"),
    )
    op.execute("INSERT INTO policy_registry_revision (id, revision) VALUES (1, 0)")
    op.create_index(
        "ix_policy_evaluations_lookup",
        "policy_evaluations",
        ["initiator", "policy_version", "evaluated_at"],
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION policy_bump_registry_revision() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN {BUMP}; RETURN NULL; END $$"
        )
        for table in REGISTRY_TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_revision AFTER INSERT OR UPDATE OR DELETE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION policy_bump_registry_revision()"
            )
    else:  # SQLite: one trigger per event, each row bumps (registry writes are rare)
        for table in REGISTRY_TABLES:
            for event in ("INSERT", "UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_revision_{event.lower()} AFTER {event} ON {table} "
                    f"BEGIN {BUMP}; END"
                )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in REGISTRY_TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_revision ON {table}")
        op.execute("DROP FUNCTION IF EXISTS policy_bump_registry_revision()")
    else:
        for table in REGISTRY_TABLES:
            for event in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_revision_{event}")
    op.drop_index("ix_policy_evaluations_lookup", table_name="policy_evaluations")
    op.drop_table("policy_registry_revision")
