"""policy: its tables move into the ``policy`` schema, which only the policy service's role writes

On PostgreSQL each service's tables live in the schema of its name, so that each
service's database role is granted its own tables and no others
(``custos db roles``). The registry-revision trigger function moves too, and now
names its table with the schema: a trigger runs with the search path of whoever
wrote the registry, which need not reach the ``policy`` schema. SQLite has no
schemas: nothing changes there.

Revision ID: policy_schema
Revises: policy_0003
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

from services.runtime.migrate import move_into_schema, move_out_of_schema

revision: str = "policy_schema"
down_revision: str | None = "policy_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = (
    "policy_versions",
    "policy_approvers",
    "policy_approver_groups",
    "policy_approver_keys",
    "policy_registry_revision",
    "policy_evaluations",
    "policy_velocity",
    "policy_governance_changes",
    "policy_governance_signatures",
    "policy_governance_log",
)
FUNCTIONS = ("policy_bump_registry_revision()", "policy_governance_append_only()")


def _bump(schema: str) -> str:
    """The trigger function of ``policy_0002`` in ``schema`` ("" for the default), naming its table there."""
    return (
        f"CREATE OR REPLACE FUNCTION {schema}policy_bump_registry_revision() RETURNS trigger "
        f"LANGUAGE plpgsql AS $$ BEGIN UPDATE {schema}policy_registry_revision "
        "SET revision = revision + 1 WHERE id = 1; RETURN NULL; END $$"
    )


def upgrade() -> None:
    move_into_schema("policy", TABLES, FUNCTIONS)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_bump("policy."))


def downgrade() -> None:
    move_out_of_schema("policy", TABLES, FUNCTIONS)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_bump(""))
