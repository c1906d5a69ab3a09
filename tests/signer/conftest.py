"""Signer test set-up: a SignerService on the real SoftHSM token and a real database.

The active policy (a real document) and the approver registry come from a fixed
``PolicySource`` (the signer's port; the governance log that establishes them in
production is tested in tests/signer/test_trust.py); approvals are real Ed25519
signatures made with the policy's own ``sign_approval``; the transaction check is
the chain service's Ethereum decoder; the audit entries go to the real audit trail.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.audit.models import AuditRecordRow
from services.audit.writer import AuditWriter
from services.families.config import ChainConfig, ChainFamily
from services.families.ethereum import contracts
from services.families.ethereum.transactions import UnsignedTransaction
from services.policy.document import Policy, parse_policy
from services.policy.domain import (
    ApproverInfo,
    ApproverKeyInfo,
    SignatureScheme,
    key_id_for,
)
from services.policy.evidence import public_key_der, sign_approval
from services.runtime.intent import (
    Action,
    Approval,
    Decision,
    IntentBinding,
    IntentSpec,
    UnstakeTarget,
    intent_digest,
)
from services.signer.adapters import audit_in_transaction
from services.signer.hsm import Hsm
from services.signer.ports import StaticPolicySource
from services.signer.service import KeyInfo, SignerService, SignInput
from services.signer.types import KeyAlgorithm, KeyPurpose

CHAIN = "ethereum-devnet"
#: A second family the signer knows addresses on (its keys are secp256k1 too).
COSMOS_HUB = ChainConfig(
    name="cosmoshub",
    family=ChainFamily.COSMOS,
    chain_id="cosmoshub-4",
    rpc_url="http://127.0.0.1:1",
    denom="uatom",
    max_fee_wei=10**6,  # 1 ATOM: a fee cap is in the chain's own unit
)
CHAIN_ID = 31337
GWEI = 10**9
NOW = datetime.now(UTC)
#: When the rig's intents were submitted (bound into their digests).
SUBMITTED = NOW.replace(microsecond=NOW.microsecond // 1000 * 1000) - timedelta(minutes=1)


def policy_document(*, fee_cap: int = 10**18, extra_limits: str = "") -> Policy:
    """The rig's active policy: 2 of the ops group (the initiator excluded), a fee cap."""
    return parse_policy(
        f"""
format: custos.policy/v1
default: deny
rules:
  - id: r1
    match: {{action: [STAKE, UNSTAKE, RESTAKE], chain: [{CHAIN}]}}
    {extra_limits}
    require:
      groups: [{{name: ops, threshold: 2, approver_groups: [ops]}}]
      expiry: 1h
      fee_cap: "{fee_cap}"
"""
    )


POLICY_DOC = policy_document()
POLICY = POLICY_DOC.version


@dataclass
class Approvers:
    keys: dict[str, Ed25519PrivateKey] = field(default_factory=dict)

    def approve(
        self,
        who: str,
        spec: IntentSpec,
        *,
        intent_id: str = "intent-1",
        initiator: str = "ivan",
        submitted_at: datetime = SUBMITTED,
        version: str = POLICY,
        expires: timedelta = timedelta(minutes=30),
        decision: Decision = Decision.APPROVE,
    ) -> Approval:
        binding = IntentBinding(intent_id, initiator, submitted_at)
        return sign_approval(
            self.keys[who],
            approver_id=who,
            intent_digest=intent_digest(spec, version, binding),
            policy_version=version,
            decision=decision,
            expires_at=datetime.now(UTC) + expires,
        )


def make_registry(approvers: Approvers, revoked: frozenset[str] = frozenset()) -> dict[str, ApproverInfo]:
    out = {}
    for name, key in approvers.keys.items():
        der = public_key_der(key)
        info = ApproverKeyInfo(
            key_id=key_id_for(der),
            scheme=SignatureScheme.ED25519,
            public_key=der,
            created_at=NOW - timedelta(days=1),
            revoked_at=NOW - timedelta(minutes=1) if name in revoked else None,
        )
        out[name] = ApproverInfo(name, name, frozenset({"ops"}), (info,), NOW - timedelta(days=1))
    return out


class RecordingAudit:
    """Wraps the real audit binding, and can be told to fail (a broken audit trail)."""

    def __init__(self, writer: AuditWriter) -> None:
        self._bind = audit_in_transaction(writer)
        self.fail = False

    def __call__(self, session: Session) -> RecordingAudit._Bound:
        return RecordingAudit._Bound(self, session)

    class _Bound:
        def __init__(self, outer: RecordingAudit, session: Session) -> None:
            self._outer, self._inner = outer, outer._bind(session)

        def record(
            self, actor: str, action: str, subject: str, outcome: str, payload: dict[str, Any]
        ) -> None:
            if self._outer.fail:
                raise OSError("audit disk full")
            self._inner.record(actor, action, subject, outcome, payload)


@dataclass
class SignerRig:
    service: SignerService
    sessions: sessionmaker[Session]
    approvers: Approvers
    policy: StaticPolicySource
    audit: RecordingAudit
    chain: ChainConfig
    vault: KeyInfo
    initiator: str = "ivan"

    @property
    def vault_address(self) -> str:
        return dict(self.vault.addresses)[CHAIN]

    def unstake_spec(self, validator: bytes, amount_gwei: int = 32 * 10**9) -> IntentSpec:
        return IntentSpec(
            Action.UNSTAKE,
            CHAIN,
            self.vault.vault_id,
            amount_gwei * GWEI,
            UnstakeTarget("0x" + validator.hex()),
        )

    def unstake_tx(
        self,
        validator: bytes,
        amount_gwei: int = 32 * 10**9,
        *,
        nonce: int = 0,
        to: str = contracts.WITHDRAWAL_REQUEST_CONTRACT,
        max_fee: int = 2 * GWEI,
        tip: int = GWEI,
        chain_id: int = CHAIN_ID,
        value: int = 1,
    ) -> bytes:
        return UnsignedTransaction(
            chain_id=chain_id,
            nonce=nonce,
            max_priority_fee_per_gas=tip,
            max_fee_per_gas=max_fee,
            gas=200_000,
            to=bytes.fromhex(to[2:]),
            value=value,
            data=contracts.withdrawal_request_calldata(validator, amount_gwei),
        ).encode()

    def request(
        self,
        spec: IntentSpec,
        tx: bytes,
        approvals: tuple[Approval, ...] | None = None,
        *,
        intent_id: str = "intent-1",
        step: str = "unstake",
    ) -> SignInput:
        if approvals is None:
            approvals = tuple(
                self.approvers.approve(who, spec, intent_id=intent_id) for who in ("alice", "bob")
            )
        return SignInput(
            intent_id=intent_id,
            step=step,
            spec=spec,
            initiator=self.initiator,
            policy_version=POLICY,
            approvals=approvals,
            unsigned_tx=tx,
            submitted_at=SUBMITTED,
        )

    def audit_rows(self, outcome: str | None = None) -> list[AuditRecordRow]:
        with self.sessions() as s:
            q = select(AuditRecordRow).where(AuditRecordRow.action == "signer.sign")
            if outcome:
                q = q.where(AuditRecordRow.outcome == outcome)
            return list(s.scalars(q.order_by(AuditRecordRow.sequence)))


@pytest.fixture
def rig(
    hsm: Hsm, session_factory: sessionmaker[Session], request: pytest.FixtureRequest
) -> Iterator[SignerRig]:
    """The rig; ``indirect`` parametrisation sets the service's ``decide_threads`` (default 1)."""
    approvers = Approvers({n: Ed25519PrivateKey.generate() for n in ("alice", "bob", "carol", "ivan")})
    policy = StaticPolicySource(POLICY_DOC, make_registry(approvers))
    chain = ChainConfig(name=CHAIN, chain_id=CHAIN_ID, rpc_url="http://127.0.0.1:9")
    audit = RecordingAudit(AuditWriter(session_factory, "svc:signer"))
    service = SignerService(
        hsm=hsm,
        sessions=session_factory,
        policy=policy,
        audit=audit,
        chains=[chain, COSMOS_HUB],
        decide_threads=getattr(request, "param", 1),
    )
    vault = service.create_key_blocking(
        "operator-1", f"vault-{secrets.token_hex(4)}", KeyAlgorithm.SECP256K1, KeyPurpose.VAULT
    )
    yield SignerRig(service, session_factory, approvers, policy, audit, chain, vault)
    service.close()
