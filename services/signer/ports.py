"""What the signer needs from other components, as narrow protocols.

The signer trusts no caller: it loads the policy requirement and the approver
registry itself (through :class:`PolicySource`), decodes the transaction itself
(through :class:`TransactionDecoder`), and writes its audit entry in the same
database transaction as the signing record (through :class:`AuditWriter`).
Implementations live with their owners; tests supply real ones where they exist.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.orm import Session

from services.policy.domain import ApproverInfo, RegistrySnapshot, Requirement
from services.policy.errors import PolicyNotFound
from services.runtime.intent import IntentSpec


class PolicySource(Protocol):
    """The signer's read-only view of the policy service's state."""

    def requirement_and_registry(
        self, policy_version: str, spec: IntentSpec, initiator: str
    ) -> tuple[Requirement, RegistrySnapshot]:
        """The requirement that ``policy_version`` sets for ``spec``, and the approver registry.

        The registry (keys, groups, revocations) is current as of the call (never a
        state older than the moment it was made), and the requirement's groups are
        resolved against that same registry. Raises a
        ``CustosError`` (NotFound, or a deny as FailedPrecondition) when the version
        does not exist or does not allow the intent.
        """
        ...


class TransactionDecoder(Protocol):
    """The chain's decoder: is this unsigned transaction exactly the approved intent?"""

    def check(self, *, chain: str, unsigned_tx: bytes, spec: IntentSpec, sender: str) -> None:
        """Returns when ``unsigned_tx``, sent by ``sender``, is exactly ``spec``.

        Raises a ``CustosError`` saying what differs (recipient contract, value,
        calldata: validator pubkey, withdrawal credentials, amount...).
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
    """A :class:`PolicySource` over fixed data: for the demo, benchmarks and tests.

    Every intent gets its version's one requirement; production reads the policy
    service's store instead.
    """

    requirements: dict[str, Requirement] = field(default_factory=dict)
    registry: dict[str, ApproverInfo] = field(default_factory=dict)

    def requirement_and_registry(
        self, policy_version: str, spec: IntentSpec, initiator: str
    ) -> tuple[Requirement, RegistrySnapshot]:
        try:
            return self.requirements[policy_version], self.registry
        except KeyError:
            raise PolicyNotFound(f"no policy version {policy_version!r}") from None
