"""Tables of the audit trail: the records, the single head row, the checkpoints.

``audit_records`` is append-only: the repository only ever inserts, and the
migration adds triggers that refuse UPDATE and DELETE (a database owner can
still disable them; the hash chain and the signed checkpoints are what catch
that). ``audit_head`` holds exactly one row: locking it serialises appenders
across processes so the chain never forks and never skips a number.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from services.runtime.db import Base, UTCDateTime

HEAD_ROW_ID = 1


class AuditRecordRow(Base):
    __tablename__ = "audit_records"
    __table_args__ = (
        Index("ix_audit_records_subject_sequence", "subject", "sequence"),
        Index("ix_audit_records_actor_sequence", "actor", "sequence"),
        Index("ix_audit_records_action_sequence", "action", "sequence"),
        Index("ix_audit_records_time", "time"),
    )

    sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    prev_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(256))
    action: Mapped[str] = mapped_column(String(128))
    subject: Mapped[str] = mapped_column(String(256))
    outcome: Mapped[str] = mapped_column(String(32))
    payload_digest: Mapped[bytes] = mapped_column(LargeBinary(32))
    payload_json: Mapped[str] = mapped_column(Text)


class AuditHeadRow(Base):
    __tablename__ = "audit_head"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    sequence: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class AuditCheckpointRow(Base):
    """A signed checkpoint. ``version`` 2 names the checkpoint before it (``prev_*``);
    rows of version 1 come from before checkpoints were chained and name none."""

    __tablename__ = "audit_checkpoints"

    sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    head_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    time: Mapped[datetime] = mapped_column(UTCDateTime())
    key_id: Mapped[str] = mapped_column(String(128))
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    signature: Mapped[bytes] = mapped_column(LargeBinary(64))
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    prev_sequence: Mapped[int | None] = mapped_column(BigInteger)
    prev_digest: Mapped[bytes | None] = mapped_column(LargeBinary(32))
