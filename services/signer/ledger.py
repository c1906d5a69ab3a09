"""The signer's ledger: every signature it made, hash-chained, its head anchored on the HSM token.

What the signer has signed decides what it may sign next: one signature per
(intent, step) and per (key, chain, nonce), the velocity a vault has used. A row
that whoever can write the database deletes or rewrites (an amount set to zero, a
record removed so its approvals sign again) must not change those answers.

So the signing records form a chain: each carries its place (``ledger_seq``), the
hash of the record before it and its own hash over every field. The signer keeps in
memory a summary of every record it verified (:class:`Ledger`), and answers from it;
records other signer processes add are read as they come (:meth:`Ledger.sync`), each
checked against the chain. The head (sequence and hash) is written to the HSM token
after each commit (a background writer coalesces them: :class:`HeadAnchor`), so a
signer that starts afresh replays the chain and refuses one that is shorter than, or
differs from, the head it anchored.

Appends are serialised: the committing transaction holds the ledger lock (a
transaction-scoped advisory lock on PostgreSQL; SQLite's write transaction excludes
every other writer), reads what others appended since, checks the conflicts and the
velocity against the whole ledger, then chains its records.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection, bindparam, select, text
from sqlalchemy.orm import Session

from services.runtime.intent import canonical_json
from services.signer.errors import LedgerUnverified
from services.signer.models import SigningRecord

RECORD_DOMAIN = "custos.signer.record.v1"
GENESIS = bytes(32)
#: The token data object holding the ledger head this installation anchored.
HEAD_LABEL = "custos.signer.ledger-head"
#: Velocity windows are at most this long (the policy document's own bound): older amounts are dropped.
KEEP_AMOUNTS = timedelta(days=367)
# First key of the two-key advisory lock that serialises appends on PostgreSQL.
_LEDGER_LOCK = 0x6C656467  # "ledg"
_R = SigningRecord
_COLUMNS = tuple(SigningRecord.__table__.columns)
_AFTER = (
    select(*_COLUMNS)
    .where(_R.ledger_seq > bindparam("after"))
    .order_by(_R.ledger_seq)
    .limit(bindparam("limit"))
)
_BY_ID = select(*_COLUMNS).where(_R.record_id == bindparam("record_id"))
_BATCH = 1000
log = logging.getLogger(__name__)


def record_hash(r: SigningRecord) -> bytes:
    """SHA-256 over the canonical encoding of every field of ``r`` but its own hash."""
    body = canonical_json(
        {
            "domain": RECORD_DOMAIN,
            "seq": r.ledger_seq,
            "prev_hash": r.prev_hash,
            "record_id": r.record_id,
            "intent_id": r.intent_id,
            "step": r.step,
            "attempt": r.attempt,
            "key_id": r.key_id,
            "chain": r.chain,
            "nonce": r.nonce,
            "intent_digest": bytes(r.intent_digest),
            "payload_digest": bytes(r.payload_digest),
            "signing_digest": bytes(r.signing_digest),
            "signature": bytes(r.signature),
            "signed_tx": bytes(r.signed_tx),
            "tx_hash": r.tx_hash,
            "replacement": bool(r.replacement),
            "replaces_id": r.replaces_id,
            "created_at": r.created_at,
            "vault_id": r.vault_id,
            "action": r.action,
            "amount": r.amount,
        }
    )
    return hashlib.sha256(body).digest()


@dataclass(frozen=True, slots=True)
class Entry:
    """What the ledger keeps of one record: enough to answer, and its hash to check the rest."""

    seq: int
    record_id: str
    intent_id: str
    step: str
    attempt: int
    key_id: str
    chain: str
    nonce: int
    payload_digest: bytes
    signing_digest: bytes
    hash: bytes
    vault_id: str
    action: str
    amount: int
    created_at: datetime


def _entry(r: SigningRecord) -> Entry:
    return Entry(
        seq=int(r.ledger_seq),
        record_id=r.record_id,
        intent_id=r.intent_id,
        step=r.step,
        attempt=r.attempt,
        key_id=r.key_id,
        chain=r.chain,
        nonce=int(r.nonce),
        payload_digest=bytes(r.payload_digest),
        signing_digest=bytes(r.signing_digest),
        hash=bytes(r.record_hash),
        vault_id=r.vault_id,
        action=r.action,
        amount=int(r.amount or 0),
        created_at=r.created_at,
    )


@dataclass(frozen=True)
class SignedAmount:
    """One intent's first signature for a vault: what velocity counts."""

    intent_id: str
    action: str
    amount: int
    created_at: datetime


#: Whether a record's signature is one the signer's HSM made over its signing digest, with the
#: key the record names: a problem ("names a key the HSM does not hold"), or None.
RecordCheck = Callable[[SigningRecord], "str | None"]


class LedgerRace(Exception):
    """Inside the committing transaction: another Sign took this step or nonce since the checks ran.
    The caller reads the winner (a replay of the same payload, or a refusal)."""


class DataStore(Protocol):
    def load_data(self, label: str) -> bytes | None: ...

    def store_data(self, label: str, value: bytes, *, generation: int | None = None) -> None: ...


@dataclass
class _State:
    head_seq: int = 0
    head_hash: bytes = GENESIS
    by_step: dict[tuple[str, str], list[Entry]] = field(default_factory=dict)
    by_nonce: dict[tuple[str, str, int], list[Entry]] = field(default_factory=dict)
    by_id: dict[str, Entry] = field(default_factory=dict)
    #: Signing digests of the records: each signature is in the ledger once.
    digests: set[bytes] = field(default_factory=set)
    amounts: dict[str, dict[str, SignedAmount]] = field(default_factory=dict)


class Ledger:
    """The verified signing records of this installation, in memory (thread-safe).

    The hash chain and the anchored head stop a record from being altered or removed; the
    chain's hash is no secret, though, so whoever writes the database could append a record
    of their own. ``check`` stops that: a record read from the database counts only if its
    signature is the HSM's over a digest no other record holds, and only the signer has the
    HSM sign, recording each signature it releases once.

    Args:
        anchor: Writes the head to the HSM token (None: nothing outside the database
            remembers it, for tests that do not play a truncated ledger).
        check: Whether a record's signature is the HSM's (None: not checked, for tests
            of the chain alone).
    """

    def __init__(self, anchor: HeadAnchor | None = None, check: RecordCheck | None = None) -> None:
        self._state = _State()
        self._lock = threading.RLock()
        self._anchor = anchor
        self._check = check
        self.broken: str | None = None
        #: While loading: (the anchored sequence, where to put the hash found there).
        self._watch: tuple[int, list[bytes]] | None = None

    # --- reading the chain ----------------------------------------------------------------

    def load(self, conn: Connection | Session) -> None:
        """Replays the whole chain and checks it against the anchored head (at start-up)."""
        anchored = self._anchor.anchored if self._anchor is not None else None
        seen_at_anchor: list[bytes] = []
        with self._lock:
            self._watch = (anchored[0], seen_at_anchor) if anchored is not None else None
            try:
                self.sync(conn)
            finally:
                self._watch = None
            if anchored is None:
                return
            seq, digest = anchored
            if self._state.head_seq < seq:
                self.broken = (
                    f"the signing records end at {self._state.head_seq}, but the HSM remembers {seq}: "
                    "records were removed"
                )
            elif seen_at_anchor != [digest]:
                self.broken = f"signing record {seq} differs from the one anchored on the HSM"
            if self.broken is not None:
                log.critical("ALERT: the signer's ledger does not verify: %s", self.broken)
                raise LedgerUnverified(self.broken)

    def sync(self, conn: Connection | Session) -> None:
        """Reads and verifies the records appended after the last one seen.

        The database is read without the ledger's own lock held (the committing thread takes
        that lock inside its transaction: holding it while waiting for the database would
        deadlock the two); rows another thread added meanwhile are skipped.
        """
        while True:
            with self._lock:
                if self.broken is not None:
                    raise LedgerUnverified(self.broken)
                after = self._state.head_seq
            rows = conn.execute(_AFTER, {"after": after, "limit": _BATCH}).all()
            with self._lock:
                for row in rows:
                    if row.ledger_seq > self._state.head_seq:
                        self._verify_and_add(SigningRecord(**row._mapping))
            if len(rows) < _BATCH:
                return

    def _verify_and_add(self, r: SigningRecord) -> None:
        s = self._state
        problem = None
        if r.ledger_seq != s.head_seq + 1:
            problem = f"signing record {r.ledger_seq} follows {s.head_seq}: records were removed"
        elif r.prev_hash is None or bytes(r.prev_hash) != s.head_hash:
            problem = f"signing record {r.ledger_seq} does not link to the one before it"
        elif r.record_hash is None or bytes(r.record_hash) != record_hash(r):
            problem = f"signing record {r.ledger_seq} was altered (its hash does not match)"
        elif bytes(r.signing_digest) in s.digests:
            problem = f"signing record {r.ledger_seq} repeats a signature already in the ledger"
        elif self._check is not None and (why := self._check(r)) is not None:
            problem = f"signing record {r.ledger_seq} is not the signer's: {why}"
        if problem is not None:
            self.broken = problem
            log.critical("ALERT: the signer's ledger does not verify: %s", problem)
            raise LedgerUnverified(problem)
        if self._watch is not None and r.ledger_seq == self._watch[0]:
            self._watch[1].append(bytes(r.record_hash))
        self._add(_entry(r))

    def _add(self, e: Entry) -> None:
        s = self._state
        s.by_step.setdefault((e.intent_id, e.step), []).append(e)
        s.by_nonce.setdefault((e.key_id, e.chain, e.nonce), []).append(e)
        s.by_id[e.record_id] = e
        s.digests.add(e.signing_digest)
        if e.attempt == 0 and e.vault_id:
            s.amounts.setdefault(e.vault_id, {}).setdefault(
                e.intent_id, SignedAmount(e.intent_id, e.action, e.amount, e.created_at)
            )
        s.head_seq, s.head_hash = e.seq, e.hash

    # --- answering ------------------------------------------------------------------------

    def conflicts(
        self, *, intent_id: str, step: str, key_id: str, chain: str, nonce: int
    ) -> tuple[Entry | None, Entry | None]:
        """The newest signature of the intent step, and the newest for (key, chain, nonce)."""
        with self._lock:
            s = self._state
            for_step = s.by_step.get((intent_id, step), [])
            for_nonce = s.by_nonce.get((key_id, chain, nonce), [])
            return (
                max(for_step, key=lambda e: e.attempt, default=None),
                max(for_nonce, key=lambda e: e.attempt, default=None),
            )

    def signed_amounts(self, vault_id: str, since: datetime) -> list[SignedAmount]:
        """What was signed for ``vault_id`` after ``since``: each intent once (its first signature)."""
        with self._lock:
            found = self._state.amounts.get(vault_id, {})
            return [a for a in found.values() if a.created_at > since]

    def entry(self, record_id: str) -> Entry | None:
        with self._lock:
            return self._state.by_id.get(record_id)

    def fetch(self, conn: Connection | Session, record_id: str) -> SigningRecord:
        """The full stored record of a verified entry, checked against the hash the ledger holds."""
        e = self.entry(record_id)
        row = conn.execute(_BY_ID, {"record_id": record_id}).one_or_none()
        record = SigningRecord(**row._mapping) if row is not None else None
        if e is None or record is None or record_hash(record) != e.hash or record.ledger_seq != e.seq:
            with self._lock:
                self.broken = f"signing record {record_id} is missing or altered in the database"
            log.critical("ALERT: the signer's ledger does not verify: %s", self.broken)
            raise LedgerUnverified(self.broken)
        return record

    @property
    def head(self) -> tuple[int, bytes]:
        with self._lock:
            return self._state.head_seq, self._state.head_hash

    # --- appending ------------------------------------------------------------------------

    def lock(self, session: Session) -> None:
        """Takes the ledger lock for the rest of ``session``'s transaction, then reads what others
        appended meanwhile: the conflict and velocity checks that follow see the whole ledger."""
        if session.info.get("ledger_locked"):
            # Once per transaction: from then on nobody else appends, and reading again would
            # take this transaction's own uncommitted records for committed ones.
            return
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:c, 0)"), {"c": _LEDGER_LOCK})
        # SQLite: the committing transaction began with BEGIN IMMEDIATE (runtime.db)
        self.sync(session)
        session.info["ledger_locked"] = True

    def chain(self, session: Session, record: SigningRecord) -> SigningRecord:
        """``record`` placed after the records ``session`` has chained so far (``lock`` first).

        The new records join the ledger only once their transaction has committed
        (:meth:`committed`, with ``pending(session)``).
        """
        pending: list[SigningRecord] = session.info.setdefault("ledger_pending", [])
        seq, prev = (pending[-1].ledger_seq, pending[-1].record_hash) if pending else self.head
        placed = replace_record(record, ledger_seq=seq + 1, prev_hash=prev)
        placed.record_hash = record_hash(placed)
        pending.append(placed)
        return placed

    def pending_amounts(self, session: Session, vault_id: str) -> list[SignedAmount]:
        """First signatures for ``vault_id`` chained in ``session`` but not yet committed."""
        return [
            SignedAmount(r.intent_id, r.action, int(r.amount), r.created_at)
            for r in session.info.get("ledger_pending", [])
            if r.vault_id == vault_id and r.attempt == 0
        ]

    def taken(self, session: Session, record: SigningRecord) -> bool:
        """Whether the ledger (or what ``session`` chained before) holds a record with ``record``'s
        (intent, step, attempt) or (key, chain, nonce, attempt): another Sign got there first."""
        step = (record.intent_id, record.step, record.attempt)
        nonce = (record.key_id, record.chain, record.nonce, record.attempt)
        for r in session.info.get("ledger_pending", []):
            if (r.intent_id, r.step, r.attempt) == step or (r.key_id, r.chain, r.nonce, r.attempt) == nonce:
                return True
        with self._lock:
            s = self._state
            return any(e.attempt == record.attempt for e in s.by_step.get(step[:2], [])) or any(
                e.attempt == record.attempt
                for e in s.by_nonce.get((record.key_id, record.chain, record.nonce), [])
            )

    def committed(self, info: dict[str, Any]) -> None:
        """The transaction holding ``info['ledger_pending']`` committed: its records join the ledger
        (unless a sync read them already) and the new head goes to the HSM before any of their
        signatures leaves (raises the HSM's error when it cannot: the callers are refused)."""
        pending: list[SigningRecord] = info.get("ledger_pending", [])
        if not pending:
            return
        with self._lock:
            for r in pending:
                if r.ledger_seq == self._state.head_seq + 1:
                    self._add(_entry(r))
            head = self.head
        if self._anchor is not None:
            self._anchor.ensure(*head)

    def ensure_anchored(self, seq: int) -> None:
        """Before a replay hands out record ``seq``'s signature: the token holds a head covering it
        (its signer process may have committed it and failed to anchor, or crashed in between)."""
        if self._anchor is not None:
            head_seq, digest = self.head  # the ledger holds the record: its head is at seq or later
            if seq > head_seq:
                raise LedgerUnverified(f"signing record {seq} is past the verified head {head_seq}")
            self._anchor.ensure(head_seq, digest)


def replace_record(r: SigningRecord, **changes: Any) -> SigningRecord:
    """A copy of ``r`` (a detached ORM row) with ``changes``."""
    values = {c.key: getattr(r, c.key) for c in SigningRecord.__table__.columns}
    values.update(changes)
    return SigningRecord(**values)


class HeadAnchor:
    """Keeps the ledger head on the HSM token, never backwards.

    A signature leaves the signer only once the head covering its record is on the token
    (:meth:`ensure`, called after each group commit and before a replay answers): whoever can
    write the database cannot cut a record the signer released, even across a crash. One
    token write per batch (measured: about 3 ms on SoftHSM here). Several signer processes
    write the same label in any order: the token keeps the highest sequence
    (``Hsm.store_data``'s ``generation``).
    """

    #: Token writes tried before a Sign is refused (SoftHSM's file store, written by several
    #: processes at once, sometimes fails one).
    ATTEMPTS = 3

    def __init__(self, store: DataStore, *, label: str = HEAD_LABEL) -> None:
        self._store = store
        self._label = label
        self._lock = threading.Lock()
        raw = store.load_data(label)
        self.anchored: tuple[int, bytes] | None = None
        if raw is not None:
            data = json.loads(raw)
            self.anchored = (int(data["seq"]), bytes.fromhex(data["hash"]))

    def ensure(self, seq: int, digest: bytes) -> None:
        """Returns once the token holds a head at ``seq`` or later; raises the HSM's error if it cannot."""
        with self._lock:
            if self.anchored is not None and seq <= self.anchored[0]:
                return
            value = json.dumps({"seq": seq, "hash": digest.hex()}, sort_keys=True).encode()
            for attempt in range(1, self.ATTEMPTS + 1):
                try:
                    self._store.store_data(self._label, value, generation=seq)
                    break
                except Exception as e:
                    log.warning(
                        "could not anchor the signing ledger's head on the HSM (attempt %d of %d): %s",
                        attempt,
                        self.ATTEMPTS,
                        type(e).__name__,
                    )
                    if attempt == self.ATTEMPTS:
                        raise
            self.anchored = (seq, digest)
