"""PolicyService on both databases: versions, activation by quorum, registry, evaluation, simulation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from sqlalchemy.orm import Session, sessionmaker

from services.policy.domain import Outcome, SignatureScheme
from services.policy.errors import ApproverExists, ApproverInvalid, PolicyStateConflict, QuorumNotMet
from services.policy.evidence import PrivateKey, public_key_der, sign_approval
from services.policy.service import PolicyService, policy_change_spec
from services.runtime.intent import Approval, Decision, intent_digest
from tests.policy.helpers import ETH, WED_10_UTC, allow, doc, stake

NOW = WED_10_UTC
ADMINS: dict[str, PrivateKey] = {f"adm{i}": ed25519.Ed25519PrivateKey.generate() for i in range(3)}
OPS: dict[str, PrivateKey] = {f"o{i}": ec.generate_private_key(ec.SECP256R1()) for i in range(1, 4)}

V1 = doc([allow("r", groups=[{"name": "ops", "threshold": 2, "approver_groups": ["ops"]}])])
V2 = doc(
    [
        allow(
            "small",
            match={"amount": {"max": 10 * ETH}},
            groups=[{"name": "ops", "threshold": 1, "approver_groups": ["ops"]}],
        )
    ]
)


@pytest.fixture
def svc(session_factory: sessionmaker[Session]) -> PolicyService:
    s = PolicyService(session_factory, clock=lambda: NOW)
    for name, key in ADMINS.items():
        s.register_approver(
            name,
            display_name=name,
            groups=["policy-admins"],
            scheme=SignatureScheme.ED25519,
            public_key=public_key_der(key),
        )
    for name, key in OPS.items():
        s.register_approver(
            name,
            display_name=name,
            groups=["ops"],
            scheme=SignatureScheme.ECDSA_P256,
            public_key=public_key_der(key),
        )
    row, req = s.propose(V1, description="first", proposed_by="adm0")
    assert req is None  # bootstrap
    s.activate(row.version, [])
    return s


def admin_approval(who: str, version: str, current: str, decision: Decision = Decision.APPROVE) -> Approval:
    return sign_approval(
        ADMINS[who],
        approver_id=who,
        intent_digest=intent_digest(policy_change_spec(version), current),
        policy_version=current,
        decision=decision,
        expires_at=NOW + timedelta(hours=1),
    )


def test_activation_needs_the_current_admin_quorum(svc: PolicyService) -> None:
    v1 = svc.get_version().version
    row, req = svc.propose(V2, description="cheaper small stakes", proposed_by="adm0")
    assert req is not None and req.groups[0].members == {"adm1", "adm2"}  # the proposer is excluded
    with pytest.raises(QuorumNotMet):
        svc.activate(row.version, [admin_approval("adm1", row.version, v1)])
    with pytest.raises(QuorumNotMet):  # the proposer's own approval does not count
        svc.activate(
            row.version, [admin_approval("adm0", row.version, v1), admin_approval("adm1", row.version, v1)]
        )
    svc.activate(
        row.version, [admin_approval("adm1", row.version, v1), admin_approval("adm2", row.version, v1)]
    )
    assert svc.get_version().version == row.version
    statuses = {r.version: r.status for r in svc.list_versions(page_size=10, offset=0)}
    assert statuses == {v1: "SUPERSEDED", row.version: "ACTIVE"}
    assert svc.get_version(row.version).parent_version == v1


def test_a_reject_marks_the_proposal_rejected(svc: PolicyService) -> None:
    v1 = svc.get_version().version
    row, _ = svc.propose(V2, description="", proposed_by="adm0")
    with pytest.raises(QuorumNotMet, match="rejected"):
        svc.activate(
            row.version,
            [
                admin_approval("adm1", row.version, v1),
                admin_approval("adm2", row.version, v1, Decision.REJECT),
            ],
        )
    assert svc.get_version(row.version).status == "REJECTED"
    with pytest.raises(PolicyStateConflict):
        svc.activate(row.version, [])


def test_revoked_admin_key_voids_given_approvals(svc: PolicyService) -> None:
    v1 = svc.get_version().version
    row, _ = svc.propose(V2, description="", proposed_by="adm0")
    approvals = [admin_approval("adm1", row.version, v1), admin_approval("adm2", row.version, v1)]
    key_id = svc.get_approver("adm2").keys[0].key_id
    svc.revoke_key("adm2", key_id, reason="laptop lost")
    with pytest.raises(QuorumNotMet):
        svc.activate(row.version, approvals)


def test_registry_rotation_and_bad_keys(svc: PolicyService) -> None:
    new = ed25519.Ed25519PrivateKey.generate()
    info, key_id = svc.rotate_key("o1", scheme=SignatureScheme.ED25519, public_key=public_key_der(new))
    assert [k.key_id for k in info.keys][-1] == key_id and len(info.keys) == 2
    with pytest.raises(ApproverExists):
        svc.rotate_key("o2", scheme=SignatureScheme.ED25519, public_key=public_key_der(new))
    with pytest.raises(ApproverInvalid):
        svc.register_approver(
            "x",
            display_name="x",
            groups=[],
            scheme=SignatureScheme.ED25519,
            public_key=public_key_der(OPS["o1"]),
        )
    assert [a.approver_id for a in svc.list_approvers(group="ops")] == ["o1", "o2", "o3"]


def test_evaluate_records_and_check_approvals(svc: PolicyService) -> None:
    decision, approvers = svc.evaluate(stake(), "alice", intent_id="i1")
    assert decision.outcome is Outcome.ALLOW and [a.approver_id for a in approvers] == ["o1", "o2", "o3"]
    digest = intent_digest(stake(), decision.policy_version)
    approvals = [
        sign_approval(
            OPS[o],
            approver_id=o,
            intent_digest=digest,
            policy_version=decision.policy_version,
            decision=Decision.APPROVE,
            expires_at=NOW + timedelta(hours=1),
        )
        for o in ("o1", "o2")
    ]
    assert svc.check_approvals(stake(), "alice", decision.policy_version, approvals, intent_id="i1").met
    assert not svc.check_approvals(stake(), "o1", decision.policy_version, approvals).met  # o1 initiated


def test_simulate_recorded_intents_against_a_proposal(svc: PolicyService) -> None:
    svc.evaluate(stake(5 * ETH), "alice", intent_id="small")
    svc.evaluate(stake(50 * ETH), "alice", intent_id="big")
    results = svc.simulate(document=V2, recorded=(NOW - timedelta(hours=1), NOW + timedelta(hours=1)))
    by_id = {r.intent_id: r for r in results}
    assert by_id["small"].changed and by_id["small"].proposed.requirement is not None
    assert by_id["small"].proposed.requirement.groups[0].threshold == 1
    assert by_id["big"].changed and by_id["big"].proposed.outcome is Outcome.DENY
    same = svc.simulate(document=V1 + "\n# comment only\n", intent=(stake(), "alice", None))
    assert not same[0].changed


def test_changes_are_recorded_in_the_audit_trail(session_factory: sessionmaker[Session]) -> None:
    """Proposals, activations and registry changes each leave an audit record, in their transaction."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from services.audit import repository as audit_repo
    from services.audit.writer import AuditWriter
    from services.policy.domain import SignatureScheme
    from services.policy.evidence import public_key_der

    svc = PolicyService(session_factory, audit=AuditWriter(session_factory, actor="svc:policy"))
    key = public_key_der(ed25519.Ed25519PrivateKey.generate())
    svc.register_approver(
        "ann", display_name="Ann", groups=["ops"], scheme=SignatureScheme.ED25519, public_key=key
    )
    row, _ = svc.propose(doc([allow()]), description="first", proposed_by="dave")
    svc.activate(row.version, [])
    with session_factory() as s:
        actions = [r.action for r in audit_repo.records_between(s, 1, audit_repo.read_head(s).sequence)]
    assert actions == ["approver.registered", "policy.proposed", "policy.activated"]


def test_velocity_is_reserved_under_the_evaluated_rule_and_released_once(
    session_factory: sessionmaker[Session],
) -> None:
    """Approved intents count against the limit of the rule that matched them; a release frees the room."""
    from services.audit import repository as audit_repo
    from services.audit.writer import AuditWriter
    from services.policy.errors import VelocityExceeded
    from services.policy.models import LedgerState

    svc = PolicyService(session_factory, clock=lambda: NOW, audit=AuditWriter(session_factory, "svc:policy"))
    velocity = {"velocity": {"window": "24h", "max": str(64 * ETH)}}
    row, _ = svc.propose(
        doc(
            [allow("capped", limits=velocity, groups=[{"name": "ops", "threshold": 1, "approvers": ["o1"]}])]
        ),
        description="64 ETH a day",
        proposed_by="adm0",
    )
    svc.activate(row.version, [])
    for intent in ("i1", "i2", "i3"):
        decision, _ = svc.evaluate(stake(), "alice", intent_id=intent)
        assert decision.allowed
    first = svc.reserve_velocity("i1", row.version, stake(), "alice")
    assert first is not None and first.amount == 32 * ETH and first.state is LedgerState.RESERVED
    assert svc.reserve_velocity("i1", row.version, stake(), "alice") == first  # a retried activity
    svc.reserve_velocity("i2", row.version, stake(), "alice")
    with pytest.raises(VelocityExceeded, match="above the limit"):
        svc.reserve_velocity("i3", row.version, stake(), "alice")
    assert svc.release_velocity("i2", "failed: signer refused") is True
    assert svc.release_velocity("i2", "again") is True  # idempotent, nothing recorded twice
    assert svc.reserve_velocity("i3", row.version, stake(), "alice") is not None
    assert svc.release_velocity("unknown", "never reserved") is False
    with session_factory() as s:
        actions = [r.action for r in audit_repo.records_between(s, 1, audit_repo.read_head(s).sequence)]
    assert actions[-4:] == [
        "policy.velocity.reserve",
        "policy.velocity.reserve",
        "policy.velocity.release",
        "policy.velocity.reserve",
    ]


def test_a_rule_without_velocity_reserves_nothing(svc: PolicyService) -> None:
    version = svc.get_version().version
    svc.evaluate(stake(), "alice", intent_id="i1")
    assert svc.reserve_velocity("i1", version, stake(), "alice") is None
