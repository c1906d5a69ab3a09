"""What the signer may rely on about approvers and policy: only what the admin quorum proved.

The signer never reads the approver tables or a version's status. It replays the
governance log (``services.policy.log.VerifiedLog``), verifying every entry against
the trust root pinned in its own configuration, and takes from it the registry and
the active policy version; the policy document is read by its hash-checked address.

A replay from an empty process could be fooled by a log cut short (an attacker who
can write the database deletes the last entries: a key revocation, a policy change).
So the signer remembers the head it verified outside the database, on its HSM token
(:class:`HeadGuard`): a log that no longer holds that entry, or is shorter, is refused.

That guards only what the signer has read: an entry could still be cut before its next
read. So the policy service *anchors* each entry it appends (``AnchorGovernance``, as
``svc:policy``, :class:`GovernanceAnchors`): the signer reads the log through it at once
and remembers the head on the token. An anchored entry the log does not hold (deleted
first, or its insert turned into a no-op) is remembered too, and nothing is signed until
the log holds it. Only the holder of ``svc:policy`` can name an entry that was never
written, which stops signing (it never enables any) until an operator removes the token
object. With several signer processes on one token, the one the policy service reached
keeps the anchor; the others read the token again when their own head moves, or at start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from services.audit.writer import AuditWriter
from services.policy.document import Policy
from services.policy.governance import GENESIS, Entry, GovernedView, TrustRoot
from services.policy.log import Head, VerifiedLog
from services.policy.service import PolicyService
from services.runtime.db import utcnow
from services.runtime.errors import CustosError
from services.signer.errors import GovernanceAnchorMismatch, GovernanceUnverified, NoActivePolicy

log = logging.getLogger(__name__)

#: The token data object holding the last governance head this installation verified.
HEAD_LABEL = "custos.signer.governance-head"
ACTION_ANCHOR = "signer.anchor_governance"


class DataStore(Protocol):
    """Small values kept where the database cannot rewrite them (the HSM: ``Hsm.load_data``)."""

    def load_data(self, label: str) -> bytes | None: ...

    def store_data(self, label: str, value: bytes) -> None: ...


@dataclass(frozen=True)
class Authority:
    """The facts a Sign relies on, each established by verified governed changes."""

    policy: Policy
    governed: GovernedView


class HeadGuard:
    """Refuses a governance log that does not reach what this installation verified or anchored.

    The token (``store``) remembers the furthest head any signer process of the
    installation verified, and, while there is one, the *anchor*: an entry the policy
    service appended that the log did not hold yet (or held otherwise). Every process
    shares the token, and reads it again before writing, so neither ever moves back.
    Both are checked as the log is read (:meth:`on_entry`) and against the head each read
    reaches (:meth:`reached`, on every Sign: nothing but comparisons unless the head moved).
    """

    def __init__(self, store: DataStore | None, *, trust_fingerprint: str, label: str = HEAD_LABEL) -> None:
        self._store = store
        self._label = label
        self._fingerprint = trust_fingerprint
        self._lock = threading.Lock()
        self._remembered, self._anchor = self._load() if store is not None else (None, None)
        #: Each entry this process verified (an anchor of an earlier entry is checked against it).
        self._verified: dict[int, bytes] = {0: GENESIS}
        #: Set when an anchor contradicts an entry this process verified: it signs nothing more.
        self._contradicted: str | None = None

    @property
    def held(self) -> Head:
        """The head this installation remembers (genesis before any)."""
        return self._remembered or Head(0, GENESIS)

    def _load(self) -> tuple[Head | None, Head | None]:
        """The head and the anchor the token holds."""
        assert self._store is not None
        raw = self._store.load_data(self._label)
        if raw is None:
            return None, None
        data = json.loads(raw)
        if data.get("trust") != self._fingerprint:
            # A new trust root (admins rotated) starts a new history: nothing to compare with.
            log.warning("the trust root changed since the last verified governance head; starting afresh")
            return None, None
        anchor = data.get("anchor")
        return (
            Head(int(data["seq"]), bytes.fromhex(data["hash"])),
            Head(int(anchor["seq"]), bytes.fromhex(anchor["hash"])) if anchor else None,
        )

    def _save(
        self, head: Head | None, anchor: Head | None, on_token: tuple[Head | None, Head | None]
    ) -> None:
        if self._store is not None and (head, anchor) != on_token:
            value: dict[str, Any] = {"trust": self._fingerprint, **_plain(head or Head(0, GENESIS))}
            if anchor is not None:
                value["anchor"] = _plain(anchor)
            self._store.store_data(self._label, json.dumps(value, sort_keys=True).encode())
        self._remembered, self._anchor = head, anchor

    def _merged(self) -> tuple[Head | None, Head | None, tuple[Head | None, Head | None]]:
        """The head and anchor: each the further of this process's and the token's (another
        process of the installation may be further on), and what the token holds."""
        on_token = self._load() if self._store is not None else (self._remembered, self._anchor)
        return (
            self._further(self._remembered, on_token[0], "verified"),
            self._further(self._anchor, on_token[1], "anchored"),
            on_token,
        )

    def _further(self, mine: Head | None, theirs: Head | None, what: str) -> Head | None:
        if mine is None or theirs is None:
            return mine or theirs
        if mine.seq == theirs.seq and mine.hash != theirs.hash:
            raise self._contradict(f"two processes {what} different governance entries {mine.seq}")
        return mine if mine.seq >= theirs.seq else theirs

    def _contradict(self, reason: str) -> GovernanceUnverified:
        """Stops this process signing: what it verified and what it was told differ."""
        self._contradicted = f"{reason}: the log was rewritten"
        log.error("ALERT governance: %s", self._contradicted)
        return GovernanceUnverified(self._contradicted)

    def on_entry(self, entry: Entry) -> None:
        digest = entry.hash()
        r, a = self._remembered, self._anchor
        if r is not None and entry.seq == r.seq and digest != r.hash:
            raise GovernanceUnverified(
                f"governance entry {r.seq} differs from the one this signer verified: the log was rewritten"
            )
        if a is not None and entry.seq == a.seq and digest != a.hash:
            raise GovernanceUnverified(
                f"governance entry {a.seq} differs from the one the policy service anchored: "
                "the log was rewritten"
            )
        self._verified[entry.seq] = digest

    def reached(self, head: Head) -> None:
        """Checks the head a read of the log reached, and remembers it when it moved on.

        Raises GovernanceUnverified when the log stops short of the head remembered or
        of the anchor, or an anchor contradicted what this process verified.
        """
        if self._contradicted is not None:
            raise GovernanceUnverified(self._contradicted)
        r, a = self._remembered, self._anchor
        if a is None and r is not None and head.seq == r.seq:
            return  # nothing moved: every Sign but the first after a change passes here
        if a is not None and head.seq < a.seq:
            raise _missing(head, a)
        if r is not None and head.seq < r.seq:
            raise GovernanceUnverified(
                f"the governance log ends at entry {head.seq}, but this signer verified entry {r.seq}: "
                "entries were removed"
            )
        with self._lock:
            self._settle(head, *self._merged())

    def _settle(
        self, head: Head, r: Head | None, a: Head | None, on_token: tuple[Head | None, Head | None]
    ) -> None:
        """Remembers ``head`` (read and verified by this process) with what the token held."""
        if r is not None and r.seq <= head.seq and self._verified.get(r.seq) != r.hash:
            raise self._contradict(f"governance entry {r.seq} differs from the one another signer verified")
        if a is not None and a.seq <= head.seq:
            if self._verified.get(a.seq) != a.hash:
                raise self._contradict(f"governance entry {a.seq} is not the one the policy service anchored")
            a = None  # the log holds it
        self._save(head if r is None or head.seq > r.seq else r, a, on_token)

    def anchor(self, at: Head, head: Head) -> Head:
        """Checks ``at``, an entry the policy service appended, against the log this process
        read through ``head``; returns the head now remembered (``at`` or a later one).

        Raises GovernanceAnchorMismatch when the log does not hold ``at`` (it is then
        remembered as the anchor: :meth:`reached` refuses every read until the log holds
        it), or still lacks an entry anchored before.
        """
        with self._lock:
            r, a, on_token = self._merged()
            if at.seq <= head.seq and self._verified.get(at.seq) == at.hash:
                self._settle(head, r, a, on_token)
                if self._anchor is not None:  # a later entry, anchored before, is still missing
                    raise GovernanceAnchorMismatch(_missing(head, self._anchor).message)
                return self.held
            if a is not None and a.seq == at.seq and a.hash != at.hash:
                reason = self._contradict(f"the policy service anchored two different entries {at.seq}")
                raise GovernanceAnchorMismatch(reason.message)
            self._save(r, at if a is None or at.seq > a.seq else a, on_token)
            if at.seq <= head.seq:
                reason = self._contradict(
                    f"governance entry {at.seq} is not the one the policy service appended"
                )
                raise GovernanceAnchorMismatch(reason.message)
        raise GovernanceAnchorMismatch(_missing(head, at).message + "; this signer signs nothing until it is")


def _missing(head: Head, anchored: Head) -> GovernanceUnverified:
    return GovernanceUnverified(
        f"the governance log ends at entry {head.seq}, but the policy service anchored entry "
        f"{anchored.seq}: entries were removed, or never written"
    )


def _plain(head: Head) -> dict[str, Any]:
    return {"seq": head.seq, "hash": head.hash.hex()}


class GovernedPolicyView:
    """A :class:`~services.signer.ports.PolicySource` over the governance log and the policy documents.

    Args:
        reads: Sessions for reading (statements run on its engine, outside the ORM).
        trust: The trust root from the signer's own configuration.
        store: Where the verified head is remembered (the HSM); None only in tests
            that do not play a truncated log.
        head_label: The token object's label (one per installation sharing a token).
    """

    def __init__(
        self,
        reads: sessionmaker[Session],
        trust: TrustRoot,
        *,
        store: DataStore | None = None,
        head_label: str = HEAD_LABEL,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._engine = reads.kw["bind"]
        self._guard = HeadGuard(store, trust_fingerprint=trust.fingerprint(), label=head_label)
        self._log = VerifiedLog(trust, on_entry=self._guard.on_entry)
        self._documents = PolicyService(reads, clock=clock)  # loads a version and checks its hash
        self._parsed: dict[str, Policy] = {}

    def _read(self) -> GovernedView:
        with self._engine.connect() as conn:
            try:
                return self._log.advance(conn)
            except GovernanceUnverified:
                raise
            except Exception as e:
                message = getattr(e, "message", type(e).__name__)
                raise GovernanceUnverified(f"the governance log does not verify: {message}") from None

    def authority(self) -> Authority:
        """The registry and active policy as the log proves them now.

        Raises GovernanceUnverified when the log does not verify (or was cut short),
        NoActivePolicy before the first activation.
        """
        governed = self._read()
        self._guard.reached(self._log.head)
        if not governed.active_policy:
            raise NoActivePolicy("no policy version has been activated by the admin quorum yet")
        return Authority(self._policy(governed.active_policy), governed)

    def anchor(self, at: Head) -> Head:
        """Reads the log through ``at`` (an entry the policy service appended), checks that it
        holds exactly that entry, and remembers the head on the token; returns the head held.

        Raises GovernanceUnverified when the log does not verify, GovernanceAnchorMismatch
        when it does not hold ``at`` (nothing is signed until it does).
        """
        self._read()
        return self._guard.anchor(at, self._log.head)

    def _policy(self, version: str) -> Policy:
        policy = self._parsed.get(version)
        if policy is None:  # the document's hash is checked against its version when loaded
            policy = self._parsed[version] = self._documents.load(version)
        return policy


class GovernanceAnchors:
    """``AnchorGovernance``: the policy service's word that it appended an entry, checked and kept.

    Each call, anchored or refused, is an audit record (``signer.anchor_governance``).
    """

    def __init__(self, view: GovernedPolicyView, audit: AuditWriter) -> None:
        self._view = view
        self._audit = audit

    async def anchor(self, at: Head, *, actor: str) -> Head:
        """:meth:`anchor_blocking` off the event loop."""
        return await asyncio.to_thread(self.anchor_blocking, at, actor)

    def anchor_blocking(self, at: Head, actor: str) -> Head:
        subject = f"governance:{at.seq}"
        try:
            held = self._view.anchor(at)
        except CustosError as e:
            payload = {"hash": at.hash.hex(), "error": type(e).__name__, "reason": e.message[:300]}
            try:
                self._audit.record(ACTION_ANCHOR, subject, "refused", payload, actor=actor)
            except CustosError:
                log.error("could not audit the refusal to anchor governance entry %d", at.seq)
            raise
        anchored: dict[str, Any] = {"hash": at.hash.hex(), "head": held.seq, "head_hash": held.hash.hex()}
        self._audit.record(ACTION_ANCHOR, subject, "anchored", anchored, actor=actor)
        return held
