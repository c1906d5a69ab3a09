"""Governed changes: the trust root, the admins' signatures, the log, and the policy service's flow.

The rules a verifier applies (tests of ``services.policy.governance``, pure), then the
policy service proposing, deciding and applying changes on both databases.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from services.audit import repository as audit_repo
from services.audit.writer import AuditWriter
from services.policy.changes import Governance
from services.policy.domain import SignatureScheme, key_id_for
from services.policy.errors import (
    ChangeInvalid,
    ChangeRefused,
    ChangeStateConflict,
    GovernanceInvalid,
    TrustRootInvalid,
)
from services.policy.evidence import public_key_der
from services.policy.governance import (
    ActivatePolicy,
    AddApproverKey,
    AdminKey,
    ChangeState,
    Entry,
    GovernedState,
    RegisterApprover,
    RevokeApproverKey,
    SetApproverGroups,
    judge_change,
    parse_trust_root,
    trust_root_yaml,
)
from services.policy.log import VerifiedLog
from services.policy.models import ApproverKeyRow, GovernanceEntryRow
from services.policy.service import PolicyService
from services.runtime.intent import Decision
from tests.fixtures.database import sql
from tests.policy.governed import Admins, govern
from tests.policy.helpers import CHAINS, allow, doc

APPEND_ONLY_TRIGGER = "policy_governance_log_append_only"
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _register(name: str = "olivia", groups: tuple[str, ...] = ("ops",)) -> RegisterApprover:
    key = public_key_der(ed25519.Ed25519PrivateKey.generate())
    return RegisterApprover(name, name.title(), groups, SignatureScheme.ED25519, key)


# --- the trust root ---------------------------------------------------------------------------


def test_trust_file_round_trips_and_names_itself() -> None:
    admins = Admins()
    trust = admins.trust()
    parsed = parse_trust_root(trust_root_yaml(trust.admins, trust.quorum))
    assert parsed == trust and parsed.fingerprint() == trust.fingerprint()
    assert parsed.admin_ids == {"adm0", "adm1", "adm2"}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(quorum=0), "quorum must be an integer of at least 1"),
        (lambda d: d.update(quorum=3), "cannot meet a quorum of 3"),
        (lambda d: d.update(format="other"), "format must be"),
        (lambda d: d["admins"][0].update(public_key="bm90IGEga2V5"), "public_key must be a DER"),
        (lambda d: d["admins"][1].update(public_key=d["admins"][0]["public_key"]), "pinned twice"),
        (lambda d: d.update(extra=1), "unknown field"),
    ],
)
def test_trust_file_refuses_what_would_weaken_it(edit: object, message: str) -> None:
    import yaml

    trust = Admins().trust()
    data = yaml.safe_load(trust_root_yaml(trust.admins, trust.quorum))
    edit(data)  # type: ignore[operator]
    with pytest.raises(TrustRootInvalid, match=message):
        parse_trust_root(yaml.safe_dump(data))


# --- judging signatures -----------------------------------------------------------------------


def test_the_proposer_and_quorum_other_admins_must_sign() -> None:
    admins = Admins()
    trust = admins.trust()
    request = admins.request(_register(), NOW)
    alone = judge_change(request, [admins.sign("adm0", request)], trust, now=NOW)
    assert not alone.met and alone.missing == 1
    twice = judge_change(request, [admins.sign("adm0", request)] * 2, trust, now=NOW)
    assert not twice.met
    without_proposer = judge_change(
        request, [admins.sign("adm1", request), admins.sign("adm2", request)], trust, now=NOW
    )
    assert not without_proposer.met and without_proposer.missing == 1
    met = judge_change(request, [admins.sign("adm0", request), admins.sign("adm1", request)], trust, now=NOW)
    assert met.met and met.signers == ("adm0", "adm1")


def test_a_revocation_needs_only_its_proposer() -> None:
    admins = Admins()
    request = admins.request(RevokeApproverKey("olivia", "k" + "0" * 32, "lost"), NOW)
    assert judge_change(request, [admins.sign("adm0", request)], admins.trust(), now=NOW).met


def test_signatures_that_do_not_count() -> None:
    admins = Admins()
    trust = admins.trust()
    request = admins.request(_register(), NOW)
    other = admins.request(_register("oscar"), NOW)
    outsider = Admins({"mallory": ed25519.Ed25519PrivateKey.generate()})
    expired = admins.request(_register(), NOW - timedelta(hours=2))
    cases = {
        "signed for another change": admins.sign("adm1", other),
        "not a pinned admin key": outsider.sign("mallory", request),
    }
    for reason, approval in cases.items():
        judged = judge_change(request, [admins.sign("adm0", request), approval], trust, now=NOW)
        assert not judged.met and reason in judged.refused[0]
    late = judge_change(expired, [admins.sign("adm0", expired), admins.sign("adm1", expired)], trust, now=NOW)
    assert not late.met and "approval expired" in late.refused[0]
    rejected = judge_change(
        request,
        [
            admins.sign("adm0", request),
            admins.sign("adm1", request),
            admins.sign("adm2", request, Decision.REJECT),
        ],
        trust,
        now=NOW,
    )
    assert rejected.rejected and not rejected.met


def test_a_retired_admin_signs_only_entries_up_to_their_last() -> None:
    admins = Admins()
    keys = list(admins.trust().admins)
    retired = AdminKey(keys[1].admin_id, keys[1].scheme, keys[1].public_key, until_entry=2)
    trust = type(admins.trust())((keys[0], retired, keys[2]), 1)
    request = admins.request(_register(), NOW)
    sigs = [admins.sign("adm0", request), admins.sign("adm1", request)]
    assert judge_change(request, sigs, trust, now=NOW, at_entry=2).met
    assert not judge_change(request, sigs, trust, now=NOW, at_entry=3).met


# --- the log ----------------------------------------------------------------------------------


def _entries(admins: Admins, changes: list[object]) -> list[Entry]:
    state = GovernedState()
    out = []
    for i, change in enumerate(changes):
        request = admins.request(change, NOW)  # type: ignore[arg-type]
        entry = state.next_entry(
            request, [admins.sign("adm0", request), admins.sign("adm1", request)], admins.trust(), NOW
        )
        state.apply(entry, admins.trust())
        out.append(entry)
        assert entry.seq == i + 1
    return out


def test_replaying_the_log_builds_the_registry_and_the_active_policy() -> None:
    admins = Admins()
    olivia = _register()
    new_key = public_key_der(ed25519.Ed25519PrivateKey.generate())
    entries = _entries(
        admins,
        [
            olivia,
            AddApproverKey("olivia", SignatureScheme.ED25519, new_key),
            SetApproverGroups("olivia", ("ops", "risk")),
            RevokeApproverKey("olivia", key_id_for(olivia.public_key), "rotated"),
            ActivatePolicy("a" * 64, ""),
        ],
    )
    state = GovernedState()
    for e in entries:
        state.apply(e, admins.trust())
    view = state.view()
    assert view.active_policy == "a" * 64 and view.head_seq == 5
    o = view.registry(NOW)["olivia"]
    assert o.groups == {"ops", "risk"}
    keys = {k.key_id: k for k in o.keys}
    assert keys[key_id_for(olivia.public_key)].revoked_at is not None
    assert keys[key_id_for(new_key)].revoked_at is None
    assert view.directory == {"ops": {"olivia"}, "risk": {"olivia"}}


@pytest.mark.parametrize("attack", ["reorder", "drop", "duplicate", "forge", "unsigned", "future_revoke"])
def test_an_altered_log_does_not_verify(attack: str) -> None:
    admins = Admins()
    olivia = _register()
    entries = _entries(
        admins, [olivia, _register("oscar"), RevokeApproverKey("olivia", key_id_for(olivia.public_key), "x")]
    )
    mallory = Admins({"mallory": ed25519.Ed25519PrivateKey.generate()})
    if attack == "reorder":
        entries = [entries[1], entries[0], entries[2]]
    elif attack == "drop":
        entries = [entries[0], entries[2]]
    elif attack == "duplicate":
        entries = [entries[0], entries[0]]
    elif attack in ("forge", "unsigned"):
        r = admins.request(_register("mallory"), NOW)
        sigs = [mallory.sign("mallory", r)] if attack == "forge" else [admins.sign("adm0", r)]
        entries = [*entries, Entry(4, entries[2].hash(), r, tuple(sigs), NOW)]
    else:  # a later entry rewritten: the links after it break
        e = entries[1]
        entries[1] = Entry(e.seq, e.prev_hash, e.request, e.approvals, e.applied_at + timedelta(days=999))
    state = GovernedState()
    with pytest.raises(GovernanceInvalid):
        for e in entries:
            state.apply(e, admins.trust())


def test_a_change_that_does_not_apply_is_refused() -> None:
    admins = Admins()
    state = GovernedState()
    with pytest.raises(ChangeInvalid, match="no approver"):
        state.check(SetApproverGroups("nobody", ("ops",)))
    with pytest.raises(ChangeInvalid, match="proposed against"):
        state.check(ActivatePolicy("b" * 64, "a" * 64))
    _entries(admins, [_register()])  # registering twice: see the service test
    del admins


# --- the policy service -----------------------------------------------------------------------


@pytest.fixture
def admins() -> Admins:
    return Admins()


@pytest.fixture
def gov(session_factory: sessionmaker[Session], admins: Admins) -> Governance:
    audit = AuditWriter(session_factory, actor="svc:policy")
    return Governance(session_factory, admins.trust(), audit=audit, clock=lambda: NOW)


def test_a_change_applies_once_the_quorum_signed(gov: Governance, admins: Admins) -> None:
    request = admins.request(_register(), NOW)
    view = gov.propose(request, admins.sign("adm0", request), caller="adm0")
    assert view.state is ChangeState.PROPOSED and view.judgement.missing == 1
    assert "olivia" not in gov.current().approvers
    assert gov.propose(request, admins.sign("adm0", request), caller="adm0").state is ChangeState.PROPOSED
    view = gov.decide(request.change_id, admins.sign("adm1", request), caller="adm1")
    assert view.state is ChangeState.APPLIED and view.entry_seq == 1
    assert gov.current().approvers["olivia"].groups == {"ops"}


def test_one_admin_alone_changes_nothing(gov: Governance, admins: Admins) -> None:
    request = admins.request(_register("mallory", ("policy-admins",)), NOW)
    gov.propose(request, admins.sign("adm0", request), caller="adm0")
    with pytest.raises(ChangeStateConflict, match="already decided"):
        gov.decide(request.change_id, admins.sign("adm0", request), caller="adm0")
    with pytest.raises(ChangeRefused):  # adm0 submitting adm1's signature
        gov.decide(request.change_id, admins.sign("adm1", request), caller="adm0")
    outsider = Admins({"adm1": ed25519.Ed25519PrivateKey.generate()})  # a key not pinned, named adm1
    with pytest.raises(ChangeRefused, match="not a pinned admin key"):
        gov.decide(request.change_id, outsider.sign("adm1", request), caller="adm1")
    assert gov.get(request.change_id).state is ChangeState.PROPOSED
    assert gov.current().head_seq == 0


def test_proposals_are_refused_from_anyone_but_a_pinned_admin_signing_as_themselves(
    gov: Governance, admins: Admins
) -> None:
    request = admins.request(_register(), NOW, proposer="olivia")
    olivia = Admins({"olivia": ed25519.Ed25519PrivateKey.generate()})
    with pytest.raises(ChangeRefused, match="not an admin"):
        gov.propose(request, olivia.sign("olivia", request), caller="olivia")
    ok = admins.request(_register(), NOW)
    with pytest.raises(ChangeRefused, match="cannot propose"):
        gov.propose(ok, admins.sign("adm0", ok), caller="adm1")
    far = admins.request(_register(), NOW + timedelta(days=30))
    with pytest.raises(ChangeInvalid, match="expires_at"):
        gov.propose(far, admins.sign("adm0", far), caller="adm0")


def test_a_revocation_applies_at_once_and_a_reject_closes_a_change(gov: Governance, admins: Admins) -> None:
    olivia = _register()
    govern(gov, admins, olivia, NOW)
    revoke = admins.request(RevokeApproverKey("olivia", key_id_for(olivia.public_key), "lost"), NOW)
    view = gov.propose(revoke, admins.sign("adm0", revoke), caller="adm0")
    assert view.state is ChangeState.APPLIED
    key = gov.current().registry(NOW)["olivia"].keys[0]
    assert key.revoked_at is not None and key.revoked_at <= NOW
    request = admins.request(_register("oscar"), NOW)
    gov.propose(request, admins.sign("adm0", request), caller="adm0")
    view = gov.decide(request.change_id, admins.sign("adm2", request, Decision.REJECT), caller="adm2")
    assert view.state is ChangeState.REJECTED and "adm2" in view.reason
    with pytest.raises(ChangeStateConflict):
        gov.decide(request.change_id, admins.sign("adm1", request), caller="adm1")


def test_activation_needs_its_document_and_the_parent_it_was_proposed_against(
    session_factory: sessionmaker[Session], gov: Governance, admins: Admins
) -> None:
    with pytest.raises(Exception, match="propose its document first"):
        govern(gov, admins, ActivatePolicy("c" * 64, ""), NOW)
    svc = PolicyService(session_factory, chains=CHAINS.values(), clock=lambda: NOW)
    v1 = svc.propose(doc([allow("a")]), description="", proposed_by="adm0").version
    v2 = svc.propose(doc([allow("b")]), description="", proposed_by="adm0").version
    stale = admins.request(ActivatePolicy(v2, ""), NOW)
    gov.propose(stale, admins.sign("adm0", stale), caller="adm0")
    assert govern(gov, admins, ActivatePolicy(v1, ""), NOW).state is ChangeState.APPLIED
    with pytest.raises(GovernanceInvalid, match="proposed against"):
        gov.decide(stale.change_id, admins.sign("adm1", stale), caller="adm1")
    assert svc.get_version().version == v1


def test_audit_records_name_the_people_who_made_the_change(
    session_factory: sessionmaker[Session], gov: Governance, admins: Admins
) -> None:
    govern(gov, admins, _register(), NOW)
    with session_factory() as s:
        records = audit_repo.records_between(s, 1, audit_repo.read_head(s).sequence)
    by_action = {r.action: r for r in records}
    assert [r.action for r in records] == [
        "governance.proposed",
        "governance.approved_by",
        "approver.registered",
        "governance.applied",
    ]
    registered = by_action["approver.registered"]
    assert registered.actor == "adm0"
    assert json.loads(registered.payload_json)["approved_by"] == ["adm0", "adm1"]
    assert by_action["governance.approved_by"].actor == "adm1"


def test_refused_proposals_and_decisions_are_audited(
    session_factory: sessionmaker[Session], gov: Governance, admins: Admins
) -> None:
    """Each in its own transaction: the refused one rolls back (it once took its record with it)."""
    request = admins.request(_register(), NOW)
    with pytest.raises(ChangeRefused):
        gov.propose(request, admins.sign("adm0", request), caller="adm1")
    gov.propose(request, admins.sign("adm0", request), caller="adm0")
    forged = Admins({"adm1": ed25519.Ed25519PrivateKey.generate()}).sign("adm1", request)
    with pytest.raises(ChangeRefused):
        gov.decide(request.change_id, forged, caller="adm1")
    with pytest.raises(ChangeStateConflict):
        gov.decide(request.change_id, admins.sign("adm0", request), caller="adm0")
    with session_factory() as s:
        records = audit_repo.records_between(s, 1, audit_repo.read_head(s).sequence)
    refused = [
        (r.action, r.actor, json.loads(r.payload_json)["error"]) for r in records if r.outcome == "refused"
    ]
    assert refused == [
        ("governance.propose_refused", "adm1", "ChangeRefused"),
        ("governance.approve_refused", "adm1", "ChangeRefused"),
        ("governance.approve_refused", "adm0", "ChangeStateConflict"),
    ]


def test_the_log_is_append_only_and_a_rewrite_is_caught_on_replay(
    session_factory: sessionmaker[Session], gov: Governance, admins: Admins
) -> None:
    govern(gov, admins, _register(), NOW)
    govern(gov, admins, _register("oscar"), NOW)
    with pytest.raises(Exception, match="append-only"), session_factory.begin() as s:
        s.execute(text(sql(s, "DELETE FROM {policy_governance_log} WHERE seq = 2")))
    # someone who can drop the trigger (the database owner) rewrites an entry's row
    with session_factory.begin() as s:
        if s.get_bind().dialect.name == "sqlite":
            s.execute(text("DROP TRIGGER policy_governance_log_no_update"))
        else:
            s.execute(
                text(sql(s, "ALTER TABLE {policy_governance_log} DISABLE TRIGGER " + APPEND_ONLY_TRIGGER))
            )
        row = s.scalars(select(GovernanceEntryRow).where(GovernanceEntryRow.seq == 1)).one()
        data = json.loads(row.entry)
        data["request"]["change"]["groups"] = ["policy-admins"]
        row.entry = json.dumps(data)
    with pytest.raises(GovernanceInvalid), session_factory() as s:
        VerifiedLog(admins.trust()).advance(s)


def test_projection_rows_written_by_hand_are_not_what_the_log_says(
    session_factory: sessionmaker[Session], gov: Governance, admins: Admins
) -> None:
    """A key planted in the registry table is visible to readers of the table, never in the log."""
    olivia = _register()
    govern(gov, admins, olivia, NOW)
    planted = public_key_der(ed25519.Ed25519PrivateKey.generate())
    with session_factory.begin() as s:
        s.add(
            ApproverKeyRow(
                key_id=key_id_for(planted),
                approver_id="olivia",
                scheme="ED25519",
                public_key=planted,
                created_at=NOW,
            )
        )
    keys = {k.key_id for k in gov.current().approvers["olivia"].keys}
    assert keys == {key_id_for(olivia.public_key)}


def test_a_version_whose_activation_was_rejected_or_expired_can_be_proposed_again(
    session_factory: sessionmaker[Session], admins: Admins
) -> None:
    """Issue 15, item 5: proposing a version again after its change was REJECTED or EXPIRED opens a
    new change (the CLI's change ids are fresh per proposal, not ``policy-<version>``), the version
    stays PROPOSED rather than stuck, and the new change activates it."""
    clock = [NOW]
    audit = AuditWriter(session_factory, actor="svc:policy")
    gov = Governance(session_factory, admins.trust(), audit=audit, clock=lambda: clock[0])
    svc = PolicyService(session_factory, chains=CHAINS.values(), clock=lambda: clock[0])
    document = doc([allow("a")])
    version = svc.propose(document, description="", proposed_by="adm0").version

    rejected = admins.request(ActivatePolicy(version, ""), clock[0])
    gov.propose(rejected, admins.sign("adm0", rejected), caller="adm0")
    closed = gov.decide(rejected.change_id, admins.sign("adm1", rejected, Decision.REJECT), caller="adm1")
    assert closed.state is ChangeState.REJECTED

    expired = admins.request(ActivatePolicy(version, ""), clock[0])  # open one hour
    gov.propose(expired, admins.sign("adm0", expired), caller="adm0")
    clock[0] = NOW + timedelta(hours=2)
    assert gov.get(expired.change_id).state is ChangeState.EXPIRED

    again = svc.propose(document, description="", proposed_by="adm0")
    assert (again.version, again.status) == (version, "PROPOSED")
    fresh = admins.request(ActivatePolicy(version, ""), clock[0])
    opened = gov.propose(fresh, admins.sign("adm0", fresh), caller="adm0")
    assert opened.state is ChangeState.PROPOSED and opened.request.change_id not in (
        rejected.change_id,
        expired.change_id,
    )
    applied = gov.decide(fresh.change_id, admins.sign("adm1", fresh), caller="adm1")
    assert applied.state is ChangeState.APPLIED
    assert svc.get_version().version == version
    assert gov.get(rejected.change_id).state is ChangeState.REJECTED  # the old ones keep their ending
