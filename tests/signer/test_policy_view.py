"""The signer's read of the policy tables: same answers as PolicyService, never a stale registry."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.orm import Session, sessionmaker

from services.policy.domain import SignatureScheme, key_id_for
from services.policy.evidence import public_key_der
from services.policy.service import PolicyService
from services.runtime.intent import Action, IntentSpec, UnstakeTarget
from services.signer.policy_view import FreshRead, PolicyView

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


def test_fresh_read_never_serves_a_load_begun_before_the_caller_asked() -> None:
    loads = 0
    lock = threading.Lock()

    def load() -> float:
        nonlocal loads
        began = time.monotonic()
        with lock:
            loads += 1
        time.sleep(0.002)
        return began

    fresh = FreshRead(load)

    def call(_: int) -> tuple[float, float]:
        asked = time.monotonic()
        return asked, fresh.get(asked)

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(call, range(400)))
    assert all(began >= asked for asked, began in results)
    assert loads < 400  # callers that asked together shared loads
    earlier = results[0][0]
    assert fresh.get(earlier) == max(began for _, began in results)  # the latest load serves older askers
