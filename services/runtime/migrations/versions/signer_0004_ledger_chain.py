"""signer: the signing records form a hash chain (the signer's ledger)

Each record gets its place (``ledger_seq``), the hash of the record before it and
its own hash over every field (``services.signer.ledger.record_hash``), so that a
record whoever can write the database removes or rewrites is noticed: the signer
replays the chain at start-up and checks it against the head it anchored on its
HSM token. Records made before this migration are chained here, in the order they
were made; the signer anchors the head at its first start.

Revision ID: signer_0004
Revises: signer_schema
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.runtime.migrate import schema
from services.signer.ledger import GENESIS, record_hash
from services.signer.models import SigningRecord

revision: str = "signer_0004"
down_revision: str | None = "signer_schema"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "signer_signing_records"
_OLD_COLUMNS = tuple(
    c.key for c in SigningRecord.__table__.columns if c.key not in ("ledger_seq", "prev_hash", "record_hash")
)


def upgrade() -> None:
    where = schema("signer")
    with op.batch_alter_table(_TABLE, schema=where) as batch:
        batch.add_column(sa.Column("ledger_seq", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("prev_hash", sa.LargeBinary(32), nullable=True))
        batch.add_column(sa.Column("record_hash", sa.LargeBinary(32), nullable=True))
    # typed as the model types them (times back as aware datetimes, flags as bools): the hash is
    # over the values as the signer will read them
    model = SigningRecord.__table__.columns
    table = sa.Table(
        _TABLE,
        sa.MetaData(),
        *(sa.Column(c, model[c].type) for c in (*_OLD_COLUMNS, "ledger_seq", "prev_hash", "record_hash")),
        schema=where,
    )
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(*(table.c[c] for c in _OLD_COLUMNS)).order_by(table.c.created_at, table.c.record_id)
    ).all()
    prev = GENESIS
    for seq, row in enumerate(rows, start=1):
        record = SigningRecord(**row._mapping, ledger_seq=seq, prev_hash=prev)
        digest = record_hash(record)
        bind.execute(
            table.update()
            .where(table.c.record_id == row.record_id)
            .values(ledger_seq=seq, prev_hash=prev, record_hash=digest)
        )
        prev = digest
    with op.batch_alter_table(_TABLE, schema=where) as batch:
        batch.alter_column("ledger_seq", existing_type=sa.BigInteger(), nullable=False)
        batch.alter_column("prev_hash", existing_type=sa.LargeBinary(32), nullable=False)
        batch.alter_column("record_hash", existing_type=sa.LargeBinary(32), nullable=False)
        batch.create_unique_constraint("uq_signer_signing_records_ledger_seq", ["ledger_seq"])


def downgrade() -> None:
    with op.batch_alter_table(_TABLE, schema=schema("signer")) as batch:
        batch.drop_constraint("uq_signer_signing_records_ledger_seq", type_="unique")
        batch.drop_column("record_hash")
        batch.drop_column("prev_hash")
        batch.drop_column("ledger_seq")
