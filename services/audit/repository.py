"""Persistence of the trail: appends under the head lock, range reads, checkpoints.

Every append locks the single ``audit_head`` row (``SELECT ... FOR UPDATE`` on
PostgreSQL; on SQLite the engine's ``BEGIN IMMEDIATE`` already holds the write
lock), reads the previous hash from it, inserts the record and moves the head,
all in the caller's transaction. A rollback takes the record and the head move
back together, so no number is ever skipped or used twice.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Select, Table, bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from services.audit.chain import CHAINED, Checkpoint
from services.audit.errors import AuditUnavailable
from services.audit.models import HEAD_ROW_ID, AuditCheckpointRow, AuditHeadRow, AuditRecordRow
from services.audit.records import GENESIS_HASH, AuditRecord, encode_payload, new_record, validate_fields
from services.runtime.db import utcnow


@dataclass(frozen=True)
class Head:
    sequence: int
    hash: bytes


def _to_record(row: AuditRecordRow) -> AuditRecord:
    return AuditRecord(
        sequence=row.sequence,
        prev_hash=bytes(row.prev_hash),
        time=row.time,
        actor=row.actor,
        action=row.action,
        subject=row.subject,
        outcome=row.outcome,
        payload_digest=bytes(row.payload_digest),
        payload_json=row.payload_json,
        hash=bytes(row.hash),
    )


def _to_checkpoint(row: AuditCheckpointRow) -> Checkpoint:
    return Checkpoint(
        sequence=row.sequence,
        head_hash=bytes(row.head_hash),
        time=row.time,
        key_id=row.key_id,
        public_key=bytes(row.public_key),
        signature=bytes(row.signature),
        prev_sequence=row.prev_sequence or 0,
        prev_digest=bytes(row.prev_digest) if row.prev_digest is not None else GENESIS_HASH,
        version=row.version,
    )


# The statements of every append, built once (with their cache keys): an append runs in
# every signed transaction, and building them per call cost more than executing them.
_HEAD = select(AuditHeadRow.sequence, AuditHeadRow.hash).where(AuditHeadRow.id == HEAD_ROW_ID)
_HEAD_LOCKED = _HEAD.with_for_update()
_INSERT_RECORD = insert(cast(Table, AuditRecordRow.__table__))
_MOVE_HEAD = (
    update(cast(Table, AuditHeadRow.__table__))
    .where(AuditHeadRow.__table__.c.id == HEAD_ROW_ID)
    .values(sequence=bindparam("new_sequence"), hash=bindparam("new_hash"))
)


def read_head(session: Session | Connection, *, lock: bool = False) -> Head:
    """The head; with ``lock``, held until the session's (or connection's) transaction ends."""
    row = session.execute(_HEAD_LOCKED if lock else _HEAD).one_or_none()
    if row is None:
        raise AuditUnavailable("the audit head row is missing: run the database migrations")
    return Head(sequence=row[0], hash=bytes(row[1]))


#: ``session.info`` key of the head as this session's current transaction last moved it.
_MOVED_HEAD = "custos.audit.moved_head"


def append(
    session: Session,
    actor: str,
    action: str,
    subject: str,
    outcome: str,
    payload: Mapping[str, Any] | None,
) -> AuditRecord:
    """Appends one record inside ``session``'s transaction; the caller commits.

    The head stays locked until that commit, so keep the rest of the caller's
    transaction short. Raises ``SecretInPayload``/``PayloadInvalid`` before
    touching the database.

    Several appends in one transaction (the signer's group commit) read the head
    once: the transaction holds its lock, so the head it moved last is the head.
    That memory is tied to the innermost transaction object (a savepoint is its
    own), so a commit, a rollback or a savepoint begun or rolled back since makes
    the next append read the head again.
    """
    validate_fields(actor, action, subject, outcome)
    payload_json = encode_payload(payload)
    conn = session.connection()  # begins the transaction; Core statements on it: no ORM work
    txn = session.get_nested_transaction() or session.get_transaction()
    moved = session.info.get(_MOVED_HEAD)
    head = moved[1] if moved is not None and moved[0] is txn else read_head(conn, lock=True)
    record = new_record(
        sequence=head.sequence + 1,
        prev_hash=head.hash,
        time=utcnow(),
        actor=actor,
        action=action,
        subject=subject,
        outcome=outcome,
        payload_json=payload_json,
    )
    conn.execute(
        _INSERT_RECORD,
        {
            "sequence": record.sequence,
            "prev_hash": record.prev_hash,
            "hash": record.hash,
            "time": record.time,
            "actor": record.actor,
            "action": record.action,
            "subject": record.subject,
            "outcome": record.outcome,
            "payload_digest": record.payload_digest,
            "payload_json": record.payload_json,
        },
    )
    conn.execute(_MOVE_HEAD, {"new_sequence": record.sequence, "new_hash": record.hash})
    session.info[_MOVED_HEAD] = (txn, Head(record.sequence, record.hash))
    return record


def records_between(
    session: Session, first: int, last: int, *, limit: int | None = None
) -> list[AuditRecord]:
    """Records with ``first <= sequence <= last`` in order (at most ``limit``)."""
    stmt = (
        select(AuditRecordRow)
        .where(AuditRecordRow.sequence >= first, AuditRecordRow.sequence <= last)
        .order_by(AuditRecordRow.sequence)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    return [_to_record(r) for r in session.scalars(stmt)]


def iter_records(session: Session, first: int, last: int, *, batch: int = 1000) -> Iterator[AuditRecord]:
    """Records ``first..last`` in order, read in keyset batches within one session."""
    after = first - 1
    while after < last:
        rows = records_between(session, after + 1, last, limit=batch)
        if not rows:
            return
        yield from rows
        after = rows[-1].sequence


def query(
    session: Session,
    *,
    subject: str = "",
    actor: str = "",
    action: str = "",
    start: datetime | None = None,
    end: datetime | None = None,
    after_sequence: int = 0,
    limit: int = 100,
) -> list[AuditRecord]:
    """Records matching every given filter, in sequence order, after ``after_sequence``."""
    stmt: Select[Any] = select(AuditRecordRow).where(AuditRecordRow.sequence > after_sequence)
    if subject:
        stmt = stmt.where(AuditRecordRow.subject == subject)
    if actor:
        stmt = stmt.where(AuditRecordRow.actor == actor)
    if action:
        stmt = stmt.where(AuditRecordRow.action == action)
    if start is not None:
        stmt = stmt.where(AuditRecordRow.time >= start)
    if end is not None:
        stmt = stmt.where(AuditRecordRow.time < end)
    stmt = stmt.order_by(AuditRecordRow.sequence).limit(limit)
    return [_to_record(r) for r in session.scalars(stmt)]


def checkpoints_between(
    session: Session, first: int, last: int | None = None, *, limit: int | None = None, version: int = CHAINED
) -> list[Checkpoint]:
    """Checkpoints of ``version`` with ``first <= sequence <= last`` in order (at most ``limit``)."""
    stmt = select(AuditCheckpointRow).where(
        AuditCheckpointRow.sequence >= first, AuditCheckpointRow.version == version
    )
    if last is not None:
        stmt = stmt.where(AuditCheckpointRow.sequence <= last)
    stmt = stmt.order_by(AuditCheckpointRow.sequence)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [_to_checkpoint(r) for r in session.scalars(stmt)]


def iter_checkpoints(
    session: Session, first: int, last: int | None = None, *, batch: int = 1000
) -> Iterator[Checkpoint]:
    """Chained checkpoints ``first..last`` in order, read in keyset batches within one session."""
    after = first - 1
    while True:
        rows = checkpoints_between(session, after + 1, last, limit=batch)
        if not rows:
            return
        yield from rows
        after = rows[-1].sequence


def checkpoint_at(session: Session, sequence: int) -> Checkpoint | None:
    """The checkpoint at ``sequence``, of either format."""
    row = session.get(AuditCheckpointRow, sequence)
    return None if row is None else _to_checkpoint(row)


def latest_checkpoint(session: Session, *, below: int | None = None) -> Checkpoint | None:
    """The chained checkpoint with the highest sequence (strictly below ``below`` if given)."""
    stmt = select(AuditCheckpointRow).where(AuditCheckpointRow.version == CHAINED)
    if below is not None:
        stmt = stmt.where(AuditCheckpointRow.sequence < below)
    row = session.scalars(stmt.order_by(AuditCheckpointRow.sequence.desc()).limit(1)).first()
    return None if row is None else _to_checkpoint(row)


def add_checkpoint(session: Session, cp: Checkpoint) -> None:
    session.execute(
        insert(AuditCheckpointRow).values(
            sequence=cp.sequence,
            head_hash=cp.head_hash,
            time=cp.time,
            key_id=cp.key_id,
            public_key=cp.public_key,
            signature=cp.signature,
            version=cp.version,
            prev_sequence=cp.prev_sequence,
            prev_digest=cp.prev_digest,
        )
    )


def record_at(session: Session, sequence: int) -> AuditRecord | None:
    rows = records_between(session, sequence, sequence)
    return rows[0] if rows else None


def record_time(session: Session, sequence: int) -> datetime | None:
    return session.scalar(select(AuditRecordRow.time).where(AuditRecordRow.sequence == sequence))


def max_sequence(session: Session) -> int:
    """The highest stored sequence (0 if none); above the head means rows were slipped in."""
    return session.scalar(select(func.max(AuditRecordRow.sequence))) or 0
