"""policy: each velocity reservation names its intent's chain (velocity per vault and chain)

Velocity limits count a vault's amounts on one chain: base units of two chains (wei and
uatom) are never added. Existing reservations take the chain of their intent's latest
recorded evaluation (its spec names it; every intent the workflow reserves for was
evaluated first). One whose chain cannot be recovered keeps "" and counts on every chain
of its vault, as it did before (``repository.velocity_used``), until it leaves its window.

Revision ID: policy_0005
Revises: policy_schema
Create Date: 2026-12-10
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.runtime.migrate import schema

revision: str = "policy_0005"
down_revision: str | None = "policy_schema"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "policy_velocity"


def _chain_of(spec: str) -> str:
    try:
        chain = json.loads(spec).get("chain")
    except (ValueError, AttributeError):
        return ""
    return chain if isinstance(chain, str) and len(chain) <= 64 else ""


def upgrade() -> None:
    where = schema("policy")
    with op.batch_alter_table(_TABLE, schema=where) as batch:
        batch.add_column(sa.Column("chain", sa.String(64), nullable=False, server_default=""))
    velocity = sa.table(_TABLE, sa.column("intent_id"), sa.column("chain"), schema=where)
    evaluations = sa.table(
        "policy_evaluations",
        sa.column("id"),
        sa.column("intent_id"),
        sa.column("spec"),
        sa.column("evaluated_at"),
        schema=where,
    )
    bind = op.get_bind()
    # the latest evaluation of each reserved intent wins: rows come oldest first
    rows = bind.execute(
        sa.select(evaluations.c.intent_id, evaluations.c.spec)
        .where(evaluations.c.intent_id.in_(sa.select(velocity.c.intent_id)))
        .order_by(evaluations.c.evaluated_at, evaluations.c.id)
    )
    chains = {intent_id: _chain_of(spec) for intent_id, spec in rows}
    for intent_id, chain in chains.items():
        if chain:
            bind.execute(velocity.update().where(velocity.c.intent_id == intent_id).values(chain=chain))


def downgrade() -> None:
    with op.batch_alter_table(_TABLE, schema=schema("policy")) as batch:
        batch.drop_column("chain")
