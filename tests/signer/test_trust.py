"""The signer trusts the governance log it verified, never the registry or version rows.

A signer reading a real log (made by the policy service's governed changes, signed by
the admins of its trust root), with a real HSM remembering the head it verified. Each
test plays what a security review did with plain SQL as the worker host, on SQLite and
PostgreSQL, and checks that no signature comes out.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from services.audit.writer import AuditWriter
from services.families.config import ChainConfig
from services.policy.changes import Governance
from services.policy.domain import SignatureScheme, key_id_for
from services.policy.evidence import public_key_der
from services.policy.governance import GOVERNANCE_VERSION, RevokeApproverKey, new_request
from services.policy.models import ApproverKeyRow, GovernanceEntryRow, PolicyVersionRow, VersionStatus
from services.policy.service import PolicyService
from services.runtime.intent import Decision
from services.signer.adapters import audit_in_transaction
from services.signer.errors import ApprovalsInsufficient, GovernanceUnverified, PolicyNotActive
from services.signer.hsm import Hsm
from services.signer.models import SigningRecord
from services.signer.service import SignerService
from services.signer.trust import GovernedPolicyView
from services.signer.types import KeyAlgorithm, KeyPurpose
from tests.fixtures.database import sql
from tests.policy.governed import Admins, activate, govern, register
from tests.signer.conftest import CHAIN, CHAIN_ID, POLICY_DOC, Approvers, SignerRig, policy_document

APPEND_ONLY_TRIGGER = "policy_governance_log_append_only"
VALIDATOR = bytes.fromhex("a1" * 48)


@dataclass
class Governed:
    rig: SignerRig
    admins: Admins
    gov: Governance
    label: str

    def restarted(self, hsm: Hsm) -> SignerService:
        """A new signer process: it replays the log from the start, the HSM remembers the head."""
        return _signer(self.rig.sessions, hsm, self.admins, self.label)

    def records(self) -> int:
        with self.rig.sessions() as s:
            return int(s.scalar(select(func.count()).select_from(SigningRecord)) or 0)


def _signer(sessions: sessionmaker[Session], hsm: Hsm, admins: Admins, label: str) -> SignerService:
    chain = ChainConfig(name=CHAIN, chain_id=CHAIN_ID, rpc_url="http://127.0.0.1:9")
    return SignerService(
        hsm=hsm,
        sessions=sessions,
        policy=GovernedPolicyView(sessions, admins.trust(), store=hsm, head_label=label),
        audit=audit_in_transaction(AuditWriter(sessions, "svc:signer")),
        chains=[chain],
    )


@pytest.fixture
def governed(hsm: Hsm, session_factory: sessionmaker[Session]) -> Iterator[Governed]:
    now = datetime.now(UTC)
    admins = Admins()
    gov = Governance(session_factory, admins.trust())
    approvers = Approvers(
        {n: ed25519.Ed25519PrivateKey.generate() for n in ("alice", "bob", "carol", "ivan")}
    )
    register(gov, admins, [(n, ["ops"], k) for n, k in approvers.keys.items()], now)
    version = PolicyService(session_factory).propose(POLICY_DOC.document, description="", proposed_by="adm0")
    activate(gov, admins, version.version, now)
    label = f"test-head-{secrets.token_hex(4)}"
    service = _signer(session_factory, hsm, admins, label)
    vault = service.create_key_blocking(
        "op", f"vault-{secrets.token_hex(4)}", KeyAlgorithm.SECP256K1, KeyPurpose.VAULT
    )
    rig = SignerRig(service, session_factory, approvers, None, None, None, vault)  # type: ignore[arg-type]
    yield Governed(rig, admins, gov, label)
    service.close()


def _sign(
    g: Governed, service: SignerService | None = None, *, nonce: int = 0, intent: str = "intent-1"
) -> object:
    rig = g.rig
    spec = rig.unstake_spec(VALIDATOR)
    return (service or rig.service).sign_blocking(
        rig.request(spec, rig.unstake_tx(VALIDATOR, nonce=nonce), intent_id=intent), "w"
    )


def test_the_log_makes_the_registry_and_the_active_policy(governed: Governed) -> None:
    _sign(governed)
    assert governed.records() == 1


def test_a_key_planted_in_the_registry_table_counts_for_nothing(governed: Governed) -> None:
    """Plain SQL adds a key to two real approvers; approvals made with it are refused."""
    rig = governed.rig
    mallory = ed25519.Ed25519PrivateKey.generate()
    der = public_key_der(mallory)
    with rig.sessions.begin() as s:
        for who in ("alice", "bob"):
            planted = public_key_der(ed25519.Ed25519PrivateKey.generate()) if who == "bob" else der
            s.add(
                ApproverKeyRow(
                    key_id=key_id_for(planted),
                    approver_id=who,
                    scheme="ED25519",
                    public_key=planted,
                    created_at=datetime.now(UTC),
                )
            )
    forged = Approvers({"alice": mallory})
    spec = rig.unstake_spec(VALIDATOR)
    approvals = (forged.approve("alice", spec), rig.approvers.approve("bob", spec))
    with pytest.raises(ApprovalsInsufficient, match="groups short"):
        rig.service.sign_blocking(rig.request(spec, rig.unstake_tx(VALIDATOR), approvals), "w")
    assert governed.records() == 0


@pytest.mark.parametrize("status", [VersionStatus.PROPOSED, VersionStatus.ACTIVE])
def test_a_version_written_by_sql_is_never_the_active_one(governed: Governed, status: VersionStatus) -> None:
    """A 1-approval policy inserted by SQL, left PROPOSED or marked ACTIVE: its approvals are refused."""
    rig = governed.rig
    lax = policy_document(fee_cap=10**17)
    lax = replace(lax)  # the document parses; the attacker writes it and its status directly
    with rig.sessions.begin() as s:
        if status is VersionStatus.ACTIVE:
            s.execute(
                text(sql(s, "UPDATE {policy_versions} SET status = 'SUPERSEDED' WHERE status = 'ACTIVE'"))
            )
        s.add(
            PolicyVersionRow(
                version=lax.version,
                document=lax.document,
                canonical=lax.canonical.decode(),
                description="",
                status=status,
                proposed_by="mallory",
                created_at=datetime.now(UTC),
            )
        )
    spec = rig.unstake_spec(VALIDATOR)
    approvals = tuple(rig.approvers.approve(w, spec, version=lax.version) for w in ("alice", "bob"))
    request = replace(rig.request(spec, rig.unstake_tx(VALIDATOR), approvals), policy_version=lax.version)
    with pytest.raises(PolicyNotActive):
        rig.service.sign_blocking(request, "w")
    assert governed.records() == 0


def test_a_forged_log_entry_stops_the_signer(governed: Governed) -> None:
    """An entry appended by SQL, signed by a key that is not pinned: the log no longer verifies."""
    rig = governed.rig
    _sign(governed)
    mallory = Admins(
        {"adm0": ed25519.Ed25519PrivateKey.generate(), "adm1": ed25519.Ed25519PrivateKey.generate()}
    )
    with rig.sessions() as s:
        head = s.scalars(select(GovernanceEntryRow).order_by(GovernanceEntryRow.seq.desc()).limit(1)).one()
    from services.policy.governance import AddApproverKey, Entry

    change = AddApproverKey(
        "alice", SignatureScheme.ED25519, public_key_der(ed25519.Ed25519PrivateKey.generate())
    )
    request = new_request(
        change, change_id="chg-forged", proposer="adm0", expires_at=datetime.now(UTC) + timedelta(hours=1)
    )
    entry = Entry(
        head.seq + 1,
        head.hash,
        request,
        (mallory.sign("adm0", request), mallory.sign("adm1", request)),
        datetime.now(UTC),
    )
    with rig.sessions.begin() as s:
        s.add(
            GovernanceEntryRow(
                seq=entry.seq,
                change_id="chg-forged",
                prev_hash=entry.prev_hash,
                hash=entry.hash(),
                entry=entry.canonical().decode(),
                applied_at=entry.applied_at,
            )
        )
    with pytest.raises(GovernanceUnverified):
        _sign(governed, nonce=1, intent="intent-2")
    assert governed.records() == 1


def test_a_revocation_cut_from_the_log_is_noticed_after_a_restart(governed: Governed, hsm: Hsm) -> None:
    """Bob's key is revoked; someone who can write the database deletes that entry and restarts the
    signer (which replays the log from scratch): the HSM remembers the head, the signer refuses."""
    rig = governed.rig
    bob_key = rig.approvers.keys["bob"]
    revoke = RevokeApproverKey("bob", key_id_for(public_key_der(bob_key)), "laptop lost")
    assert govern(governed.gov, governed.admins, revoke, datetime.now(UTC)).entry_seq == 6
    with pytest.raises(ApprovalsInsufficient, match="groups short"):  # at once, in the running signer
        _sign(governed)
    with rig.sessions.begin() as s:
        if s.get_bind().dialect.name == "sqlite":
            s.execute(text("DROP TRIGGER policy_governance_log_no_delete"))
        else:
            s.execute(
                text(sql(s, "ALTER TABLE {policy_governance_log} DISABLE TRIGGER " + APPEND_ONLY_TRIGGER))
            )
        s.execute(text(sql(s, "DELETE FROM {policy_governance_log} WHERE seq = 6")))
        s.execute(text(sql(s, "UPDATE {policy_approver_keys} SET revoked_at = NULL")))
    restarted = governed.restarted(hsm)
    try:
        with pytest.raises(GovernanceUnverified, match="entries were removed"):
            _sign(governed, restarted)
    finally:
        restarted.close()
    assert governed.records() == 0


def test_an_admin_approval_of_a_change_is_no_approval_of_an_intent(governed: Governed) -> None:
    """Signatures over governed changes live in their own domain: they never count for an intent."""
    rig = governed.rig
    spec = rig.unstake_spec(VALIDATOR)
    from services.policy.evidence import sign_approval
    from services.runtime.intent import IntentBinding, intent_digest

    digest = intent_digest(
        spec, POLICY_DOC.version, IntentBinding("intent-1", "ivan", rig.request(spec, b"x").submitted_at)
    )
    mixed = sign_approval(
        rig.approvers.keys["alice"],
        approver_id="alice",
        intent_digest=digest,
        policy_version=GOVERNANCE_VERSION,
        decision=Decision.APPROVE,
        expires_at=datetime.now(UTC) + timedelta(minutes=5),
    )
    approvals = (mixed, rig.approvers.approve("bob", spec))
    with pytest.raises(ApprovalsInsufficient):
        rig.service.sign_blocking(rig.request(spec, rig.unstake_tx(VALIDATOR), approvals), "w")
