"""Persistence of keys and signing records.

"Sign exactly once" rests on the unique constraints of ``signer_signing_records``:
whoever inserts first wins, every other writer gets an ``IntegrityError``, rolls
back and reads the winner (:func:`insert_record_or_fetch`).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from services.runtime.db import transaction
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


def latest_for_step(session: Session, intent_id: str, step: str) -> SigningRecord | None:
    """The newest signature (highest attempt) of an intent step."""
    return session.scalars(
        select(SigningRecord)
        .where(SigningRecord.intent_id == intent_id, SigningRecord.step == step)
        .order_by(SigningRecord.attempt.desc())
        .limit(1)
    ).first()


def latest_for_nonce(session: Session, key_id: str, chain: str, nonce: int) -> SigningRecord | None:
    """The newest signature made with ``key_id`` for ``nonce`` on ``chain``."""
    return session.scalars(
        select(SigningRecord)
        .where(SigningRecord.key_id == key_id, SigningRecord.chain == chain, SigningRecord.nonce == nonce)
        .order_by(SigningRecord.attempt.desc())
        .limit(1)
    ).first()


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


def insert_record_or_fetch(
    factory: sessionmaker[Session],
    record: SigningRecord,
    in_same_transaction: Callable[[Session, SigningRecord], None],
) -> tuple[SigningRecord, bool]:
    """Inserts ``record`` and runs ``in_same_transaction`` (the audit entry) before commit.

    Returns ``(record, True)`` when this call's record was committed, or
    ``(existing, False)`` when a record for the same (intent, step, attempt) or the
    same (key, chain, nonce, attempt) already existed: the caller decides whether
    that one is the same request or a conflict. Any error from
    ``in_same_transaction`` rolls the insert back and propagates.
    """
    try:
        with transaction(factory) as session:
            session.add(record)
            session.flush()
            in_same_transaction(session, record)
        return record, True
    except IntegrityError as e:
        conflict = e
    with factory() as session:
        existing = (
            session.scalars(
                select(SigningRecord).where(
                    SigningRecord.intent_id == record.intent_id,
                    SigningRecord.step == record.step,
                    SigningRecord.attempt == record.attempt,
                )
            ).first()
            or session.scalars(
                select(SigningRecord).where(
                    SigningRecord.key_id == record.key_id,
                    SigningRecord.chain == record.chain,
                    SigningRecord.nonce == record.nonce,
                    SigningRecord.attempt == record.attempt,
                )
            ).first()
        )
    if existing is None:  # the constraint that failed was not one we resolve here
        raise conflict
    return existing, False
