"""Persistence of keys and signing records.

"Sign exactly once" rests on the signer's ledger (``services.signer.ledger``), which
chains these records and checks them; the unique constraints of
``signer_signing_records`` stay as the database's own backstop.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, insert, select, tuple_
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
_INSERT = insert(cast(Table, SigningRecord.__table__))
_COLUMNS = tuple(c.key for c in SigningRecord.__table__.columns)


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
