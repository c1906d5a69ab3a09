"""AnchorGovernance: the policy service hands the signer each governance entry it appended.

A real log made by the policy service's governed changes (signed by the admins of the trust
root), a signer serving the RPC over gRPC with its head on the real SoftHSM token, on SQLite
and PostgreSQL. Anchoring makes the signer read the log through the entry at once and keep
the head on its token, so an entry cut before any Sign read it is still refused; an entry the
log does not hold (or holds otherwise) stops signing until it does.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.audit.models import AuditRecordRow
from services.policy.changes import Governance
from services.policy.domain import SignatureScheme, key_id_for
from services.policy.evidence import public_key_der
from services.policy.governance import AddApproverKey, Entry, RevokeApproverKey, new_request
from services.policy.log import Head
from services.policy.models import GovernanceEntryRow
from services.policy.service import PolicyService
from services.runtime.grpc_errors import RemoteError
from services.signer.errors import ApprovalsInsufficient, GovernanceUnverified
from services.signer.hsm import Hsm
from services.signer.service import SignOutput
from services.signer.servicer import SignerServicer
from services.signer.trust import GovernedPolicyView
from services.signer.types import KeyAlgorithm, KeyPurpose
from tests.policy.governed import Admins, activate, govern, register
from tests.signer.anchor_rig import ServingSigner, delete_log_entry, serving_signer, signer_over
from tests.signer.conftest import POLICY_DOC, Approvers, SignerRig

VALIDATOR = bytes.fromhex("a1" * 48)


@dataclass
class Rig:
    signer: ServingSigner
    signing: SignerRig
    gov: Governance
    admins: Admins
    sessions: sessionmaker[Session]
    hsm: Hsm

    def entry(self, seq: int | None = None) -> GovernanceEntryRow:
        """Entry ``seq`` of the log as stored (the last one by default)."""
        with self.sessions() as s:
            q = select(GovernanceEntryRow).order_by(GovernanceEntryRow.seq.desc())
            if seq is not None:
                q = q.where(GovernanceEntryRow.seq == seq)
            row: GovernanceEntryRow = s.scalars(q.limit(1)).one()
            s.expunge(row)
            return row

    def revoke(self, who: str) -> Head:
        """``who``'s key revoked through the policy service (one admin); the entry it appended."""
        key_id = key_id_for(public_key_der(self.signing.approvers.keys[who]))
        view = govern(self.gov, self.admins, RevokeApproverKey(who, key_id, "lost"), datetime.now(UTC))
        row = self.entry()
        assert view.entry_seq == row.seq
        return Head(row.seq, row.hash)

    async def anchor(self, at: Head, role: str = "svc:policy") -> Head:
        async with self.signer.client(role) as client:
            held: Head = await client.anchor_governance(at.seq, at.hash)
            return held

    async def refused(self, at: Head, role: str = "svc:policy") -> RemoteError:
        with pytest.raises(RemoteError) as e:
            await self.anchor(at, role)
        return e.value

    def sign(self, *who: str, view: GovernedPolicyView | None = None, nonce: int = 0) -> SignOutput:
        """An exit approved by ``who``, signed by the serving signer (or a new one reading ``view``)."""
        rig = self.signing
        spec = rig.unstake_spec(VALIDATOR)
        intent = f"intent-{secrets.token_hex(4)}"
        approvals = tuple(rig.approvers.approve(w, spec, intent_id=intent) for w in who)
        request = rig.request(spec, rig.unstake_tx(VALIDATOR, nonce=nonce), approvals, intent_id=intent)
        if view is None:
            return rig.service.sign_blocking(request, "svc:worker")
        service = signer_over(self.sessions, self.hsm, view)
        try:
            return service.sign_blocking(request, "svc:worker")
        finally:
            service.close()

    def restarted(self) -> GovernedPolicyView:
        """The log as a new signer process of the installation reads it: from genesis, with the token."""
        return GovernedPolicyView(
            self.sessions, self.admins.trust(), store=self.hsm, head_label=self.signer.label
        )

    def on_token(self) -> dict[str, Any]:
        raw = self.hsm.load_data(self.signer.label)
        assert raw is not None
        data: dict[str, Any] = json.loads(raw)
        return data

    def audited(self, outcome: str) -> list[AuditRecordRow]:
        with self.sessions() as s:
            q = select(AuditRecordRow).where(
                AuditRecordRow.action == "signer.anchor_governance", AuditRecordRow.outcome == outcome
            )
            return list(s.scalars(q.order_by(AuditRecordRow.sequence)))


@pytest.fixture
async def rig(hsm: Hsm, session_factory: sessionmaker[Session]) -> AsyncIterator[Rig]:
    """alice, bob and carol in the ops group, the rig's policy active (five entries), a signer serving."""
    now = datetime.now(UTC)
    admins = Admins()
    gov = Governance(session_factory, admins.trust())
    approvers = Approvers({n: ed25519.Ed25519PrivateKey.generate() for n in ("alice", "bob", "carol")})
    register(gov, admins, [(n, ["ops"], k) for n, k in approvers.keys.items()], now)
    version = PolicyService(session_factory).propose(POLICY_DOC.document, description="", proposed_by="adm0")
    activate(gov, admins, version.version, now)
    async with serving_signer(session_factory, hsm, admins.trust()) as signer:
        vault = signer.service.create_key_blocking(
            "op", f"vault-{secrets.token_hex(4)}", KeyAlgorithm.SECP256K1, KeyPurpose.VAULT
        )
        signing = SignerRig(signer.service, session_factory, approvers, None, None, None, vault)  # type: ignore[arg-type]
        yield Rig(signer, signing, gov, admins, session_factory, hsm)


async def test_only_the_policy_service_anchors(rig: Rig) -> None:
    assert SignerServicer.ROLES["AnchorGovernance"] == {"svc:policy"}
    head = rig.entry()
    for role in ("svc:worker", "svc:staking", "policy-admin", "operator"):
        error = await rig.refused(Head(head.seq, head.hash), role)
        assert error.status.name == "PERMISSION_DENIED", (role, error)
    assert rig.hsm.load_data(rig.signer.label) is None, "a refused caller moved the head"


async def test_malformed_anchors_are_invalid_arguments(rig: Rig) -> None:
    head = rig.entry()
    for at in (Head(0, head.hash), Head(head.seq, head.hash[:31]), Head(2**63, head.hash)):
        error = await rig.refused(at)
        assert error.status.name == "INVALID_ARGUMENT", (at, error)


async def test_anchoring_is_idempotent_and_kept_on_the_token(rig: Rig) -> None:
    """No Sign has read the log: anchoring reads it, and the head goes on the token at once.
    Again, or an earlier entry, answers the same head and moves nothing."""
    last = rig.entry()
    head = Head(last.seq, last.hash)
    assert head.seq == 4
    assert await rig.anchor(head) == head
    assert (rig.on_token()["seq"], rig.on_token()["hash"], "anchor" in rig.on_token()) == (
        4,
        head.hash.hex(),
        False,
    )
    assert await rig.anchor(head) == head
    second = rig.entry(2)
    assert await rig.anchor(Head(second.seq, second.hash)) == head
    records = rig.audited("anchored")
    assert [(r.subject, r.actor) for r in records] == [
        ("governance:4", "svc:policy-test"),
        ("governance:4", "svc:policy-test"),
        ("governance:2", "svc:policy-test"),
    ]
    assert rig.sign("alice", "bob").signature


async def test_a_revocation_anchored_then_cut_is_refused(rig: Rig) -> None:
    """bob's key is revoked and the revocation anchored before any Sign read it; then the
    database owner deletes it. The running signer counts bob's key revoked; a restarted one
    refuses the log, which no longer reaches the head on its token."""
    revocation = rig.revoke("bob")
    assert await rig.anchor(revocation) == revocation
    delete_log_entry(rig.sessions, revocation.seq)
    with pytest.raises(ApprovalsInsufficient, match="groups short"):
        rig.sign("alice", "bob")
    with pytest.raises(GovernanceUnverified, match="entries were removed"):
        rig.sign("alice", "bob", view=rig.restarted())


async def test_an_entry_the_log_does_not_hold_stops_signing_until_it_does(rig: Rig) -> None:
    """The revocation is deleted before the policy service anchors it (or its insert was a
    no-op): the signer says the log does not hold it, remembers it on the token, and signs
    nothing (a restarted signer neither) until the log holds it again."""
    revocation = rig.revoke("bob")
    row = rig.entry(revocation.seq)
    delete_log_entry(rig.sessions, revocation.seq)
    error = await rig.refused(revocation)
    assert (error.status.name, error.remote_type) == ("FAILED_PRECONDITION", "GovernanceAnchorMismatch")
    assert "the policy service anchored entry 5" in error.message
    assert rig.on_token()["anchor"] == {"seq": 5, "hash": revocation.hash.hex()}
    for view in (None, rig.restarted()):
        with pytest.raises(GovernanceUnverified, match="anchored entry 5: entries were removed"):
            rig.sign("alice", "carol", view=view)
    (refusal,) = rig.audited("refused")
    assert json.loads(refusal.payload_json)["error"] == "GovernanceAnchorMismatch"

    with rig.sessions.begin() as s:  # put back as it was appended
        s.add(
            GovernanceEntryRow(
                **{
                    c: getattr(row, c)
                    for c in ("seq", "change_id", "prev_hash", "hash", "entry", "applied_at")
                }
            )
        )
    with pytest.raises(ApprovalsInsufficient, match="groups short"):
        rig.sign("alice", "bob")
    assert rig.sign("alice", "carol").signature
    assert await rig.anchor(revocation) == revocation
    assert "anchor" not in rig.on_token()


async def test_another_entry_at_the_sequence_is_refused(rig: Rig) -> None:
    """The policy service anchors a hash the entry at that sequence does not have: the log the
    signer reads is not the one appended. It refuses, and signs nothing more (restarted neither)."""
    last = rig.entry()
    error = await rig.refused(Head(last.seq, bytes(32)))
    assert (error.status.name, error.remote_type) == ("FAILED_PRECONDITION", "GovernanceAnchorMismatch")
    assert "is not the one the policy service appended" in error.message
    for view in (None, rig.restarted()):
        with pytest.raises(GovernanceUnverified, match="the log was rewritten"):
            rig.sign("alice", "bob", view=view)
    error = await rig.refused(Head(last.seq, last.hash))  # the true one does not undo it
    assert error.remote_type == "GovernanceUnverified"


async def test_a_log_that_does_not_verify_is_refused(rig: Rig) -> None:
    """An entry appended by SQL, 'signed' by admins the trust root does not pin, anchored by
    its sequence and hash: the signer reads it, it does not verify, nothing is anchored."""
    head = rig.entry()
    impostors = Admins(
        {"adm0": ed25519.Ed25519PrivateKey.generate(), "adm1": ed25519.Ed25519PrivateKey.generate()}
    )
    change = AddApproverKey(
        "alice", SignatureScheme.ED25519, public_key_der(ed25519.Ed25519PrivateKey.generate())
    )
    request = new_request(
        change, change_id="chg-forged", proposer="adm0", expires_at=datetime.now(UTC) + timedelta(hours=1)
    )
    approvals = (impostors.sign("adm0", request), impostors.sign("adm1", request))
    entry = Entry(head.seq + 1, head.hash, request, approvals, datetime.now(UTC))
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
    error = await rig.refused(Head(entry.seq, entry.hash()))
    assert (error.status.name, error.remote_type) == ("FAILED_PRECONDITION", "GovernanceUnverified")
    assert "not signed by the admin quorum" in error.message
    assert rig.hsm.load_data(rig.signer.label) is None
    with pytest.raises(GovernanceUnverified):
        rig.sign("alice", "bob")
