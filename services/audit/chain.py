"""Checkpoints, the chain they form, and verification of the trail against them (workflow-safe).

A checkpoint is an Ed25519 signature, by a key that lives in the HSM, over a record's
sequence and hash *and over the checkpoint before it*: that one's sequence and the
SHA-256 of its signed message (the first checkpoint names genesis). The checkpoints
thus form a chain of their own from the first record: a dropped, reordered, replaced or
inserted checkpoint breaks the link of the next one, and a record rewritten under any
checkpoint no longer matches that checkpoint's signed hash. What no chain can show by
itself is that its newest links were cut off or an old copy restored: the service
keeps the last checkpoint it signed on the HSM token for that (``services.audit.service``).

Checkpoints of the first format (``custos.audit.checkpoint.v1``) named no predecessor,
so any of them could be dropped unnoticed. Verification ignores them; the service
adopts a trail that holds only those (see ``AuditService.checkpoint``).

Standard library only, so workflows may import it; the default Ed25519 check imports
``cryptography`` when first called, never at import time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from services.audit.records import GENESIS_HASH, AuditRecord, hash_of, payload_digest
from services.runtime.intent import canonical_json

CHECKPOINT_DOMAIN = "custos.audit.checkpoint.v2"
LEGACY_CHECKPOINT_DOMAIN = "custos.audit.checkpoint.v1"
#: Checkpoint formats: 1 named no predecessor; 2 names the checkpoint before it.
LEGACY, CHAINED = 1, 2

SignatureCheck = Callable[[bytes, bytes, bytes], bool]
"""``(public_key, message, signature) -> valid``."""


@dataclass(frozen=True)
class Link:
    """A place in the checkpoint chain: a checkpoint's sequence and digest."""

    sequence: int
    digest: bytes

    def describe(self) -> str:
        return "genesis" if self.sequence == 0 else f"checkpoint {self.sequence}"


GENESIS = Link(0, GENESIS_HASH)


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement: "record ``sequence`` has hash ``head_hash``, after checkpoint ``previous``"."""

    sequence: int
    head_hash: bytes
    time: datetime
    key_id: str
    public_key: bytes
    signature: bytes
    prev_sequence: int = 0
    prev_digest: bytes = GENESIS_HASH
    version: int = CHAINED

    @property
    def previous(self) -> Link:
        return Link(self.prev_sequence, self.prev_digest)

    def message(self) -> bytes:
        """The exact bytes the checkpoint key signed."""
        if self.version == LEGACY:
            return legacy_checkpoint_message(self.sequence, self.head_hash, self.time, self.key_id)
        return checkpoint_message(self.sequence, self.head_hash, self.time, self.key_id, self.previous)

    def digest(self) -> bytes:
        """What the next checkpoint names: SHA-256 of the signed message."""
        return hashlib.sha256(self.message()).digest()

    def link(self) -> Link:
        return Link(self.sequence, self.digest())


def checkpoint_message(sequence: int, head_hash: bytes, time: datetime, key_id: str, previous: Link) -> bytes:
    """The exact bytes the checkpoint key signs."""
    return canonical_json(
        {
            "domain": CHECKPOINT_DOMAIN,
            "sequence": sequence,
            "head_hash": head_hash,
            "time": time,
            "key_id": key_id,
            "prev_sequence": previous.sequence,
            "prev_digest": previous.digest,
        }
    )


def legacy_checkpoint_message(sequence: int, head_hash: bytes, time: datetime, key_id: str) -> bytes:
    """What first-format checkpoints signed (read only: nothing signs it any more)."""
    return canonical_json(
        {
            "domain": LEGACY_CHECKPOINT_DOMAIN,
            "sequence": sequence,
            "head_hash": head_hash,
            "time": time,
            "key_id": key_id,
        }
    )


@dataclass(frozen=True)
class VerifyResult:
    """What verification found.

    ``first_bad_sequence`` is the first sequence at which the trail stops being
    trustworthy (None when ``ok``): the record whose content, number or link is wrong,
    the first missing one after a truncation, the checkpoint that is missing, forged or
    out of the chain, or, when a signed checkpoint disagrees with records that re-hash
    cleanly, the first record after the last checkpoint that still matched.
    ``signed_through`` is the highest sequence a valid checkpoint of the chain vouches for.
    """

    ok: bool
    records_checked: int
    first_bad_sequence: int | None
    reason: str
    signed_through: int = 0
    head_sequence: int = 0
    head_hash: bytes = GENESIS_HASH


def ed25519_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Checks an Ed25519 signature (imports ``cryptography`` lazily: see the module docstring)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def signature_problem(
    cp: Checkpoint, keys: Mapping[str, bytes], check: SignatureCheck
) -> tuple[int, str] | None:
    """``(cp.sequence, reason)`` unless a trusted key signed ``cp``."""
    trusted = keys.get(cp.key_id)
    if trusted is None:
        return cp.sequence, f"checkpoint {cp.sequence} is signed by unknown key {cp.key_id!r}"
    if cp.public_key and cp.public_key != trusted:
        return cp.sequence, f"checkpoint {cp.sequence} names another public key for {cp.key_id!r}"
    if not check(trusted, cp.message(), cp.signature):
        return cp.sequence, f"checkpoint {cp.sequence} has an invalid signature"
    return None


class CheckpointChain:
    """Checks that checkpoints fed in order form one signed chain from ``start``.

    First-format checkpoints are passed over. The first failure is kept in ``failure``
    (``(sequence, reason)``) and nothing is accepted after it.
    """

    def __init__(
        self,
        public_keys: Mapping[str, bytes],
        *,
        start: Link = GENESIS,
        verify_signature: SignatureCheck = ed25519_verify,
    ) -> None:
        self._keys = public_keys
        self._check = verify_signature
        self.start = start
        self.last = start
        self.count = 0
        self.failure: tuple[int, str] | None = None

    def add(self, cp: Checkpoint) -> bool:
        """True if ``cp`` extends the chain."""
        if self.failure is not None or cp.version != CHAINED:
            return False
        problem = signature_problem(cp, self._keys, self._check) or self._link_problem(cp)
        if problem is not None:
            self.failure = problem
            return False
        self.last = cp.link()
        self.count += 1
        return True

    def _link_problem(self, cp: Checkpoint) -> tuple[int, str] | None:
        last, named = self.last, cp.previous
        if cp.sequence <= last.sequence:
            return cp.sequence, f"checkpoint {cp.sequence} is out of order: it comes after {last.describe()}"
        if named.sequence > last.sequence:
            return named.sequence, (
                f"checkpoint {named.sequence} is missing: checkpoint {cp.sequence} names it as the one before"
            )
        if named.sequence < last.sequence:
            return last.sequence, (
                f"{last.describe()} is not in the chain: checkpoint {cp.sequence} names "
                f"{named.describe()} as the one before"
            )
        if named.digest != last.digest:
            if last.sequence == 0:
                return cp.sequence, f"checkpoint {cp.sequence} names a genesis that is not the chain's"
            return (
                last.sequence,
                f"checkpoint {last.sequence} was replaced: checkpoint {cp.sequence} names another",
            )
        return None


def _first(*failures: tuple[int, str] | None) -> tuple[int, str] | None:
    found = [f for f in failures if f is not None]
    return min(found, key=lambda f: f[0]) if found else None


class ChainVerifier:
    """Verifies records fed in order against the checkpoint chain; :func:`verify_records` wraps it.

    Feeding one record at a time lets the service check millions of rows without
    holding them; checkpoints may be given up front or added as it goes
    (:meth:`add_checkpoints`), in sequence order, each before the record it covers.
    ``first_sequence``/``anchor_hash`` say where a partial range starts: from sequence 1
    the anchor is the genesis hash; from later on, the first record's ``prev_hash`` is
    taken as given unless a checkpoint at ``first_sequence - 1`` (or ``anchor_hash``)
    pins it. Checkpoints before the range count for the chain only.

    ``chain_start`` is where the checkpoint chain is taken up: genesis, or a checkpoint
    already verified. None admits each checkpoint on its own signature, of either format
    (the first format's rules, used only to adopt an old trail).
    """

    def __init__(
        self,
        checkpoints: Iterable[Checkpoint],
        public_keys: Mapping[str, bytes],
        *,
        first_sequence: int = 1,
        anchor_hash: bytes | None = None,
        verify_signature: SignatureCheck = ed25519_verify,
        chain_start: Link | None = GENESIS,
    ) -> None:
        self._keys = public_keys
        self._check = verify_signature
        self.chain = (
            None
            if chain_start is None
            else CheckpointChain(public_keys, start=chain_start, verify_signature=verify_signature)
        )
        self._expected = first_sequence
        self._first = first_sequence
        self._prev: bytes | None = GENESIS_HASH if first_sequence == 1 else anchor_hash
        self._bad: tuple[int, str] | None = None  # records (and how they disagree with checkpoints)
        self._other_bad: tuple[int, str] | None = None  # the checkpoints themselves, and notes
        self._stopped = False
        self._rewritten: tuple[int, int] | None = None
        self.records_checked = 0
        self._last_good_checkpoint = first_sequence - 1
        self.signed_through = 0
        self._head_hash = self._prev or GENESIS_HASH
        self._pending: dict[int, list[Checkpoint]] = {}
        self.add_checkpoints(checkpoints)

    def _fail(self, sequence: int, reason: str) -> None:
        self._bad = _first(self._bad, (sequence, reason))

    def note(self, sequence: int, reason: str) -> None:
        """Records a failure the caller found by its own means (it counts like any other)."""
        self._other_bad = _first(self._other_bad, (sequence, reason))

    def add_checkpoints(self, checkpoints: Iterable[Checkpoint]) -> None:
        """Takes up further checkpoints, in sequence order, before the records they cover."""
        for cp in checkpoints:
            if self.chain is not None:
                if cp.version != CHAINED:
                    continue
                if not self.chain.add(cp):
                    self._other_bad = _first(self._other_bad, self.chain.failure)
                    continue
            else:
                problem = signature_problem(cp, self._keys, self._check)
                if problem is not None:
                    self._other_bad = _first(self._other_bad, problem)
                    continue
            self._admit(cp)

    def _admit(self, cp: Checkpoint) -> None:
        if cp.sequence == self._first - 1:
            if self._prev is None:
                self._prev = cp.head_hash
            elif self._prev != cp.head_hash:
                self._fail(self._first, f"the range's anchor does not match checkpoint {cp.sequence}")
            return
        if cp.sequence < self._first:
            return  # before this range: it counts for the chain only
        self._pending.setdefault(cp.sequence, []).append(cp)

    def feed(self, record: AuditRecord) -> bool:
        """Checks the next record; returns False once the chain is broken (stop feeding)."""
        if self._stopped:
            return False
        seq = self._expected
        problem = self._check_record(record, seq)
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

    def _check_record(self, record: AuditRecord, seq: int) -> tuple[int, str] | None:
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
        require_chain: bool = False,
    ) -> VerifyResult:
        """Closes the range: checkpoints past the last record or a short count mean truncation.

        With ``require_chain``, records that no checkpoint chain from genesis covers at
        all fail at the first of them.
        """
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
        unchained = None
        if require_chain and self.records_checked and not self.has_chain:
            unchained = (
                self._first,
                f"records {self._first}..{last} are covered by no checkpoint chain from the first record",
            )
        bad = _first(self._bad, self._other_bad, unchained)
        if bad is not None:
            seq, reason = bad
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

    @property
    def has_chain(self) -> bool:
        """Whether a checkpoint chain was given at all (taken up past genesis, or one broken:
        that is reported as what it is)."""
        chain = self.chain
        return chain is not None and (chain.count > 0 or chain.start != GENESIS or chain.failure is not None)


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
    require_chain: bool = False,
) -> VerifyResult:
    """Verifies a run of records (in the order given) against the checkpoint chain.

    Detects a changed record (its hash), a deleted or reordered one (its sequence), an
    inserted one (the next record's link), a re-hashed tail (the checkpoints), a
    dropped, reordered or forged checkpoint (the chain), and truncation (checkpoints
    past the end, ``declared_count``, ``head_sequence``/``head_hash``). A range that does
    not start at sequence 1 names its ``first_sequence``; ``checkpoints`` always start
    from genesis. Pure: no I/O.
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
    return verifier.finish(
        declared_count=declared_count,
        head_sequence=head_sequence,
        head_hash=head_hash,
        require_chain=require_chain,
    )
