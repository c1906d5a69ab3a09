"""The audit record, its hash chain and the payload scrubber (workflow-safe).

A record is hashed over the canonical JSON (``services.runtime.intent.canonical_json``)
of every field but its own hash, prev_hash included, under a domain tag: changing,
dropping, inserting or reordering a record breaks the chain at that point. Hashing
alone cannot stop someone with write access from re-hashing the whole tail: the
signed checkpoints of ``services.audit.chain`` pin it to a key that lives in the HSM.

This module imports only the standard library (and ``services.runtime``'s
stdlib-only modules) so workflows may build payloads with it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from services.audit.errors import PayloadInvalid, SecretInPayload
from services.runtime.intent import canonical_json

GENESIS_HASH = bytes(32)
RECORD_DOMAIN = "custos.audit.record.v1"
MAX_PAYLOAD_BYTES = 64 * 1024

_ACTION_RE = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,127}$")
_OUTCOME_RE = re.compile(r"^[a-z][a-z_]{0,31}$")
_MAX_TEXT = 256


class Outcome(StrEnum):
    """The usual outcomes; any lowercase word of up to 32 letters is accepted."""

    OK = "ok"
    REFUSED = "refused"
    FAILED = "failed"


@dataclass(frozen=True)
class AuditRecord:
    """One link of the chain. ``payload_json`` is the canonical JSON ``payload_digest`` covers."""

    sequence: int
    prev_hash: bytes
    time: datetime
    actor: str
    action: str
    subject: str
    outcome: str
    payload_digest: bytes
    payload_json: str
    hash: bytes

    def payload(self) -> dict[str, Any]:
        value = json.loads(self.payload_json)
        assert isinstance(value, dict)
        return value


# --- encoding -------------------------------------------------------------------------------


def record_hash(
    *,
    sequence: int,
    prev_hash: bytes,
    time: datetime,
    actor: str,
    action: str,
    subject: str,
    outcome: str,
    payload_digest: bytes,
) -> bytes:
    """SHA-256 over the canonical encoding of a record without its own hash."""
    body = canonical_json(
        {
            "domain": RECORD_DOMAIN,
            "sequence": sequence,
            "prev_hash": prev_hash,
            "time": time,
            "actor": actor,
            "action": action,
            "subject": subject,
            "outcome": outcome,
            "payload_digest": payload_digest,
        }
    )
    return hashlib.sha256(body).digest()


def hash_of(record: AuditRecord) -> bytes:
    """Recomputes ``record.hash`` from the record's other fields."""
    return record_hash(
        sequence=record.sequence,
        prev_hash=record.prev_hash,
        time=record.time,
        actor=record.actor,
        action=record.action,
        subject=record.subject,
        outcome=record.outcome,
        payload_digest=record.payload_digest,
    )


def payload_digest(payload_json: str) -> bytes:
    return hashlib.sha256(payload_json.encode()).digest()


def validate_fields(actor: str, action: str, subject: str, outcome: str) -> None:
    """Refuses record fields that would make the trail ambiguous or unreadable."""
    if not actor or len(actor) > _MAX_TEXT or not actor.isprintable():
        raise PayloadInvalid(f"actor must be 1-{_MAX_TEXT} printable characters")
    if not _ACTION_RE.match(action):
        raise PayloadInvalid("action must be lowercase words joined by . _ : - (e.g. 'intent.submitted')")
    if len(subject) > _MAX_TEXT or not subject.isprintable():
        raise PayloadInvalid(f"subject must be at most {_MAX_TEXT} printable characters")
    if not _OUTCOME_RE.match(outcome):
        raise PayloadInvalid("outcome must be one lowercase word such as 'ok', 'refused' or 'failed'")


def new_record(
    *,
    sequence: int,
    prev_hash: bytes,
    time: datetime,
    actor: str,
    action: str,
    subject: str,
    outcome: str,
    payload_json: str,
) -> AuditRecord:
    """Builds the next link; ``payload_json`` comes from :func:`encode_payload`."""
    if time.tzinfo is None:
        raise PayloadInvalid("record time must be timezone-aware")
    digest = payload_digest(payload_json)
    return AuditRecord(
        sequence=sequence,
        prev_hash=prev_hash,
        time=time,
        actor=actor,
        action=action,
        subject=subject,
        outcome=outcome,
        payload_digest=digest,
        payload_json=payload_json,
        hash=record_hash(
            sequence=sequence,
            prev_hash=prev_hash,
            time=time,
            actor=actor,
            action=action,
            subject=subject,
            outcome=outcome,
            payload_digest=digest,
        ),
    )


# --- the payload scrubber -------------------------------------------------------------------

_SECRET_WORDS = frozenset({"pin", "password", "passwd", "passphrase", "secret", "seed", "mnemonic"})
_SECRET_PHRASES = ("private_key", "privkey", "secret_key", "key_material", "api_key")
_SIGNATURE_WORDS = frozenset({"signature", "signatures", "sig", "sigs"})
# A reference such as ``signature_ref()`` gives (23 characters) passes; a whole signature
# (64 bytes = 128 hex characters and up) does not.
_MAX_SIGNATURE_TEXT = 32


def _normalise(key: str) -> str:
    """``privateKey``, ``Private-Key`` and ``private_key`` all become ``private_key``."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key).lower()
    return re.sub(r"[^a-z0-9]+", "_", snake).strip("_")


def _check_key(key: str, value: Any, path: str) -> None:
    norm = _normalise(key)
    words = set(norm.split("_"))
    if words & _SECRET_WORDS or any(p in norm for p in _SECRET_PHRASES):
        raise SecretInPayload(
            f"audit payload field {path!r} looks like a secret; secrets are never recorded",
            details={"field": path},
        )
    if words & _SIGNATURE_WORDS:
        for leaf in _leaves(value):
            if isinstance(leaf, str) and len(leaf) > _MAX_SIGNATURE_TEXT:
                raise SecretInPayload(
                    f"audit payload field {path!r} holds a full signature; record signature_ref() instead",
                    details={"field": path},
                )


def _leaves(value: Any) -> Iterable[Any]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


def _scrub(value: Any, path: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            child = f"{path}.{k}" if path else k
            _check_key(k, v, child)
            _scrub(v, child)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _scrub(v, f"{path}[{i}]")


def scrub_payload(payload: Mapping[str, Any] | None) -> dict[str, Any]:
    """Returns the payload as plain canonical JSON values; raises if it holds a secret.

    Refuses (never silently drops) keys named like a PIN, password, secret, seed
    or private key at any depth, and full signatures under a signature-named key.
    Dataclasses are expanded first, so a ``DepositData`` or an ``Approval`` passed
    whole is refused for its signature.
    """
    try:
        plain = json.loads(canonical_json(dict(payload or {})))
    except (TypeError, ValueError) as e:
        raise PayloadInvalid(f"audit payload cannot be encoded: {e}") from None
    _scrub(plain, "")
    assert isinstance(plain, dict)
    return plain


def encode_payload(payload: Mapping[str, Any] | None) -> str:
    """The canonical JSON text recorded for ``payload`` (scrubbed, size-limited)."""
    text = canonical_json(scrub_payload(payload)).decode()
    if len(text) > MAX_PAYLOAD_BYTES:
        raise PayloadInvalid(f"audit payload is {len(text)} bytes; the limit is {MAX_PAYLOAD_BYTES}")
    return text


def signature_ref(signature: bytes) -> str:
    """A short, non-reusable reference to a signature, safe to record."""
    return "sha256:" + hashlib.sha256(signature).hexdigest()[:16]
