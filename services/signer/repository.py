"""Persistence of keys and signing records.

"Sign exactly once" rests on the unique constraints of ``signer_signing_records``:
whoever inserts first wins, every other writer gets an ``IntegrityError``, rolls
back and reads the winner (:func:`record_like`).

Reads that only decide whether to go on (the conflict check before the HSM is
asked, the policy and registry) go through :func:`services.runtime.db.read_only`: on SQLite
they then neither take nor wait for the write lock, which the committing thread
holds for each batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Connection, Table, and_, bindparam, insert, or_, select, tuple_
from sqlalchemy.orm import Session

from services.signer.models import SignerKey, SigningRecord


def add_key(session: Session, key: SignerKey) -> SignerKey:
    session.add(key)
    session.flush()
    return key


def get_key(session: Session, key_id: str) -> SignerKey | None:
    return session.get(SignerKey, key_id)


def key_by_label(session: Session, label: str) -> SignerKey | None:
    return session.scalars(select(SignerKey).where(SignerKey.label == label)).one_or_none()


def keys_for_vault(session: Session, vault_id: str, purpose: str | None = None) -> list[SignerKey]:
    query = select(SignerKey).where(SignerKey.vault_id == vault_id)
    if purpose is not None:
        query = query.where(SignerKey.purpose == purpose)
    return list(session.scalars(query.order_by(SignerKey.key_id)))


def list_keys(session: Session, *, vault_id: str = "", after: str = "", limit: int = 100) -> list[SignerKey]:
    """Keys ordered by key id, starting after ``after`` (keyset pagination)."""
    query = select(SignerKey)
    if vault_id:
        query = query.where(SignerKey.vault_id == vault_id)
    if after:
        query = query.where(SignerKey.key_id > after)
    return list(session.scalars(query.order_by(SignerKey.key_id).limit(limit)))


_R = SigningRecord
# Built once: the statements of every Sign, with their cache keys, are reused as they are.
_CONFLICTS = select(*SigningRecord.__table__.columns).where(
    or_(
        and_(_R.intent_id == bindparam("intent_id"), _R.step == bindparam("step")),
        and_(
            _R.key_id == bindparam("key_id"), _R.chain == bindparam("chain"), _R.nonce == bindparam("nonce")
        ),
    )
)
_LIKE = select(_R).where(
    or_(
        and_(
            _R.intent_id == bindparam("intent_id"),
            _R.step == bindparam("step"),
            _R.attempt == bindparam("attempt"),
        ),
        and_(
            _R.key_id == bindparam("key_id"),
            _R.chain == bindparam("chain"),
            _R.nonce == bindparam("nonce"),
            _R.attempt == bindparam("attempt"),
        ),
    )
)
_INSERT = insert(cast(Table, SigningRecord.__table__))
_COLUMNS = tuple(c.key for c in SigningRecord.__table__.columns)


def conflicts(
    conn: Connection, *, intent_id: str, step: str, key_id: str, chain: str, nonce: int
) -> tuple[SigningRecord | None, SigningRecord | None]:
    """The newest signature of the intent step, and the newest for (key, chain, nonce).

    One statement, so both answers come from the same snapshot (under READ COMMITTED
    two statements could each see a different set of committed records). A Core read
    (it runs before every signature and usually finds nothing); what it finds comes
    back as detached records.
    """
    found = conn.execute(
        _CONFLICTS,
        {"intent_id": intent_id, "step": step, "key_id": key_id, "chain": chain, "nonce": nonce},
    ).all()
    rows = [SigningRecord(**row._mapping) for row in found]
    for_step = [r for r in rows if r.intent_id == intent_id and r.step == step]
    for_nonce = [r for r in rows if r.key_id == key_id and r.chain == chain and r.nonce == nonce]
    return (
        max(for_step, key=lambda r: r.attempt, default=None),
        max(for_nonce, key=lambda r: r.attempt, default=None),
    )


def get_record(session: Session, record_id: str) -> SigningRecord | None:
    return session.get(SigningRecord, record_id)


def count_records(session: Session, intent_id: str, step: str) -> int:
    return len(
        session.scalars(
            select(SigningRecord.record_id).where(
                SigningRecord.intent_id == intent_id, SigningRecord.step == step
            )
        ).all()
    )


def insert_record(session: Session, record: SigningRecord) -> None:
    """Inserts ``record`` in ``session``'s transaction (a Core insert: safe to run again after a rollback).

    Raises ``IntegrityError`` when a record for the same (intent, step, attempt) or
    (key, chain, nonce, attempt) exists: the unique constraints decide every race.
    """
    session.execute(_INSERT, {c: getattr(record, c) for c in _COLUMNS})


def record_like(session: Session, record: SigningRecord) -> SigningRecord | None:
    """The stored record that took ``record``'s place.

    That is the one with the same (intent, step, attempt), else the same (key, chain,
    nonce, attempt).
    """
    rows = session.scalars(
        _LIKE,
        {
            "intent_id": record.intent_id,
            "step": record.step,
            "attempt": record.attempt,
            "key_id": record.key_id,
            "chain": record.chain,
            "nonce": record.nonce,
        },
    ).all()
    same_step = [r for r in rows if (r.intent_id, r.step) == (record.intent_id, record.step)]
    return (same_step or rows)[0] if rows else None


_VELOCITY = select(_R.intent_id, _R.action, _R.amount, _R.created_at).where(
    _R.vault_id == bindparam("vault_id"), _R.attempt == 0, _R.created_at > bindparam("since")
)


@dataclass(frozen=True)
class SignedAmount:
    """One intent's first signature for a vault: what the signer's velocity ledger counts."""

    intent_id: str
    action: str
    amount: int
    created_at: datetime


def signed_amounts(conn: Connection, *, vault_id: str, since: datetime) -> list[SignedAmount]:
    """What was signed for ``vault_id`` after ``since``: each intent once (its first signature)."""
    out: dict[str, SignedAmount] = {}
    for intent_id, action, amount, created_at in conn.execute(
        _VELOCITY, {"vault_id": vault_id, "since": since}
    ):
        if intent_id not in out:
            out[intent_id] = SignedAmount(intent_id, action, int(amount or 0), created_at)
    return list(out.values())


RecordPosition = tuple[str, str, int, int]
"""Where a listing of records stands: the last (key_id, chain, nonce, attempt) returned."""


def list_records(
    session: Session,
    *,
    key_id: str = "",
    vault_id: str = "",
    chain: str = "",
    min_nonce: int = 0,
    after: RecordPosition | None = None,
    limit: int = 100,
) -> list[tuple[SigningRecord, str]]:
    """Records with their key's vault id, ordered by (key, chain, nonce, attempt), after ``after``.

    That order is the unique constraint's, so its index serves the keyset pagination.
    """
    query = select(SigningRecord, SignerKey.vault_id).join(SignerKey, SignerKey.key_id == _R.key_id)
    if key_id:
        query = query.where(_R.key_id == key_id)
    if vault_id:
        query = query.where(SignerKey.vault_id == vault_id)
    if chain:
        query = query.where(_R.chain == chain)
    if min_nonce:
        query = query.where(_R.nonce >= min_nonce)
    if after is not None:
        query = query.where(tuple_(_R.key_id, _R.chain, _R.nonce, _R.attempt) > tuple_(*after))
    query = query.order_by(_R.key_id, _R.chain, _R.nonce, _R.attempt).limit(limit)
    return [(record, vault) for record, vault in session.execute(query).all()]
