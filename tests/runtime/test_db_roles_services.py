"""Each service's own work succeeds under its own PostgreSQL role (``custos db roles``).

One database for the module, provisioned with a role per service. Each test builds
its service as its ``main.py`` does, on an engine logging in as that service's role:
the policy service applies governed changes and evaluates, the signer signs (reading
the governance log and the policy document itself), the chain service hands out
nonces, the staking service records an intent, the audit service checkpoints and
verifies what everyone appended.
The tests run in file order: the signer signs against what the policy test set up.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from services.audit.hsm_signer import HsmCheckpointSigner
from services.audit.service import AuditService, CheckpointPolicy, EventQuery
from services.audit.writer import AuditWriter
from services.chain.repository import NonceRepository
from services.families.config import ChainConfig
from services.families.ethereum import contracts
from services.families.ethereum.transactions import UnsignedTransaction
from services.policy.changes import Governance
from services.policy.domain import SignatureScheme
from services.policy.evidence import public_key_der, sign_approval
from services.policy.governance import RegisterApprover
from services.policy.service import PolicyService
from services.runtime.db import make_engine, make_session_factory, read_only, transaction, utcnow
from services.runtime.intent import (
    Action,
    Decision,
    IntentBinding,
    IntentSpec,
    UnstakeTarget,
    intent_digest,
    submission_time,
)
from services.signer.adapters import audit_in_transaction
from services.signer.hsm import Hsm
from services.signer.service import SignerService, SignInput
from services.signer.trust import GovernedPolicyView
from services.signer.types import KeyAlgorithm, KeyPurpose
from services.staking import repository as staking_repo
from services.staking.models import IntentRow
from services.staking.types import Transition
from tests.fixtures.database import PgRoles
from tests.policy.governed import Admins, activate, govern, register

CHAIN, CHAIN_ID, GWEI = "ethereum-devnet", 31337, 10**9
APPROVERS = {name: Ed25519PrivateKey.generate() for name in ("alice", "bob")}
ADMINS = Admins()
DOC = """\
format: custos.policy/v1
default: deny
rules:
  - id: unstake
    match: {action: [UNSTAKE]}
    limits: {velocity: {window: 24h, max: "1000000000000000000000000"}}
    require:
      groups: [{name: ops, threshold: 2, approver_groups: [ops]}]
      expiry: 1h
"""


@pytest.fixture(scope="module")
def engines(pg_roles: PgRoles) -> Iterator[dict[str, Engine]]:
    """Each service's engine, logging in as its own role."""
    out = {service: make_engine(url) for service, url in pg_roles.urls.items()}
    yield out
    for engine in out.values():
        engine.dispose()


def sessions(engines: dict[str, Engine], service: str) -> sessionmaker[Session]:
    return make_session_factory(engines[service])


def governance(engines: dict[str, Engine]) -> Governance:
    factory = sessions(engines, "policy")
    return Governance(factory, ADMINS.trust(), audit=AuditWriter(factory, actor="svc:policy"))


@pytest.fixture(scope="module")
def policy_version(engines: dict[str, Engine]) -> str:
    """The policy service applies the governed registrations and activation, as its role."""
    factory = sessions(engines, "policy")
    gov, now = governance(engines), utcnow()
    register(gov, ADMINS, [(name, ["ops"], key) for name, key in APPROVERS.items()], now)
    row = PolicyService(factory).propose(DOC, description="roles test", proposed_by="adm0")
    activate(gov, ADMINS, row.version, now)
    return row.version


def test_the_policy_service_registers_evaluates_and_reserves_under_its_role(
    engines: dict[str, Engine], policy_version: str
) -> None:
    factory = sessions(engines, "policy")
    chains = [ChainConfig(name=CHAIN, chain_id=CHAIN_ID, rpc_url="http://127.0.0.1:9")]
    policy = PolicyService(factory, audit=AuditWriter(factory, actor="svc:policy"), chains=chains)
    spec = IntentSpec(Action.UNSTAKE, CHAIN, "vault-x", 32 * 10**18, UnstakeTarget("0x" + "aa" * 48))
    intent_id = f"int-{uuid.uuid4().hex}"
    decision, approvers = policy.evaluate(spec, "ivan", intent_id=intent_id)
    assert decision.outcome == "ALLOW" and {a.approver_id for a in approvers} == set(APPROVERS)
    assert policy.reserve_velocity(intent_id, policy_version, spec, "ivan") is not None
    assert policy.release_velocity(intent_id, "cancelled")
    assert policy.get_version().version == policy_version
    carol = public_key_der(Ed25519PrivateKey.generate())
    govern(
        governance(engines),
        ADMINS,
        RegisterApprover("carol", "Carol", ("ops",), SignatureScheme.ED25519, carol),
        utcnow(),
    )
    assert {a.approver_id for a in policy.list_approvers(group="ops")} == {"alice", "bob", "carol"}


@pytest.fixture(scope="module")
def signer(engines: dict[str, Engine], hsm: Hsm) -> Iterator[SignerService]:
    """The signer as ``signer.main.make_service`` builds it, on the signer's role."""
    engine = engines["signer"]
    factory, reads = make_session_factory(engine), make_session_factory(read_only(engine))
    chain = ChainConfig(name=CHAIN, chain_id=CHAIN_ID, rpc_url="http://127.0.0.1:9")
    service = SignerService(
        hsm=hsm,
        sessions=factory,
        reads=reads,
        policy=GovernedPolicyView(
            reads, ADMINS.trust(), store=hsm, head_label=f"roles-{uuid.uuid4().hex[:8]}"
        ),
        audit=audit_in_transaction(AuditWriter(factory, actor="svc:signer")),
        chains=[chain],
    )
    yield service
    service.close()


def test_the_signer_signs_under_its_role_reading_the_policy_tables_itself(
    signer: SignerService, engines: dict[str, Engine], policy_version: str
) -> None:
    vault = f"vault-{uuid.uuid4().hex[:8]}"
    signer.create_key_blocking("ops", vault, KeyAlgorithm.SECP256K1, KeyPurpose.VAULT)
    validator = bytes(range(48))
    spec = IntentSpec(Action.UNSTAKE, CHAIN, vault, 32 * 10**9 * GWEI, UnstakeTarget("0x" + validator.hex()))
    chains = [ChainConfig(name=CHAIN, chain_id=CHAIN_ID, rpc_url="http://127.0.0.1:9")]
    policy = PolicyService(sessions(engines, "policy"), chains=chains)
    policy.evaluate(spec, "ivan", intent_id="intent-roles")  # recorded by the policy service's role
    submitted = submission_time(utcnow())
    digest = intent_digest(spec, policy_version, IntentBinding("intent-roles", "ivan", submitted))
    approvals = tuple(
        sign_approval(
            key,
            approver_id=name,
            intent_digest=digest,
            policy_version=policy_version,
            decision=Decision.APPROVE,
            expires_at=datetime.now(UTC) + timedelta(minutes=30),
        )
        for name, key in APPROVERS.items()
    )
    tx = UnsignedTransaction(
        chain_id=CHAIN_ID,
        nonce=0,
        max_priority_fee_per_gas=GWEI,
        max_fee_per_gas=2 * GWEI,
        gas=200_000,
        to=bytes.fromhex(contracts.WITHDRAWAL_REQUEST_CONTRACT[2:]),
        value=1,
        data=contracts.withdrawal_request_calldata(validator, 32 * 10**9),
    )
    request = SignInput(
        intent_id="intent-roles",
        step="unstake",
        spec=spec,
        initiator="ivan",
        policy_version=policy_version,
        approvals=approvals,
        unsigned_tx=tx.encode(),
        submitted_at=submitted,
    )
    first = signer.sign_blocking(request, "svc:worker")
    again = signer.sign_blocking(request, "svc:worker")  # the recorded signature, read back
    assert first.signature and again.signature == first.signature


def test_the_chain_service_hands_out_nonces_under_its_role(engines: dict[str, Engine]) -> None:
    nonces = NonceRepository(sessions(engines, "chain"))
    address, hour = "0x" + "11" * 20, timedelta(hours=1)
    got = [
        nonces.reserve(
            chain=CHAIN,
            address=address,
            intent_id=i,
            step="s",
            chain_nonce=5,
            now=utcnow(),
            release_after=hour,
        )
        for i in ("i-1", "i-2", "i-1")
    ]
    assert got == [5, 6, 5]
    AuditWriter(sessions(engines, "chain"), actor="svc:chain").record("chain.nonce", "intent:i-1", "ok", {})


def test_the_staking_service_records_intents_under_its_role(engines: dict[str, Engine]) -> None:
    factory = sessions(engines, "staking")
    audit = AuditWriter(factory, actor="svc:staking")
    now = utcnow()
    row = IntentRow(
        intent_id=f"int-{uuid.uuid4().hex}",
        initiator="alice",
        idempotency_key=uuid.uuid4().hex,
        request_digest="00" * 32,
        action="STAKE",
        chain=CHAIN,
        vault_id="vault-1",
        amount="32",
        spec_json="{}",
        state="SUBMITTED",
        digest="00" * 32,
        policy_version="v",
        created_at=now,
        updated_at=now,
    )
    with transaction(factory) as s:  # as SubmitIntent records a submission
        assert staking_repo.insert_intent(s, row) is not None
        audit.record("intent.submitted", f"intent:{row.intent_id}", "ok", {}, session=s)
    with transaction(factory) as s:
        assert staking_repo.record_event(s, Transition(row.intent_id, 2, "AWAITING_POLICY"))
        staking_repo.record_approval(s, row.intent_id, "bob", "APPROVE")
    with factory() as s:
        listed = staking_repo.list_intents(s, staking_repo.IntentFilter(initiator="alice"), 10, "")
    assert [r.state for r in listed[0]] == ["AWAITING_POLICY"]


def test_the_audit_service_checkpoints_and_verifies_everyone_s_appends_under_its_role(
    engines: dict[str, Engine], audit_hsm: Hsm
) -> None:
    for service in engines:  # every service appends under its own role, into one chain
        AuditWriter(sessions(engines, service), actor=f"svc:{service}").record("test.append", "x:1", "ok", {})
    signer = HsmCheckpointSigner.ensure(audit_hsm)  # the token's one checkpoint key, as the service uses it
    audit = AuditService(
        sessions(engines, "audit"), signer=signer, policy=CheckpointPolicy(every_records=1000)
    )
    audit.append("svc:audit", "audit.test", "x:2", "ok", {})
    checkpoint = audit.checkpoint()
    result, _ = audit.verify()
    assert result.ok, result.reason
    records, _ = audit.query(EventQuery(action="test.append"), page_size=100)
    assert {r.actor for r in records} == {f"svc:{s}" for s in engines}
    assert checkpoint.sequence == records[-1].sequence + 1
