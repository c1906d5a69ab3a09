"""Governed changes in tests: admins with real keys, a trust root pinning them, and a way to
push a change through the quorum the way admins do (each signature made with the admin's key)."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.asymmetric import ed25519

from services.policy.changes import ChangeView, Governance
from services.policy.domain import SignatureScheme
from services.policy.evidence import PrivateKey, public_key_der, scheme_of, sign_approval
from services.policy.governance import (
    GOVERNANCE_VERSION,
    ActivatePolicy,
    AdminKey,
    Change,
    ChangeRequest,
    ChangeState,
    RegisterApprover,
    TrustRoot,
    new_request,
)
from services.runtime.intent import Approval, Decision


@dataclass
class Admins:
    """Admins with private keys; ``trust`` pins their public keys with ``quorum``."""

    keys: dict[str, PrivateKey] = field(
        default_factory=lambda: {f"adm{i}": ed25519.Ed25519PrivateKey.generate() for i in range(3)}
    )
    quorum: int = 1

    def trust(self) -> TrustRoot:
        return TrustRoot(
            tuple(AdminKey(n, scheme_of(k), public_key_der(k)) for n, k in self.keys.items()), self.quorum
        )

    def sign(self, who: str, request: ChangeRequest, decision: Decision = Decision.APPROVE) -> Approval:
        return sign_approval(
            self.keys[who],
            approver_id=who,
            intent_digest=request.digest(),
            policy_version=GOVERNANCE_VERSION,
            decision=decision,
            expires_at=request.expires_at,
        )

    def request(self, change: Change, now: datetime, proposer: str = "adm0") -> ChangeRequest:
        return new_request(
            change,
            change_id="chg-" + secrets.token_hex(8),
            proposer=proposer,
            expires_at=now + timedelta(hours=1),
        )


def govern(
    gov: Governance,
    admins: Admins,
    change: Change,
    now: datetime,
    *,
    proposer: str = "adm0",
    approvers: Sequence[str] = ("adm1",),
) -> ChangeView:
    """Proposes ``change`` as ``proposer`` and has ``approvers`` approve it; returns where it stands."""
    request = admins.request(change, now, proposer)
    view = gov.propose(request, admins.sign(proposer, request), caller=proposer)
    for who in approvers:
        if view.state is not ChangeState.PROPOSED:
            break
        view = gov.decide(request.change_id, admins.sign(who, request), caller=who)
    return view


def register(
    gov: Governance,
    admins: Admins,
    people: Iterable[tuple[str, Iterable[str], PrivateKey]],
    now: datetime,
) -> None:
    """Registers each (approver id, groups, key) through the quorum."""
    for name, groups, key in people:
        scheme = SignatureScheme.ED25519 if isinstance(key, ed25519.Ed25519PrivateKey) else scheme_of(key)
        view = govern(
            gov, admins, RegisterApprover(name, name, tuple(groups), scheme, public_key_der(key)), now
        )
        assert view.state is ChangeState.APPLIED, view


def activate(gov: Governance, admins: Admins, version: str, now: datetime) -> ChangeView:
    view = govern(gov, admins, ActivatePolicy(version, gov.current().active_policy), now)
    assert view.state is ChangeState.APPLIED, view
    return view
