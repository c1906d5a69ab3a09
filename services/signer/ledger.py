"""The signer's ledger: every signature it made, hash-chained, its head anchored on the HSM token.

What the signer has signed decides what it may sign next: one signature per
(intent, step) and per (key, chain, nonce), the velocity a vault has used. A row
that whoever can write the database deletes or rewrites (an amount set to zero, a
record removed so its approvals sign again) must not change those answers.

So the signing records form a chain: each carries its place (``ledger_seq``), the
hash of the record before it and its own hash over every field. The signer keeps in
memory a summary of every record it verified (:class:`Ledger`), and answers from it;
records other signer processes add are read as they come (:meth:`Ledger.sync`), each
checked against the chain and against the HSM (its signature must be the HSM key's,
over a digest no other record holds). Before each batch is committed, its head goes to
the HSM token (:mod:`services.signer.anchor`): no signature is in the database, let
alone released, before the token covers it, and a signer that finds the chain shorter
than, or different from, the token's head signs nothing.

Appends are serialised: the committing transaction holds the ledger lock (a
transaction-scoped advisory lock on PostgreSQL; SQLite's write transaction excludes
every other writer), reads what others appended since, checks the conflicts and the
velocity against the whole ledger, then chains its records.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, select, text
from sqlalchemy.orm import Session

from services.runtime.intent import canonical_json
from services.signer.anchor import HeadAnchor, TokenHead
from services.signer.entries import Entry, SignedAmount, entry_of
from services.signer.errors import LedgerUnverified
from services.signer.models import SigningRecord

RECORD_DOMAIN = "custos.signer.record.v1"
GENESIS = bytes(32)
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


#: Whether a record's signature is one the signer's HSM made over its signing digest, with the
#: key the record names: a problem ("names a key the HSM does not hold"), or None.
RecordCheck = Callable[[SigningRecord], "str | None"]


class LedgerRace(Exception):
    """Inside the committing transaction: another Sign took this step or nonce since the checks ran.
    The caller reads the winner (a replay of the same payload, or a refusal)."""


@dataclass
class _State:
    head_seq: int = 0
    head_hash: bytes = GENESIS
    by_step: dict[tuple[str, str], list[Entry]] = field(default_factory=dict)
    by_nonce: dict[tuple[str, str, int], list[Entry]] = field(default_factory=dict)
    by_id: dict[str, Entry] = field(default_factory=dict)
    #: Record hashes by sequence: the token's heads are checked against them.
    hashes: dict[int, bytes] = field(default_factory=dict)
    #: Signing digests of the records: each signature is in the ledger once.
    digests: set[bytes] = field(default_factory=set)
    #: (vault, chain) -> intent -> its first signature: velocity never adds two chains' base units.
    amounts: dict[tuple[str, str], dict[str, SignedAmount]] = field(default_factory=dict)
    #: Records the token names that the database lacks, by (intent, step, attempt, payload).
    lost: dict[tuple[str, str, int, bytes], Entry] = field(default_factory=dict)


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

    # --- reading the chain ----------------------------------------------------------------

    def load(self, conn: Connection | Session) -> None:
        """Replays the whole chain and checks it against the heads on the HSM token (at start-up).

        The chain is read first: a batch another process writes to the token meanwhile is at
        worst taken for lost, and its records resolve it when they are read.
        """
        with self._lock:
            self.sync(conn)
            self._settle([head for _, head in self._anchor.read()] if self._anchor is not None else [])

    def _settle(self, heads: list[TokenHead]) -> None:
        """The chain as read, against the token's heads (see :mod:`services.signer.anchor`)."""
        if not heads:
            return
        s = self._state

        def in_chain(seq: int, digest: bytes | None) -> bool:
            return (seq == 0 and digest == GENESIS) or (digest is not None and s.hashes.get(seq) == digest)

        ends, lost = False, []
        for head in heads:
            if in_chain(head.seq, head.hash):
                ends = ends or head.seq == s.head_seq
            elif head.prev_seq is not None and in_chain(head.prev_seq, head.prev_hash):
                ends = ends or head.prev_seq == s.head_seq
                lost.append(head)
            else:
                self._break(f"signing record {head.seq} differs from the one the HSM holds, or is missing")
        if not ends:
            self._break(
                f"the signing records end at {s.head_seq}, where no head the HSM holds ends or begins: "
                "records were removed, or added by someone other than a signer"
            )
        for head in lost:
            for e in head.batch:
                if self._add_lost(e.as_lost()):
                    log.warning(
                        "signing record %s (intent %s, step %s) is on the HSM but not in the database: "
                        "the signer stopped before its commit, or it was removed; only the same "
                        "transaction may be signed for that step again",
                        e.seq,
                        e.intent_id,
                        e.step,
                    )
        for head in heads:
            for e in head.lost:
                self._add_lost(e)

    def _break(self, problem: str) -> None:
        self.broken = problem
        log.critical("ALERT: the signer's ledger does not verify: %s", problem)
        raise LedgerUnverified(problem)

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
            self._break(problem)
        self._add(entry_of(r))

    def _add(self, e: Entry) -> None:
        s = self._state
        self._index(e)
        s.by_id[e.record_id] = e
        s.hashes[e.seq] = e.hash
        s.digests.add(e.signing_digest)
        s.lost.pop((e.intent_id, e.step, e.attempt, e.payload_digest), None)  # it did reach the database
        s.head_seq, s.head_hash = e.seq, e.hash

    def _add_lost(self, e: Entry) -> bool:
        """Keeps a lost record's step bound to its transaction and its amount counted; False if it
        was known already. Not its nonce: another approved transaction may take it (only one of the
        two can land), or a lost signature whose approvals expired would block the vault for good."""
        s = self._state
        key = (e.intent_id, e.step, e.attempt, e.payload_digest)
        stored = (x for x in s.by_step.get((e.intent_id, e.step), []) if not x.lost)
        if key in s.lost or any(
            x.attempt == e.attempt and x.same_transaction(e.intent_id, e.step, e.payload_digest)
            for x in stored
        ):
            return False
        s.lost[key] = e
        self._index(e)
        return True

    def _index(self, e: Entry) -> None:
        s = self._state
        s.by_step.setdefault((e.intent_id, e.step), []).append(e)
        if not e.lost:
            s.by_nonce.setdefault((e.key_id, e.chain, e.nonce), []).append(e)
        if e.attempt == 0 and e.vault_id:
            s.amounts.setdefault((e.vault_id, e.chain), {}).setdefault(
                e.intent_id, SignedAmount(e.intent_id, e.action, e.amount, e.created_at)
            )

    # --- answering ------------------------------------------------------------------------

    def conflicts(
        self, *, intent_id: str, step: str, key_id: str, chain: str, nonce: int
    ) -> tuple[Entry | None, Entry | None]:
        """The newest signature of the intent step, and the newest for (key, chain, nonce).

        Either may be a lost entry (``Entry.lost``: no record to read, only its payload)."""
        with self._lock:
            s = self._state
            for_step = s.by_step.get((intent_id, step), [])
            for_nonce = s.by_nonce.get((key_id, chain, nonce), [])
            return (
                max(for_step, key=_newest, default=None),
                max(for_nonce, key=_newest, default=None),
            )

    def signed_amounts(self, vault_id: str, chain: str, since: datetime) -> list[SignedAmount]:
        """What was signed for ``vault_id`` on ``chain`` after ``since``: each intent once (its
        first signature)."""
        with self._lock:
            found = self._state.amounts.get((vault_id, chain), {})
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
        if self._anchor is not None:
            # Every batch wrote its head to the token before its commit: the chain must end at a
            # head, or where one began if that batch never committed (or was cut).
            heads = self._anchor.read()
            with self._lock:
                self._settle([head for _, head in heads])
            session.info["ledger_heads"] = [raw for raw, _ in heads]  # what this commit's head replaces
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

    def pending_amounts(self, session: Session, vault_id: str, chain: str) -> list[SignedAmount]:
        """First signatures for ``vault_id`` on ``chain`` chained in ``session`` but not yet committed."""
        return [
            SignedAmount(r.intent_id, r.action, int(r.amount), r.created_at)
            for r in session.info.get("ledger_pending", [])
            if r.vault_id == vault_id and r.chain == chain and r.attempt == 0
        ]

    def taken(self, session: Session, record: SigningRecord) -> bool:
        """Whether the ledger (or what ``session`` chained before) holds a record with ``record``'s
        (intent, step, attempt) or (key, chain, nonce, attempt): another Sign got there first.
        A lost record of the same transaction is not in the way: this one signs it again."""
        step = (record.intent_id, record.step, record.attempt)
        nonce = (record.key_id, record.chain, record.nonce, record.attempt)
        for r in session.info.get("ledger_pending", []):
            if (r.intent_id, r.step, r.attempt) == step or (r.key_id, r.chain, r.nonce, r.attempt) == nonce:
                return True
        payload = bytes(record.payload_digest)

        def in_the_way(e: Entry) -> bool:
            return e.attempt == record.attempt and not (
                e.lost and e.same_transaction(record.intent_id, record.step, payload)
            )

        with self._lock:
            s = self._state
            return any(in_the_way(e) for e in s.by_step.get(step[:2], [])) or any(
                in_the_way(e) for e in s.by_nonce.get((record.key_id, record.chain, record.nonce), [])
            )

    def before_commit(self, info: dict[str, Any]) -> None:
        """Inside the committing transaction, holding the ledger lock: the token gets the head the
        batch in ``info['ledger_pending']`` ends at, before the database does. Raises the HSM's
        error when it cannot (the transaction then rolls back: nothing of the batch is kept)."""
        pending: list[SigningRecord] = info.get("ledger_pending", [])
        if not pending or self._anchor is None:
            return
        with self._lock:
            prev_seq, prev_hash = self.head
            lost = tuple(self._state.lost.values())
        last = pending[-1]
        self._anchor.write(
            TokenHead(
                seq=int(last.ledger_seq),
                hash=bytes(last.record_hash),
                prev_seq=prev_seq,
                prev_hash=prev_hash,
                batch=tuple(entry_of(r) for r in pending),
                lost=lost,
            ),
            replaces=info.get("ledger_heads", []),
        )

    def committed(self, info: dict[str, Any]) -> None:
        """The transaction holding ``info['ledger_pending']`` committed: its records join the ledger
        (unless a sync read them already)."""
        pending: list[SigningRecord] = info.get("ledger_pending", [])
        with self._lock:
            for r in pending:
                if r.ledger_seq == self._state.head_seq + 1:
                    self._add(entry_of(r))


def _newest(e: Entry) -> tuple[int, bool]:
    """Order of precedence: the highest attempt, a stored record before a lost one."""
    return e.attempt, not e.lost


def replace_record(r: SigningRecord, **changes: Any) -> SigningRecord:
    """A copy of ``r`` (a detached ORM row) with ``changes``."""
    values = {c.key: getattr(r, c.key) for c in SigningRecord.__table__.columns}
    values.update(changes)
    return SigningRecord(**values)
