"""What the signer needs from other components, as narrow protocols.

The signer trusts no caller: it takes the active policy and the approver registry
from what the admin quorum proved (through :class:`PolicySource`), evaluates the
intent and judges the approvals itself, decodes the transaction itself
(with its own copy of the chain's family, ``services.families``), and writes its audit entry in the same
database transaction as the signing record (through :class:`AuditWriter`).
Implementations live with their owners; tests supply real ones where they exist.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.orm import Session

from services.policy.document import Policy
from services.policy.domain import ApproverInfo
from services.policy.governance import GovernedView
from services.signer.trust import Authority


class PolicySource(Protocol):
    """The signer's read of the facts approvals are judged by."""

    def authority(self) -> Authority:
        """The active policy and the approver registry, as established by the admin quorum.

        Current as of the call (a revocation committed before it is seen). Raises a
        ``CustosError`` when they cannot be established (the log does not verify, no
        policy is active yet).
        """
        ...


class AuditWriter(Protocol):
    def record(self, actor: str, action: str, subject: str, outcome: str, payload: dict[str, Any]) -> None:
        """Appends one audit entry; raising makes the caller roll back and refuse."""
        ...


#: Binds an audit writer to the signer's open database transaction, so the signing
#: record and its audit entry commit together (or not at all).
AuditWriterFactory = Callable[[Session], AuditWriter]


@dataclass
class StaticPolicySource:
    """A :class:`PolicySource` of fixed facts (an active policy and a registry), for tests and
    benchmarks of the signer's own checks; production replays the governance log instead
    (``services.signer.trust.GovernedPolicyView``)."""

    policy: Policy
    registry: dict[str, ApproverInfo] = field(default_factory=dict)

    def authority(self) -> Authority:
        directory: dict[str, set[str]] = {}
        for a in self.registry.values():
            for g in a.groups:
                directory.setdefault(g, set()).add(a.approver_id)
        view = GovernedView(
            head_seq=0,
            head_hash=bytes(32),
            active_policy=self.policy.version,
            approvers=dict(self.registry),
            directory={g: frozenset(m) for g, m in directory.items()},
        )
        return Authority(self.policy, view)
