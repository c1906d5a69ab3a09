"""The signer's read of the policy tables: same answers as PolicyService, never a stale registry."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from services.policy.domain import SignatureScheme, key_id_for
from services.policy.evidence import public_key_der
from services.policy.service import PolicyService
from services.runtime.intent import Action, IntentSpec, UnstakeTarget
from services.signer.policy_view import PolicyView
from tests.fixtures.database import sql

DOC = """\
format: custos.policy/v1
default: deny
admin:
  groups: [{name: admins, threshold: 1, approver_groups: [ops]}]
  expiry: 24h
rules:
  - id: unstake
    match: {action: [UNSTAKE]}
    require:
      groups: [{name: ops, threshold: 2, approver_groups: [ops]}]
      expiry: 1h
"""
SPEC = IntentSpec(Action.UNSTAKE, "ethereum-devnet", "v1", 32 * 10**18, UnstakeTarget("0x" + "aa" * 48))


def _seeded(factory: sessionmaker[Session]) -> tuple[PolicyService, str, dict[str, bytes]]:
    policy = PolicyService(factory)
    keys = {}
    for name in ("alice", "bob", "carol"):
        der = public_key_der(Ed25519PrivateKey.generate())
        policy.register_approver(
            name, display_name=name, groups=["ops"], scheme=SignatureScheme.ED25519, public_key=der
        )
        keys[name] = der
    row, _ = policy.propose(DOC, description="t", proposed_by="t")
    policy.activate(row.version, [])
    return policy, row.version, keys


def test_the_view_answers_as_the_policy_service(session_factory: sessionmaker[Session]) -> None:
    policy, version, _ = _seeded(session_factory)
    requirement, registry = PolicyView(session_factory).requirement_and_registry(version, SPEC, "ivan")
    assert requirement == policy.requirement(version, SPEC, "ivan")
    assert dict(registry) == dict(policy.approver_registry())


def test_a_revocation_is_seen_by_the_next_call(session_factory: sessionmaker[Session]) -> None:
    policy, version, keys = _seeded(session_factory)
    view = PolicyView(session_factory)
    _, before = view.requirement_and_registry(version, SPEC, "ivan")
    assert before["bob"].keys[0].revoked_at is None
    policy.revoke_key("bob", key_id_for(keys["bob"]), reason="lost laptop")
    _, after = view.requirement_and_registry(version, SPEC, "ivan")
    assert after["bob"].keys[0].revoked_at is not None


REVOKE_CAROL = (
    "UPDATE {policy_approver_keys} SET revoked_at = '2020-01-01 00:00:00' WHERE approver_id = 'carol'"
)


def _revision(factory: sessionmaker[Session]) -> int:
    with factory() as s:
        return int(s.scalar(text(sql(s, "SELECT revision FROM {policy_registry_revision} WHERE id = 1"))))


@pytest.mark.parametrize(
    "change",
    [
        "INSERT INTO {policy_approver_groups} (approver_id, group_name) VALUES ('carol', 'treasury')",
        "DELETE FROM {policy_approver_groups} WHERE approver_id = 'carol'",
        REVOKE_CAROL,
        "UPDATE {policy_approvers} SET display_name = 'Carol' WHERE approver_id = 'carol'",
    ],
)
def test_any_write_to_the_registry_moves_the_revision_even_plain_sql(
    session_factory: sessionmaker[Session], change: str
) -> None:
    """The database's triggers, not the application, keep the revision: an operator's SQL counts too."""
    _seeded(session_factory)
    view = PolicyView(session_factory)
    before = _revision(session_factory)
    with session_factory() as s, s.begin():
        s.execute(text(sql(s, change)))
    assert _revision(session_factory) > before
    _, registry = view.requirement_and_registry(*_args(session_factory))
    assert dict(registry) == dict(PolicyService(session_factory).approver_registry())


def test_a_plain_sql_revocation_voids_the_key_at_the_next_call(
    session_factory: sessionmaker[Session],
) -> None:
    _, version, _ = _seeded(session_factory)
    view = PolicyView(session_factory)
    _, before = view.requirement_and_registry(version, SPEC, "ivan")
    assert before["carol"].keys[0].revoked_at is None
    with session_factory() as s, s.begin():
        s.execute(text(sql(s, REVOKE_CAROL)))
    _, after = view.requirement_and_registry(version, SPEC, "ivan")
    assert after["carol"].keys[0].revoked_at is not None


def test_an_unchanged_registry_is_not_read_again(session_factory: sessionmaker[Session]) -> None:
    """Same revision, same registry object: the three registry tables are read once."""
    _, version, _ = _seeded(session_factory)
    view = PolicyView(session_factory)
    _, first = view.requirement_and_registry(version, SPEC, "ivan")
    _, second = view.requirement_and_registry(version, SPEC, "ivan")
    assert second is first


def _args(factory: sessionmaker[Session]) -> tuple[str, IntentSpec, str]:
    with factory() as s:
        version = s.scalar(text(sql(s, "SELECT version FROM {policy_versions} WHERE status = 'ACTIVE'")))
    return str(version), SPEC, "ivan"
