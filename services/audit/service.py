"""The audit service's logic: append, query, export, verify and checkpoint (no grpc here).

Checkpoints chain (each names the one before it, the first names genesis) and are
signed only after the trail since the last one verified, so someone who rewrites
the table cannot get the key to vouch for the forgery. The audit token remembers
the last checkpoint this installation signed (:class:`~services.audit.signing.HeadStore`):
nothing is signed unless the stored trail still holds it, so dropping checkpoints,
rewriting the records under them or restoring an older copy of the database is
refused, alarmed and recorded. Checkpoints are made by :meth:`AuditService.run_checkpointer`
every ``every_seconds`` while the head moved or once ``every_records`` records piled
up (checked at each poll and after each ``AppendEvent``), on ``CreateCheckpoint``, and
at the end of every export so an export's last record is always covered by a signature.
Records after the last checkpoint are the window in which a rewrite goes unnoticed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from services.audit import export, repository
from services.audit.chain import CHAINED, LEGACY, Checkpoint, VerifyResult, checkpoint_message
from services.audit.errors import (
    AuditError,
    AuditUnavailable,
    ChainBroken,
    CheckpointSignerMissing,
    HeadNotExtended,
    NothingToCheckpoint,
    PayloadInvalid,
)
from services.audit.records import AuditRecord
from services.audit.signing import CheckpointSigner, HeadStore, SignedHead
from services.audit.stored import BATCH, Position, signed_head_problem, walk
from services.audit.writer import AuditWriter
from services.runtime.convert import MAX_INT64
from services.runtime.db import reading, transaction, utcnow
from services.runtime.errors import CustosError
from services.runtime.intent import canonical_json

log = logging.getLogger("custos.audit")

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100


@dataclass(frozen=True)
class CheckpointPolicy:
    """When to checkpoint without being asked: every ``every_seconds`` while the head moved,
    or as soon as ``every_records`` records wait. Between two checkpoints lies the window
    in which a rewrite of the newest records goes unnoticed."""

    every_records: int = 1000
    every_seconds: float = 2.0


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

    ``trusted_keys`` adds keys of earlier checkpoints (after a key rotation) to the
    current signer's own key when verifying. ``head_store`` remembers the last
    checkpoint signed where the database cannot rewrite it: the audit token in
    production; without one, a trail cut back or restored from an old copy is not
    noticed.
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        signer: CheckpointSigner | None = None,
        policy: CheckpointPolicy | None = None,
        trusted_keys: Mapping[str, bytes] | None = None,
        head_store: HeadStore | None = None,
    ) -> None:
        self._factory = session_factory
        self._signer = signer
        self.policy = policy or CheckpointPolicy()
        self._trusted = dict(trusted_keys or {})
        self._heads = head_store
        self._alarmed: tuple[str, int | None] | None = None
        self._writer = AuditWriter(session_factory, "svc:audit")

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
            except CustosError as e:  # the record is committed; the checkpoint is retried by the poller
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

        It carries the whole checkpoint chain from genesis to its last record. With
        ``seal`` and a checkpoint key, its last record is signed: the export runs on to
        the first checkpoint at or after ``to``, or the head is checkpointed first.
        """
        with self._read() as s:
            head = repository.read_head(s)
        first = max(1, from_sequence)
        last = head.sequence if to_sequence == 0 else min(to_sequence, head.sequence)
        if last >= first and seal and self._signer is not None:
            last = self._sealed(last)
        yield export.header_line(first, last, utcnow())
        after = first - 1
        last_hash = b""
        while after < last:
            with self._read() as s:
                batch = repository.records_between(s, after + 1, last, limit=BATCH)
            if not batch:
                break
            for r in batch:
                yield export.record_line(r)
            after = batch[-1].sequence
            last_hash = batch[-1].hash
        keys: dict[str, bytes] = {}
        done = 0
        while done < last:
            with self._read() as s:
                checkpoints = repository.checkpoints_between(s, done + 1, last, limit=BATCH)
            if not checkpoints:
                break
            for cp in checkpoints:
                yield export.checkpoint_line(cp)
                keys.setdefault(cp.key_id, cp.public_key)
            done = checkpoints[-1].sequence
        for key_id, public in sorted(keys.items()):
            yield export.key_line(key_id, public)
        count = max(0, after - first + 1)
        yield export.trailer_line(count, after if count else last, last_hash or bytes(32))

    def _sealed(self, last: int) -> int:
        """The first checkpoint at or after ``last``, made if there is none."""
        for _ in range(2):
            with self._read() as s:
                cover = repository.checkpoints_between(s, last, None, limit=1)
            if cover:
                return cover[0].sequence
            try:
                return self.checkpoint(at=last).sequence
            except NothingToCheckpoint:  # another replica signed past ``last`` meanwhile
                continue
        raise AuditUnavailable(f"no checkpoint covers record {last}; retry the export")

    def verify(self, from_sequence: int = 0, to_sequence: int = 0) -> tuple[VerifyResult, Checkpoint | None]:
        """Verifies the stored trail (or a range) against the checkpoint chain, the trusted keys
        and the last checkpoint this installation signed."""
        signed = self._signed_head()
        with self._read() as s:
            head = repository.read_head(s)
            latest = repository.latest_checkpoint(s)
            stored_max = repository.max_sequence(s)
        first = max(1, from_sequence)
        last = head.sequence if to_sequence == 0 else min(to_sequence, head.sequence)
        result, _ = walk(
            self._read,
            self.public_keys(),
            start=Position(),
            first=first,
            last=last,
            head=head,
            require_chain=True,
        )
        problems: list[tuple[int, str]] = []
        if signed is not None:  # first: at the same sequence, what the HSM remembers says most
            with self._read() as s:
                problem = signed_head_problem(s, signed, head, result.signed_through)
            if problem is not None:
                problems.append(problem)
        if not result.ok:
            problems.append((result.first_bad_sequence or first, result.reason))
        if last == head.sequence and stored_max > head.sequence:
            problems.append(
                (head.sequence + 1, f"records up to {stored_max} are stored past the head ({head.sequence})")
            )
        if not problems:
            return result, latest
        seq, reason = min(problems, key=lambda p: p[0])
        return VerifyResult(
            ok=False,
            records_checked=result.records_checked,
            first_bad_sequence=seq,
            reason=reason,
            signed_through=result.signed_through if result.signed_through < seq else 0,
            head_sequence=result.head_sequence,
            head_hash=result.head_hash,
        ), latest

    # --- checkpoints ----------------------------------------------------------------------

    def checkpoint(self, at: int | None = None, *, verify_all: bool = False) -> Checkpoint:
        """Signs a checkpoint at ``at`` (default: the head) that extends the chain.

        Verifies first: the trail must still hold the last checkpoint this installation
        signed, the checkpoints after it must chain, and the records since must chain and
        match them; with ``verify_all`` (``CreateCheckpoint``), the whole trail and
        checkpoint chain from genesis. Returns the existing checkpoint if there is one
        at that sequence.

        Raises:
            HeadNotExtended: the trail no longer holds the last checkpoint signed.
            ChainBroken: the trail fails verification. Both are alarmed and recorded.
            NothingToCheckpoint: nothing to sign at ``at``, or a later checkpoint covers it.
        """
        signer = self._signer
        if signer is None:
            raise CheckpointSignerMissing("this audit service holds no checkpoint key")
        try:
            cp = self._sign_checkpoint(signer, at, verify_all)
        except ChainBroken as e:
            raise self._alarm(e) from None
        except SQLAlchemyError as e:
            raise AuditUnavailable(f"the audit trail cannot be read ({type(e).__name__})") from e
        self._remember(cp)
        return cp

    def _sign_checkpoint(self, signer: CheckpointSigner, at: int | None, verify_all: bool) -> Checkpoint:
        keys = self.public_keys()
        signed = self._signed_head()
        with self._read() as s:
            head = repository.read_head(s)
            if signed is not None:
                self._require_floor(s, signed, head)
            legacy = signed is None and repository.latest_checkpoint(s) is None
            adopting = legacy and bool(repository.checkpoints_between(s, 1, None, limit=1, version=LEGACY))
        if signed is not None and at is not None and at < signed.sequence:
            raise NothingToCheckpoint(
                f"checkpoint {signed.sequence} already covers record {at}: "
                "checkpoints are signed past it only"
            )
        # Without the head lock, verify what is there now: under it, only what came meanwhile.
        start = Position.of(signed) if signed is not None and not verify_all else Position()
        goal = head.sequence if at is None else min(at, head.sequence)
        result, position = walk(
            self._read,
            keys,
            start=start,
            last=goal,
            head=head,
            legacy=legacy,
            require_chain=verify_all and not legacy,
        )
        _raise_unless_ok(result)
        try:
            with transaction(self._factory) as s:
                head = repository.read_head(s, lock=True)  # no append moves the head meanwhile
                target = head.sequence if at is None else at
                if target < 1 or target > head.sequence:
                    raise NothingToCheckpoint(
                        f"cannot checkpoint sequence {target}: the trail holds {head.sequence} records"
                    )
                now = self._signed_head()  # another replica may have signed meanwhile
                if now is not None:
                    self._require_floor(s, now, head)
                    if now.sequence > position.sequence:
                        position = Position.of(now)
                if position.sequence > target:
                    raise NothingToCheckpoint(
                        f"checkpoint {position.sequence} already covers record {target}"
                    )
                legacy = now is None and repository.latest_checkpoint(s) is None
                result, position = walk(
                    lambda: nullcontext(s), keys, start=position, last=target, head=head, legacy=legacy
                )
                _raise_unless_ok(result)
                existing = repository.checkpoint_at(s, target)
                if existing is not None:
                    if existing.version == CHAINED and position.link.sequence == target:
                        return existing
                    raise NothingToCheckpoint(
                        f"a first-format checkpoint sits at {target}: wait for the next record"
                    )
                latest = repository.latest_checkpoint(s)
                if latest is not None and latest.sequence > target:
                    raise NothingToCheckpoint(f"checkpoint {latest.sequence} already covers record {target}")
                now_time = utcnow()
                previous = position.link
                message = checkpoint_message(target, position.record_hash, now_time, signer.key_id, previous)
                cp = Checkpoint(
                    sequence=target,
                    head_hash=position.record_hash,
                    time=now_time,
                    key_id=signer.key_id,
                    public_key=signer.public_key(),
                    signature=signer.sign(message),
                    prev_sequence=previous.sequence,
                    prev_digest=previous.digest,
                )
                repository.add_checkpoint(s, cp)
        except IntegrityError:
            # Another process checkpointed the same sequence first (SQLite has no row lock to wait on).
            with self._read() as s:
                existing = repository.checkpoint_at(s, target)
            if existing is None or existing.version != CHAINED:
                raise AuditUnavailable("checkpoint could not be stored") from None
            return existing
        if adopting:
            log.warning(
                "first chained checkpoint signed at %d, after the trail verified against its first-format "
                "checkpoints once more; from here on those are passed over",
                cp.sequence,
            )
        return cp

    def _require_floor(self, s: Session, signed: SignedHead, head: repository.Head) -> None:
        problem = signed_head_problem(s, signed, head, signed.sequence - 1)
        if problem is not None:
            raise HeadNotExtended(problem[1], first_bad_sequence=problem[0])

    def _signed_head(self) -> SignedHead | None:
        return None if self._heads is None else self._heads.load()

    def _remember(self, cp: Checkpoint) -> None:
        """Tells the audit token about ``cp`` unless it knows a later one.

        After the commit, so a crash leaves the token behind the trail (harmless: the
        checkpoints after its floor must chain from it) and never ahead of it (which
        would read as tampering). Replicas sharing the token take turns under the head
        lock, so the floor only ever rises.
        """
        if self._heads is None:
            return
        try:
            with transaction(self._factory) as s:
                repository.read_head(s, lock=True)
                current = self._heads.load()
                if current is None or cp.sequence > current.sequence:
                    self._heads.store(SignedHead(cp.sequence, cp.head_hash, cp.digest()))
        except (CustosError, SQLAlchemyError) as e:
            log.error("the audit token could not remember checkpoint %d: %s", cp.sequence, e)

    def _alarm(self, error: ChainBroken) -> ChainBroken:
        """Logs and records the alarm (once per finding, not at every poll).

        When the trail lost the last checkpoint signed, what is bad may lie anywhere
        before it: a full verification names the first bad sequence.
        """
        if isinstance(error, HeadNotExtended):
            try:
                result, _ = self.verify()
            except CustosError:
                result = None
            if result is not None and not result.ok:
                error = HeadNotExtended(
                    f"nothing signed: {result.reason}", first_bad_sequence=result.first_bad_sequence
                )
        log.critical("ALERT audit trail tampering suspected (%s): %s", type(error).__name__, error.message)
        seen = (type(error).__name__, error.first_bad_sequence)
        if seen != self._alarmed:
            self._alarmed = seen
            signed = self._signed_head()
            payload: dict[str, Any] = {
                "first_bad_sequence": error.first_bad_sequence,
                "reason": error.message,
            }
            if signed is not None:
                payload["last_signed"] = {
                    "sequence": signed.sequence,
                    "record_hash": signed.record_hash.hex(),
                    "checkpoint_digest": signed.checkpoint_digest.hex(),
                }
            try:
                self._writer.record("audit.tamper_detected", "audit:trail", "refused", payload)
            except AuditError as e:
                log.error("the tampering could not be recorded in the trail: %s", e)
        return error

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
            except CustosError as e:
                log.error("periodic checkpoint failed: %s", e)
            try:
                await asyncio.wait_for(stop.wait(), timeout=poll)
            except TimeoutError:
                pass

    # --- helpers --------------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Session]:
        """A short read session (no write lock on SQLite); database errors become ``AuditUnavailable``."""
        try:
            with reading(self._factory) as session:
                yield session
        except SQLAlchemyError as e:
            raise AuditUnavailable(f"the audit trail cannot be read ({type(e).__name__})") from e


def _raise_unless_ok(result: VerifyResult) -> None:
    if not result.ok:
        log.error("refusing to checkpoint: %s", result.reason)
        raise ChainBroken(
            f"the trail fails verification, no checkpoint signed: {result.reason}",
            first_bad_sequence=result.first_bad_sequence,
        )


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
