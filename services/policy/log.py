"""Reading the governance log and keeping a verified state of it.

:class:`VerifiedLog` holds the :class:`~services.policy.governance.GovernedState` that
the entries read so far establish, each verified against the trust root before it
is applied. Every reader (the policy service before it appends, the signer before
every signature) calls :meth:`VerifiedLog.advance`, which reads only the entries
after the last one it verified: one indexed query when nothing changed.

Entries it has verified are never read again, so rewriting them in the database
changes nothing for a running reader; a reader that starts afresh replays the whole
log, and a rewrite then breaks a hash link or a signature (the signer also compares
the replay with the head it keeps in its HSM: see ``services.signer.trust``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from services.policy.errors import GovernanceInvalid
from services.policy.governance import (
    Change,
    ChangeRequest,
    Entry,
    GovernedState,
    GovernedView,
    TrustRoot,
    entry_from_plain,
)
from services.policy.models import GovernanceEntryRow
from services.runtime.errors import CustosError
from services.runtime.intent import Approval

_L = GovernanceEntryRow
_AFTER = (
    select(_L.seq, _L.prev_hash, _L.hash, _L.entry)
    .where(_L.seq > bindparam("after"))
    .order_by(_L.seq)
    .limit(bindparam("limit"))
)
_BATCH = 500


@dataclass(frozen=True)
class Head:
    """Where a verified log stands: the last entry's sequence and hash (0 and zeros at genesis)."""

    seq: int
    hash: bytes


def read_entry(seq: int, prev_hash: bytes, digest: bytes, text: str, *, check_prev: bool = True) -> Entry:
    """The entry stored in one row (or served by ``ListGovernanceEntries``), checked against the
    sequence and hash stored with it (and the previous hash, when given)."""
    try:
        entry = entry_from_plain(json.loads(text))
    except (ValueError, TypeError, RecursionError):
        raise GovernanceInvalid(f"governance entry {seq} is not JSON") from None
    if (
        entry.seq != seq
        or entry.hash() != bytes(digest)
        or (check_prev and entry.prev_hash != bytes(prev_hash))
    ):
        raise GovernanceInvalid(f"governance entry {seq} does not match its stored hash or position")
    return entry


def entries_after(conn: Connection | Session, after: int, limit: int = _BATCH) -> list[Entry]:
    rows = conn.execute(_AFTER, {"after": after, "limit": limit}).all()
    return [read_entry(seq, prev, digest, text) for seq, prev, digest, text in rows]


class VerifiedLog:
    """The governed state established by the entries verified so far (thread-safe).

    Args:
        trust: The pinned admins and quorum every entry must be signed by.
        on_entry: Called with each entry right after it was verified and applied
            (the signer records the head it reached outside the database).
    """

    def __init__(self, trust: TrustRoot, *, on_entry: Callable[[Entry], None] | None = None) -> None:
        self.trust = trust
        self._state = GovernedState()
        self._view = self._state.view()
        self._lock = threading.Lock()
        self._on_entry = on_entry
        #: Set when an entry failed verification: the log is not trusted again in this process.
        self.broken: str | None = None

    @property
    def head(self) -> Head:
        return Head(self._state.head_seq, self._state.head_hash)

    def advance(self, conn: Connection | Session) -> GovernedView:
        """Reads and verifies the entries after the last verified one; returns the view at the head.

        Raises GovernanceInvalid if an entry does not verify; from then on this log
        refuses to answer (a forged entry is not skipped: what comes after it
        cannot be trusted either).
        """
        with self._lock:
            if self.broken is not None:
                raise GovernanceInvalid(self.broken)
            moved = False
            while True:
                batch = entries_after(conn, self._state.head_seq)
                for entry in batch:
                    try:
                        self._state.apply(entry, self.trust)
                        if self._on_entry is not None:
                            self._on_entry(entry)
                    except CustosError as e:
                        self.broken = e.message
                        raise
                    moved = True
                if len(batch) < _BATCH:
                    break
            if moved:
                self._view = self._state.view()
            return self._view

    def next_entry(
        self, request: ChangeRequest, approvals: Sequence[Approval], applied_at: datetime
    ) -> Entry:
        """The entry that would apply ``request`` at the head (see GovernedState.next_entry).

        Call it right after :meth:`advance` in the transaction that will append it.
        """
        with self._lock:
            return self._state.next_entry(request, approvals, self.trust, applied_at)

    def check(self, change: Change) -> None:
        """Raises ChangeInvalid unless ``change`` applies at the head."""
        with self._lock:
            self._state.check(change)
