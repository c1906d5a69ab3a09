"""What the signer may rely on about approvers and policy: only what the admin quorum proved.

The signer never reads the approver tables or a version's status. It replays the
governance log (``services.policy.log.VerifiedLog``), verifying every entry against
the trust root pinned in its own configuration, and takes from it the registry and
the active policy version; the policy document is read by its hash-checked address.

A replay from an empty process could be fooled by a log cut short (an attacker who
can write the database deletes the last entries: a key revocation, a policy change).
So the signer remembers the head it verified outside the database, on its HSM token
(:class:`HeadGuard`): a log that no longer holds that entry, or is shorter, is refused.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from services.policy.document import Policy
from services.policy.governance import Entry, GovernedView, TrustRoot
from services.policy.log import Head, VerifiedLog
from services.policy.service import PolicyService
from services.runtime.db import utcnow
from services.signer.errors import GovernanceUnverified, NoActivePolicy

log = logging.getLogger(__name__)

#: The token data object holding the last governance head this installation verified.
HEAD_LABEL = "custos.signer.governance-head"


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
    """Refuses a governance log that does not extend the head this installation last verified.

    Every signer process of an installation shares the token, so the remembered head
    is the furthest any of them verified (a lagging process never moves it back).
    """

    def __init__(self, store: DataStore | None, *, trust_fingerprint: str, label: str = HEAD_LABEL) -> None:
        self._store = store
        self._label = label
        self._fingerprint = trust_fingerprint
        self._remembered = self._load()

    def _load(self) -> Head | None:
        if self._store is None:
            return None
        raw = self._store.load_data(self._label)
        if raw is None:
            return None
        data = json.loads(raw)
        if data.get("trust") != self._fingerprint:
            # A new trust root (admins rotated) starts a new history: nothing to compare with.
            log.warning("the trust root changed since the last verified governance head; starting afresh")
            return None
        return Head(int(data["seq"]), bytes.fromhex(data["hash"]))

    def on_entry(self, entry: Entry) -> None:
        r = self._remembered
        if r is not None and entry.seq == r.seq and entry.hash() != r.hash:
            raise GovernanceUnverified(
                f"governance entry {r.seq} differs from the one this signer verified: the log was rewritten"
            )

    def reached(self, head: Head) -> None:
        r = self._remembered
        if r is not None and head.seq < r.seq:
            raise GovernanceUnverified(
                f"the governance log ends at entry {head.seq}, but this signer verified entry {r.seq}: "
                "entries were removed"
            )
        if self._store is not None and (r is None or head.seq > r.seq):
            value = {"seq": head.seq, "hash": head.hash.hex(), "trust": self._fingerprint}
            self._store.store_data(self._label, json.dumps(value, sort_keys=True).encode())
            self._remembered = head


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

    def authority(self) -> Authority:
        """The registry and active policy as the log proves them now.

        Raises GovernanceUnverified when the log does not verify (or was cut short),
        NoActivePolicy before the first activation.
        """
        with self._engine.connect() as conn:
            try:
                governed = self._log.advance(conn)
            except GovernanceUnverified:
                raise
            except Exception as e:
                message = getattr(e, "message", type(e).__name__)
                raise GovernanceUnverified(f"the governance log does not verify: {message}") from None
        self._guard.reached(self._log.head)
        if not governed.active_policy:
            raise NoActivePolicy("no policy version has been activated by the admin quorum yet")
        return Authority(self._policy(governed.active_policy), governed)

    def _policy(self, version: str) -> Policy:
        policy = self._parsed.get(version)
        if policy is None:  # the document's hash is checked against its version when loaded
            policy = self._parsed[version] = self._documents.load(version)
        return policy
