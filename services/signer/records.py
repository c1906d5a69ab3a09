"""Listing the signing records: what custos signed, with which key, at which nonce.

The chain service reconciles these against each vault's on-chain history (a nonce
used on chain that no record explains is a signature made outside custos);
operators and compliance read them too. A listing shows what a record is (key,
chain, nonce, intent step, transaction hash, attempt, time), never the signature
or the signed bytes.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from services.runtime.convert import require_id
from services.runtime.db import reading
from services.runtime.errors import InvalidArgument
from services.signer import repository
from services.signer.errors import BadListRequest
from services.signer.models import SigningRecord

MAX_PAGE = 500
_MAX_NONCE = 2**63 - 1  # the column is a signed 64-bit integer


@dataclass(frozen=True)
class SigningRecordInfo:
    record_id: str
    intent_id: str
    step: str
    attempt: int
    replacement: bool
    replaces_id: str | None
    key_id: str
    vault_id: str
    chain: str
    nonce: int
    tx_hash: str
    created_at: datetime


@dataclass(frozen=True)
class RecordFilter:
    """Which records: one key's or one vault's (or all), on one chain (or all), from a nonce up."""

    key_id: str = ""
    vault_id: str = ""
    chain: str = ""
    min_nonce: int = 0

    def __post_init__(self) -> None:
        try:
            for value, field in ((self.key_id, "key_id"), (self.vault_id, "vault_id"), (self.chain, "chain")):
                if value:
                    require_id(value, field)
        except InvalidArgument as e:
            raise BadListRequest(e.message) from None
        if self.key_id and self.vault_id:
            raise BadListRequest("give key_id or vault_id, not both")
        if not 0 <= self.min_nonce <= _MAX_NONCE:
            raise BadListRequest(f"min_nonce must be between 0 and {_MAX_NONCE}")


def list_signing_records(
    sessions: sessionmaker[Session], which: RecordFilter, *, page_size: int = 100, page_token: str = ""
) -> tuple[list[SigningRecordInfo], str]:
    """A page of records ordered by (key, chain, nonce, attempt), and the next page's token ("" at the end).

    Blocking: call it off the event loop. It only reads, so on SQLite it never
    waits for the signing transactions' write lock.
    """
    limit = min(page_size or 100, MAX_PAGE)
    with reading(sessions) as s:
        rows = repository.list_records(
            s,
            key_id=which.key_id,
            vault_id=which.vault_id,
            chain=which.chain,
            min_nonce=which.min_nonce,
            after=_decode_token(page_token),
            limit=limit + 1,
        )
    more = len(rows) > limit
    page = [_info(record, vault) for record, vault in rows[:limit]]
    return page, _encode_token(page[-1]) if more else ""


def _info(r: SigningRecord, vault_id: str) -> SigningRecordInfo:
    return SigningRecordInfo(
        record_id=r.record_id,
        intent_id=r.intent_id,
        step=r.step,
        attempt=r.attempt,
        replacement=r.replacement,
        replaces_id=r.replaces_id,
        key_id=r.key_id,
        vault_id=vault_id,
        chain=r.chain,
        nonce=r.nonce,
        tx_hash=r.tx_hash,
        created_at=r.created_at,
    )


def _encode_token(last: SigningRecordInfo) -> str:
    position = [last.key_id, last.chain, last.nonce, last.attempt]
    return base64.urlsafe_b64encode(json.dumps(position, separators=(",", ":")).encode()).decode()


def _decode_token(token: str) -> repository.RecordPosition | None:
    if not token:
        return None
    try:
        key_id, chain, nonce, attempt = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (ValueError, TypeError, UnicodeError, binascii.Error):
        raise BadListRequest("page_token is not one this signer issued") from None
    if not (
        isinstance(key_id, str)
        and isinstance(chain, str)
        and isinstance(nonce, int)
        and isinstance(attempt, int)
        and 0 <= nonce <= _MAX_NONCE
        and 0 <= attempt <= _MAX_NONCE
    ):
        raise BadListRequest("page_token is not one this signer issued")
    return key_id, chain, nonce, attempt
