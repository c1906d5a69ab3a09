"""policy: versions, approver registry, evaluations, velocity ledger

Revision ID: policy_0001
Revises:
Create Date: 2025-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.runtime.db import UTCDateTime

revision: str = "policy_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ("policy",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "policy_versions",
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("canonical", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("parent_version", sa.String(64), nullable=True),
        sa.Column("proposed_by", sa.String(128), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("activated_at", UTCDateTime(), nullable=True),
        sa.Column("closed_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["parent_version"],
            ["policy_versions.version"],
            name="fk_policy_versions_parent_version_policy_versions",
        ),
        sa.PrimaryKeyConstraint("version", name="pk_policy_versions"),
    )
    op.create_index(
        "ux_policy_versions_one_active",
        "policy_versions",
        ["status"],
        unique=True,
        sqlite_where=sa.text("status = 'ACTIVE'"),
        postgresql_where=sa.text("status = 'ACTIVE'"),
    )
    op.create_table(
        "policy_approvers",
        sa.Column("approver_id", sa.String(128), nullable=False),
        sa.Column("display_name", sa.String(256), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("approver_id", name="pk_policy_approvers"),
    )
    op.create_table(
        "policy_approver_groups",
        sa.Column("approver_id", sa.String(128), nullable=False),
        sa.Column("group_name", sa.String(128), nullable=False),
        sa.ForeignKeyConstraint(
            ["approver_id"],
            ["policy_approvers.approver_id"],
            name="fk_policy_approver_groups_approver_id_policy_approvers",
        ),
        sa.PrimaryKeyConstraint("approver_id", "group_name", name="pk_policy_approver_groups"),
    )
    op.create_index(
        "ix_policy_approver_groups_group_name", "policy_approver_groups", ["group_name"], unique=False
    )
    op.create_table(
        "policy_approver_keys",
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("approver_id", sa.String(128), nullable=False),
        sa.Column("scheme", sa.String(16), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.Column("revoke_reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["approver_id"],
            ["policy_approvers.approver_id"],
            name="fk_policy_approver_keys_approver_id_policy_approvers",
        ),
        sa.PrimaryKeyConstraint("key_id", name="pk_policy_approver_keys"),
    )
    op.create_index(
        "ix_policy_approver_keys_approver_id", "policy_approver_keys", ["approver_id"], unique=False
    )
    op.create_table(
        "policy_evaluations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("intent_id", sa.String(128), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("initiator", sa.String(128), nullable=False),
        sa.Column("evaluated_at", UTCDateTime(), nullable=False),
        sa.Column("policy_version", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(8), nullable=False),
        sa.Column("rule_id", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_policy_evaluations"),
    )
    op.create_index("ix_policy_evaluations_intent_id", "policy_evaluations", ["intent_id"], unique=False)
    op.create_index(
        "ix_policy_evaluations_evaluated_at", "policy_evaluations", ["evaluated_at"], unique=False
    )
    op.create_table(
        "policy_velocity",
        sa.Column("intent_id", sa.String(128), nullable=False),
        sa.Column("vault_id", sa.String(128), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("amount", sa.String(78), nullable=False),
        sa.Column("reserved_at", UTCDateTime(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("released_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("intent_id", name="pk_policy_velocity"),
    )
    op.create_index(
        "ix_policy_velocity_vault_time", "policy_velocity", ["vault_id", "reserved_at"], unique=False
    )


def downgrade() -> None:
    op.drop_table("policy_velocity")
    op.drop_table("policy_evaluations")
    op.drop_table("policy_approver_keys")
    op.drop_table("policy_approver_groups")
    op.drop_table("policy_approvers")
    op.drop_table("policy_versions")
