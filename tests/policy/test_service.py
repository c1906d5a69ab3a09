"""PolicyService on both databases: versions, evaluation, simulation, velocity.

The registry and activations go through governed changes (tests/policy/governed.py);
their own rules are tested in tests/policy/test_governance.py.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.orm import Session, sessionmaker

from services.policy.changes import Governance
from services.policy.domain import Outcome
from services.policy.errors import PolicyStateConflict
from services.policy.evidence import PrivateKey
from services.policy.service import PolicyService
from tests.policy.governed import Admins, activate, register
from tests.policy.helpers import CHAINS, ETH, WED_10_UTC, allow, doc, stake

NOW = WED_10_UTC
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
def admins() -> Admins:
    return Admins()


@pytest.fixture
def gov(session_factory: sessionmaker[Session], admins: Admins) -> Governance:
    return Governance(session_factory, admins.trust(), clock=lambda: NOW)


@pytest.fixture
def svc(session_factory: sessionmaker[Session], gov: Governance, admins: Admins) -> PolicyService:
    s = PolicyService(session_factory, chains=CHAINS.values(), clock=lambda: NOW)
    register(gov, admins, [(name, ["ops"], key) for name, key in OPS.items()], NOW)
    row = s.propose(V1, description="first", proposed_by="adm0")
    activate(gov, admins, row.version, NOW)
    return s


def test_proposing_stores_a_version_that_only_a_governed_change_activates(
    svc: PolicyService, gov: Governance, admins: Admins
) -> None:
    v1 = svc.get_version().version
    row = svc.propose(V2, description="cheaper small stakes", proposed_by="adm0")
    assert row.status == "PROPOSED" and row.parent_version == v1
    assert svc.propose(V2, description="again", proposed_by="adm0").version == row.version  # idempotent
    assert svc.get_version().version == v1
    activate(gov, admins, row.version, NOW)
    assert svc.get_version().version == row.version
    statuses = {r.version: r.status for r in svc.list_versions(page_size=10, offset=0)}
    assert statuses == {v1: "SUPERSEDED", row.version: "ACTIVE"}
    with pytest.raises(PolicyStateConflict):
        svc.propose(V2, description="", proposed_by="adm0")


def test_the_registry_is_the_projection_of_the_log(svc: PolicyService) -> None:
    assert [a.approver_id for a in svc.list_approvers(group="ops")] == ["o1", "o2", "o3"]
    assert svc.get_approver("o1").keys[0].revoked_at is None


def test_evaluate_records_the_evaluation_and_lists_who_may_approve(svc: PolicyService) -> None:
    decision, approvers = svc.evaluate(stake(), "alice", intent_id="i1")
    assert decision.outcome is Outcome.ALLOW and [a.approver_id for a in approvers] == ["o1", "o2", "o3"]
    assert decision.requirement is not None and decision.requirement.groups[0].threshold == 2


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


def test_velocity_is_reserved_under_the_evaluated_rule_and_released_once(
    session_factory: sessionmaker[Session], gov: Governance, admins: Admins
) -> None:
    """Approved intents count against the limit of the rule that matched them; a release frees the room."""
    from services.audit import repository as audit_repo
    from services.audit.writer import AuditWriter
    from services.policy.errors import VelocityExceeded
    from services.policy.models import LedgerState

    svc = PolicyService(
        session_factory,
        chains=CHAINS.values(),
        clock=lambda: NOW,
        audit=AuditWriter(session_factory, "svc:policy"),
    )
    velocity = {"velocity": {"window": "24h", "max": str(64 * ETH)}}
    row = svc.propose(
        doc(
            [allow("capped", limits=velocity, groups=[{"name": "ops", "threshold": 1, "approvers": ["o1"]}])]
        ),
        description="64 ETH a day",
        proposed_by="adm0",
    )
    activate(gov, admins, row.version, NOW)
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


def test_a_vote_is_evaluated_and_counted_against_no_velocity_limit(
    session_factory: sessionmaker[Session], gov: Governance, admins: Admins
) -> None:
    """A vault whose cosmoshub window is full (in uatom) may still vote: a vote moves nothing."""
    from services.policy.errors import VelocityExceeded
    from services.runtime.intent import Action, IntentSpec, VoteOption, VoteTarget
    from tests.policy.helpers import delegate

    svc = PolicyService(session_factory, chains=CHAINS.values(), clock=lambda: NOW)
    velocity = {"velocity": {"window": "24h", "max": "1_000_000 uatom"}}
    one = [{"name": "ops", "threshold": 1, "approvers": ["o1"]}]
    every = {"action": ["STAKE", "VOTE"]}
    row = svc.propose(
        doc([allow("capped", every, limits=velocity, groups=one)]), description="", proposed_by="adm0"
    )
    activate(gov, admins, row.version, NOW)
    assert svc.evaluate(delegate(1_000_000), "alice", intent_id="d1")[0].allowed
    assert svc.reserve_velocity("d1", row.version, delegate(1_000_000), "alice") is not None
    svc.evaluate(delegate(1), "alice", intent_id="d2")
    with pytest.raises(VelocityExceeded):
        svc.reserve_velocity("d2", row.version, delegate(1), "alice")
    vote = IntentSpec(Action.VOTE, "cosmoshub", "v1", 0, VoteTarget(7, VoteOption.NO))
    decision, _ = svc.evaluate(vote, "alice", intent_id="vote")
    assert decision.allowed and decision.rule_id == "capped"
    assert svc.reserve_velocity("vote", row.version, vote, "alice") is None
