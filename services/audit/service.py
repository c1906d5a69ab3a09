"""The audit service's logic: append, query, export, verify and checkpoint (no grpc here).

Checkpoints are signed only after the records since the previous checkpoint have
been verified, so someone who rewrites the table cannot get the key to vouch
for the forgery. They are made on demand, by :meth:`AuditService.run_checkpointer`
every ``every_seconds`` or once ``every_records`` records have piled up (checked
at each poll and after each ``AppendEvent``), and at the end of every export so an
export's last record is always covered by a signature.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from services.audit import export, repository
from services.audit.errors import (
    AuditError,
    AuditUnavailable,
    ChainBroken,
    CheckpointSignerMissing,
    NothingToCheckpoint,
    PayloadInvalid,
)
from services.audit.records import AuditRecord, ChainVerifier, Checkpoint, VerifyResult, checkpoint_message
from services.audit.signing import CheckpointSigner
from services.audit.writer import AuditWriter
from services.runtime.convert import MAX_INT64
from services.runtime.db import transaction, utcnow
from services.runtime.intent import canonical_json

log = logging.getLogger("custos.audit")

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
_BATCH = 1000


@dataclass(frozen=True)
class CheckpointPolicy:
    """When to checkpoint without being asked."""

    every_records: int = 1000
    every_seconds: float = 300.0


@dataclass(frozen=True)
class EventQuery:
    """Filters of ``QueryEvents``; empty fields match everything. ``end`` is exclusive."""

    subject: str = ""
    actor: str = ""
    action: str = ""
    start: datetime | None = None
    end: datetime | None = None

    def fingerprint(self) -> str:
        return hashlib.sha256(canonical_json(self)).hexdigest()[:12]


class AuditService:
    """The trail's operations over one database and (optionally) the checkpoint key.

    ``trusted_keys`` adds keys of earlier checkpoints (after a key rotation) to
    the current signer's own key when verifying.
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        signer: CheckpointSigner | None = None,
        policy: CheckpointPolicy | None = None,
        trusted_keys: Mapping[str, bytes] | None = None,
    ) -> None:
        self._factory = session_factory
        self._signer = signer
        self.policy = policy or CheckpointPolicy()
        self._trusted = dict(trusted_keys or {})

    def public_keys(self) -> dict[str, bytes]:
        keys = dict(self._trusted)
        if self._signer is not None:
            keys[self._signer.key_id] = self._signer.public_key()
        return keys

    # --- writing --------------------------------------------------------------------------

    def append(
        self, actor: str, action: str, subject: str, outcome: str, payload: Mapping[str, Any] | None
    ) -> AuditRecord:
        """Appends one record in its own transaction (fail-closed), then checkpoints if due."""
        record = AuditWriter(self._factory, actor).record(action, subject, outcome, payload)
        if self._signer is not None:
            try:
                self.maybe_checkpoint()
            except AuditError as e:  # the record is committed; the checkpoint is retried by the poller
                log.error("checkpoint after append failed: %s", e)
        return record

    # --- reading --------------------------------------------------------------------------

    def query(self, q: EventQuery, page_size: int = 0, page_token: str = "") -> tuple[list[AuditRecord], str]:
        """A page of matching records in sequence order and the token of the next page ("" at the end)."""
        size = DEFAULT_PAGE_SIZE if page_size == 0 else min(page_size, MAX_PAGE_SIZE)
        if q.start is not None and q.end is not None and q.end <= q.start:
            raise PayloadInvalid("the time range's end must be after its start")
        after = _decode_token(page_token, q) if page_token else 0
        with self._read() as s:
            rows = repository.query(
                s,
                subject=q.subject,
                actor=q.actor,
                action=q.action,
                start=q.start,
                end=q.end,
                after_sequence=after,
                limit=size + 1,
            )
        if len(rows) > size:
            return rows[:size], _encode_token(rows[size - 1].sequence, q)
        return rows, ""

    def export_lines(
        self, from_sequence: int = 0, to_sequence: int = 0, *, seal: bool = True
    ) -> Iterator[str]:
        """The export of ``from..to`` (0: first / head) as JSON Lines, read in batches.

        With ``seal`` and a checkpoint key, the last exported record is checkpointed
        first, so the export ends in a signature over its own last record.
        """
        with self._read() as s:
            head = repository.read_head(s)
        first = max(1, from_sequence)
        last = head.sequence if to_sequence == 0 else min(to_sequence, head.sequence)
        if last >= first and seal and self._signer is not None:
            self.checkpoint(at=last)
        yield export.header_line(first, last, utcnow())
        after = first - 1
        last_hash = b""
        while after < last:
            with self._read() as s:
                batch = repository.records_between(s, after + 1, last, limit=_BATCH)
            if not batch:
                break
            for r in batch:
                yield export.record_line(r)
            after = batch[-1].sequence
            last_hash = batch[-1].hash
        with self._read() as s:
            checkpoints = repository.checkpoints_between(s, max(0, first - 1), last)
        keys: dict[str, bytes] = {}
        for cp in checkpoints:
            yield export.checkpoint_line(cp)
            keys.setdefault(cp.key_id, cp.public_key)
        for key_id, public in sorted(keys.items()):
            yield export.key_line(key_id, public)
        count = max(0, after - first + 1)
        yield export.trailer_line(count, after if count else last, last_hash or bytes(32))

    def verify(self, from_sequence: int = 0, to_sequence: int = 0) -> tuple[VerifyResult, Checkpoint | None]:
        """Verifies the stored chain (or a range) against the checkpoints and trusted keys."""
        with self._read() as s:
            head = repository.read_head(s)
            first = max(1, from_sequence)
            last = head.sequence if to_sequence == 0 else min(to_sequence, head.sequence)
            # Up to the head, every checkpoint counts: one past the last record means truncation.
            checkpoints = repository.checkpoints_between(
                s, max(0, first - 1), None if last == head.sequence else last
            )
            latest = repository.latest_checkpoint(s)
            stored_max = repository.max_sequence(s)
        verifier = ChainVerifier(checkpoints, self.public_keys(), first_sequence=first)
        after = first - 1
        while after < last:
            with self._read() as s:
                batch = repository.records_between(s, after + 1, last, limit=_BATCH)
            if not batch:
                break
            if not all(verifier.feed(r) for r in batch):
                break
            after = batch[-1].sequence
        at_head = last == head.sequence
        result = verifier.finish(head_sequence=last, head_hash=head.hash if at_head else None)
        if result.ok and at_head and stored_max > head.sequence:
            result = VerifyResult(
                ok=False,
                records_checked=result.records_checked,
                first_bad_sequence=head.sequence + 1,
                reason=f"records up to {stored_max} are stored past the head ({head.sequence})",
                signed_through=result.signed_through,
                head_sequence=result.head_sequence,
                head_hash=result.head_hash,
            )
        return result, latest

    # --- checkpoints ----------------------------------------------------------------------

    def checkpoint(self, at: int | None = None) -> Checkpoint:
        """Signs a checkpoint at ``at`` (default: the head), after verifying since the last one.

        Returns the existing checkpoint if there is one at that sequence.
        """
        signer = self._signer
        if signer is None:
            raise CheckpointSignerMissing("this audit service holds no checkpoint key")
        try:
            with transaction(self._factory) as s:
                head = repository.read_head(s, lock=True)  # no append moves the head meanwhile
                target = head.sequence if at is None else at
                if target < 1 or target > head.sequence:
                    raise NothingToCheckpoint(
                        f"cannot checkpoint sequence {target}: the trail holds {head.sequence} records"
                    )
                existing = repository.checkpoint_at(s, target)
                if existing is not None:
                    return existing
                previous = repository.latest_checkpoint(s, below=target)
                start = 1 if previous is None else previous.sequence + 1
                verifier = ChainVerifier(
                    [previous] if previous else [], self.public_keys(), first_sequence=start
                )
                last_hash = previous.head_hash if previous else bytes(32)
                for record in repository.iter_records(s, start, target):
                    if not verifier.feed(record):
                        break
                    last_hash = record.hash
                result = verifier.finish(
                    head_sequence=target, head_hash=head.hash if target == head.sequence else None
                )
                if not result.ok:
                    log.error("refusing to checkpoint: %s", result.reason)
                    raise ChainBroken(
                        f"the trail fails verification, no checkpoint signed: {result.reason}",
                        first_bad_sequence=result.first_bad_sequence,
                    )
                now = utcnow()
                cp = Checkpoint(
                    sequence=target,
                    head_hash=last_hash,
                    time=now,
                    key_id=signer.key_id,
                    public_key=signer.public_key(),
                    signature=signer.sign(checkpoint_message(target, last_hash, now, signer.key_id)),
                )
                repository.add_checkpoint(s, cp)
                return cp
        except IntegrityError:
            # Another process checkpointed the same sequence first (SQLite has no row lock to wait on).
            with self._read() as s:
                existing = repository.checkpoint_at(s, target)
            if existing is None:
                raise AuditUnavailable("checkpoint could not be stored") from None
            return existing
        except SQLAlchemyError as e:
            raise AuditUnavailable(f"the audit trail cannot be read ({type(e).__name__})") from e

    def maybe_checkpoint(self, now: datetime | None = None) -> Checkpoint | None:
        """Checkpoints the head if the policy says one is due; None otherwise."""
        if self._signer is None:
            return None
        now = now or utcnow()
        with self._read() as s:
            head = repository.read_head(s)
            latest = repository.latest_checkpoint(s)
            if head.sequence == 0 or (latest is not None and latest.sequence >= head.sequence):
                return None
            since = latest.time if latest is not None else repository.record_time(s, 1)
        done = 0 if latest is None else latest.sequence
        due = head.sequence - done >= self.policy.every_records or (
            since is not None and now - since >= timedelta(seconds=self.policy.every_seconds)
        )
        return self.checkpoint() if due else None

    async def run_checkpointer(self, stop: asyncio.Event) -> None:
        """Checkpoints on the policy's schedule until ``stop`` is set (run it as a task)."""
        poll = max(0.2, min(self.policy.every_seconds / 4, 30.0))
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.maybe_checkpoint)
            except AuditError as e:
                log.error("periodic checkpoint failed: %s", e)
            try:
                await asyncio.wait_for(stop.wait(), timeout=poll)
            except TimeoutError:
                pass

    # --- helpers --------------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Session]:
        """A short session whose database errors become ``AuditUnavailable``."""
        try:
            with self._factory() as session:
                yield session
        except SQLAlchemyError as e:
            raise AuditUnavailable(f"the audit trail cannot be read ({type(e).__name__})") from e


def _encode_token(after: int, q: EventQuery) -> str:
    return base64.urlsafe_b64encode(f"v1:{after}:{q.fingerprint()}".encode()).decode().rstrip("=")


def _decode_token(token: str, q: EventQuery) -> int:
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        version, after, fingerprint = text.split(":")
        value = int(after)
    except ValueError:
        raise PayloadInvalid("page_token is not one this service issued") from None
    if version != "v1" or not 0 <= value <= MAX_INT64:  # a forged token must not reach the database
        raise PayloadInvalid("page_token is not one this service issued")
    if fingerprint != q.fingerprint():
        raise PayloadInvalid("page_token belongs to a query with other filters")
    return value
