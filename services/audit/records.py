"""The audit record, its hash chain, checkpoints and their verification (workflow-safe).

A record is hashed over the canonical JSON (``services.runtime.intent.canonical_json``)
of every field but its own hash, prev_hash included, under a domain tag: changing,
dropping, inserting or reordering a record breaks the chain at that point. Hashing
alone cannot stop someone with write access from re-hashing the whole tail, so
checkpoints (an Ed25519 signature over a sequence and the hash of the record
there) pin the chain to a key that lives in the HSM.

This module imports only the standard library (and ``services.runtime``'s
stdlib-only modules) so workflows may build payloads with it. Checking a
checkpoint signature needs Ed25519, which the standard library lacks: the default
check imports ``cryptography`` when first called, never at import time.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from services.audit.errors import PayloadInvalid, SecretInPayload
from services.runtime.intent import canonical_json

GENESIS_HASH = bytes(32)
RECORD_DOMAIN = "custos.audit.record.v1"
CHECKPOINT_DOMAIN = "custos.audit.checkpoint.v1"
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


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement: "the record at ``sequence`` has hash ``head_hash``"."""

    sequence: int
    head_hash: bytes
    time: datetime
    key_id: str
    public_key: bytes
    signature: bytes

    def message(self) -> bytes:
        return checkpoint_message(self.sequence, self.head_hash, self.time, self.key_id)


@dataclass(frozen=True)
class VerifyResult:
    """What verification found.

    ``first_bad_sequence`` is the first sequence at which the chain stops being
    trustworthy (None when ``ok``): the record whose content, number or link is
    wrong, the first missing one after a truncation, or, when a signed checkpoint
    disagrees with a tail that re-hashes cleanly, the first record after the last
    checkpoint that still matched. ``signed_through`` is the highest sequence a
    valid checkpoint vouches for.
    """

    ok: bool
    records_checked: int
    first_bad_sequence: int | None
    reason: str
    signed_through: int = 0
    head_sequence: int = 0
    head_hash: bytes = GENESIS_HASH


SignatureCheck = Callable[[bytes, bytes, bytes], bool]
"""``(public_key, message, signature) -> valid``."""


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


def checkpoint_message(sequence: int, head_hash: bytes, time: datetime, key_id: str) -> bytes:
    """The exact bytes the checkpoint key signs."""
    return canonical_json(
        {
            "domain": CHECKPOINT_DOMAIN,
            "sequence": sequence,
            "head_hash": head_hash,
            "time": time,
            "key_id": key_id,
        }
    )


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


# --- verification ---------------------------------------------------------------------------


def ed25519_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Checks an Ed25519 signature (imports ``cryptography`` lazily: see the module docstring)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


class ChainVerifier:
    """Verifies records fed in order, against signed checkpoints; :func:`verify_records` wraps it.

    Feeding one record at a time lets the service check millions of rows without
    holding them. ``first_sequence``/``anchor_hash`` say where a partial range
    starts: from sequence 1 the anchor is the genesis hash; from later on, the
    first record's ``prev_hash`` is taken as given unless a checkpoint at
    ``first_sequence - 1`` (or ``anchor_hash``) pins it.
    """

    def __init__(
        self,
        checkpoints: Iterable[Checkpoint],
        public_keys: Mapping[str, bytes],
        *,
        first_sequence: int = 1,
        anchor_hash: bytes | None = None,
        verify_signature: SignatureCheck = ed25519_verify,
    ) -> None:
        self._expected = first_sequence
        self._first = first_sequence
        self._prev: bytes | None = GENESIS_HASH if first_sequence == 1 else anchor_hash
        self._bad: tuple[int, str] | None = None
        self._stopped = False
        self._rewritten: tuple[int, int] | None = None
        self.records_checked = 0
        self._last_good_checkpoint = first_sequence - 1
        self.signed_through = 0
        self._head_hash = self._prev or GENESIS_HASH
        self._pending: dict[int, list[Checkpoint]] = {}
        for cp in sorted(checkpoints, key=lambda c: c.sequence):
            self._admit_checkpoint(cp, public_keys, verify_signature)

    def _fail(self, sequence: int, reason: str) -> None:
        if self._bad is None or sequence < self._bad[0]:
            self._bad = (sequence, reason)

    def _admit_checkpoint(self, cp: Checkpoint, keys: Mapping[str, bytes], check: SignatureCheck) -> None:
        trusted = keys.get(cp.key_id)
        if trusted is None:
            self._fail(cp.sequence, f"checkpoint at {cp.sequence} is signed by unknown key {cp.key_id!r}")
            return
        if cp.public_key and cp.public_key != trusted:
            self._fail(cp.sequence, f"checkpoint at {cp.sequence} names another public key for {cp.key_id!r}")
            return
        if not check(trusted, cp.message(), cp.signature):
            self._fail(cp.sequence, f"checkpoint at {cp.sequence} has an invalid signature")
            return
        if cp.sequence == self._first - 1:
            if self._prev is None:
                self._prev = cp.head_hash
            elif self._prev != cp.head_hash:
                self._fail(self._first, f"the range's anchor does not match the checkpoint at {cp.sequence}")
            return
        if cp.sequence < self._first:
            return  # outside this range: nothing to compare it with
        self._pending.setdefault(cp.sequence, []).append(cp)

    def feed(self, record: AuditRecord) -> bool:
        """Checks the next record; returns False once the chain is broken (stop feeding)."""
        if self._stopped:
            return False
        seq = self._expected
        problem = self._check(record, seq)
        if problem is not None:
            bad, reason = problem
            if self._rewritten is not None and self._rewritten[0] <= bad <= self._rewritten[1]:
                self._bad = (bad, reason)  # names the culprit inside the span a checkpoint disowned
            else:
                self._fail(bad, reason)
            self._stopped = True
            return False
        self.records_checked += 1
        for cp in self._pending.pop(seq, []):
            if cp.head_hash != record.hash and self._rewritten is None:
                lo = self._last_good_checkpoint + 1
                self._fail(
                    lo,
                    f"record {seq} does not match the checkpoint signed by {cp.key_id!r}: "
                    f"records {lo}..{seq} were rewritten",
                )
                # Read one more record: a broken link right after names the culprit exactly.
                self._rewritten = (lo, seq)
            elif self._rewritten is None:
                self._last_good_checkpoint = seq
                self.signed_through = seq
        self._prev = record.hash
        self._head_hash = record.hash
        self._expected = seq + 1
        if self._rewritten is not None and seq > self._rewritten[1]:
            self._stopped = True
        return not self._stopped

    def _check(self, record: AuditRecord, seq: int) -> tuple[int, str] | None:
        """``(first bad sequence, reason)`` if ``record`` cannot be the ``seq``-th link."""
        if record.sequence != seq:
            if record.sequence > seq:
                return seq, f"record {seq} is missing (found {record.sequence} in its place)"
            return seq, f"record {record.sequence} is out of order or repeated (expected {seq})"
        if payload_digest(record.payload_json) != record.payload_digest:
            return seq, f"record {seq}'s payload does not match its digest"
        if hash_of(record) != record.hash:
            # A record renumbered by one betrays an insertion or a deletion just before it.
            if seq - 1 >= self._first and hash_of(replace(record, sequence=seq - 1)) == record.hash:
                return seq - 1, f"record {seq - 1} was inserted: the original {seq - 1} now sits at {seq}"
            if hash_of(replace(record, sequence=seq + 1)) == record.hash:
                return seq, f"record {seq} was deleted and the records after it renumbered"
            return seq, f"record {seq}'s content does not match its hash"
        if self._prev is not None and record.prev_hash != self._prev:
            # This record is intact, so the one before it is not the one it was chained to.
            if seq - 1 >= self._first:
                return seq - 1, f"record {seq - 1} was replaced or re-hashed: {seq} is chained to another"
            return seq, f"record {seq}'s prev_hash does not match the range's anchor"
        return None

    def finish(
        self,
        *,
        declared_count: int | None = None,
        head_sequence: int | None = None,
        head_hash: bytes | None = None,
    ) -> VerifyResult:
        """Closes the range: checkpoints past the last record or a short count mean truncation."""
        last = self._expected - 1
        if not self._stopped:
            beyond = [s for s in self._pending if s > last]
            if beyond:
                self._fail(
                    last + 1,
                    f"a checkpoint vouches for record {min(beyond)} but the records end at {last}: truncated",
                )
            if declared_count is not None and declared_count != self.records_checked:
                self._fail(
                    last + 1 if declared_count > self.records_checked else self._first + declared_count,
                    f"{declared_count} records declared, {self.records_checked} present: truncated or padded",
                )
            if head_sequence is not None and head_sequence != last:
                self._fail(
                    min(head_sequence, last) + 1,
                    f"the declared head is record {head_sequence} but the records end at {last}",
                )
            elif head_hash is not None and head_hash != self._head_hash:
                self._fail(max(last, self._first), f"record {last}'s hash is not the declared head hash")
        if self._bad is not None:
            seq, reason = self._bad
            return VerifyResult(
                ok=False,
                records_checked=self.records_checked,
                first_bad_sequence=seq,
                reason=reason,
                signed_through=self.signed_through if self.signed_through < seq else 0,
                head_sequence=last,
                head_hash=self._head_hash,
            )
        return VerifyResult(
            ok=True,
            records_checked=self.records_checked,
            first_bad_sequence=None,
            reason="ok",
            signed_through=self.signed_through,
            head_sequence=last,
            head_hash=self._head_hash,
        )


def verify_records(
    records: Iterable[AuditRecord],
    checkpoints: Iterable[Checkpoint],
    public_keys: Mapping[str, bytes],
    *,
    first_sequence: int = 1,
    anchor_hash: bytes | None = None,
    declared_count: int | None = None,
    head_sequence: int | None = None,
    head_hash: bytes | None = None,
    verify_signature: SignatureCheck = ed25519_verify,
) -> VerifyResult:
    """Verifies a run of records (in the order given) against signed checkpoints.

    Detects a changed record (its hash), a deleted or reordered one (its
    sequence), an inserted one (the next record's link), a re-hashed tail (the
    checkpoints) and truncation (checkpoints past the end, ``declared_count``,
    ``head_sequence``/``head_hash``). A range that does not start at sequence 1
    names its ``first_sequence``. Pure: no I/O.
    """
    verifier = ChainVerifier(
        checkpoints,
        public_keys,
        first_sequence=first_sequence,
        anchor_hash=anchor_hash,
        verify_signature=verify_signature,
    )
    for record in records:
        if not verifier.feed(record):
            break
    return verifier.finish(declared_count=declared_count, head_sequence=head_sequence, head_hash=head_hash)
