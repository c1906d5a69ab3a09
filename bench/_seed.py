"""Seeding a benchmark's database as an installation is seeded: through governed changes.

Two admins, pinned in a trust file written beside the database, register the given
approvers and activate the given policy document (each change proposed by one admin
and approved by the other), so the benchmarks measure the production path.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.orm import Session, sessionmaker

from services.policy.changes import Governance
from services.policy.domain import SignatureScheme
from services.policy.evidence import public_key_der, sign_approval
from services.policy.governance import (
    GOVERNANCE_VERSION,
    ActivatePolicy,
    AdminKey,
    Change,
    RegisterApprover,
    TrustRoot,
    new_request,
    trust_root_yaml,
)
from services.policy.service import PolicyService
from services.runtime.intent import Decision

ADMINS = ("adm0", "adm1")


def seed_governed(
    sessions: sessionmaker[Session],
    approvers: Mapping[str, tuple[tuple[str, ...], bytes]],
    document: str,
    state: Path,
) -> tuple[str, Path]:
    """Registers ``approvers`` (id -> (groups, Ed25519 DER key)) and activates ``document``.

    Returns the active version and the trust file the signer must be given.
    """
    keys = {name: Ed25519PrivateKey.generate() for name in ADMINS}
    pinned = tuple(AdminKey(n, SignatureScheme.ED25519, public_key_der(k)) for n, k in keys.items())
    trust_file = state / "trust.yaml"
    trust_file.write_text(trust_root_yaml(pinned, 1))
    governance = Governance(sessions, TrustRoot(pinned, 1))

    def govern(change: Change) -> None:
        request = new_request(
            change,
            change_id="chg-" + secrets.token_hex(8),
            proposer=ADMINS[0],
            expires_at=datetime.now(UTC) + timedelta(hours=1),
        )
        for who in ADMINS:
            approval = sign_approval(
                keys[who],
                approver_id=who,
                intent_digest=request.digest(),
                policy_version=GOVERNANCE_VERSION,
                decision=Decision.APPROVE,
                expires_at=request.expires_at,
            )
            if who == ADMINS[0]:
                governance.propose(request, approval, caller=who)
            else:
                governance.decide(request.change_id, approval, caller=who)

    for name, (groups, der) in approvers.items():
        govern(RegisterApprover(name, name, groups, SignatureScheme.ED25519, der))
    version = PolicyService(sessions).propose(document, description="bench", proposed_by=ADMINS[0]).version
    govern(ActivatePolicy(version, ""))
    return version, trust_file
