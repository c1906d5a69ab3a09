"""The signer with two chain families, as the worker host meets it: the rig of ``test_families.py``
(and, with an Ed25519 vault key on a Solana chain, of ``test_solana.py``: :func:`solana_rig`).

One ``SignerService`` on the real SoftHSM token and a real database (SQLite and PostgreSQL),
configured like an installation that stakes on Ethereum and on a Cosmos SDK chain: the same
secp256k1 vault key has an address on each. The active policy needs two of the ops group on
either chain; approvals are real Ed25519 signatures. The worker host holds every approval that
reaches a workflow it runs, and calls ``Sign`` with whatever bytes it likes: here it is
``FamilyRig.sign`` (the service's own entry point, as ``svc:worker``).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from services.audit.models import AuditRecordRow
from services.audit.writer import AuditWriter
from services.families.config import ChainConfig, ChainFamily
from services.families.cosmos import addresses
from services.families.cosmos.family import build_unsigned
from services.families.cosmos.tx import Coin, StakingMessage, UnsignedTx
from services.families.ethereum import contracts
from services.families.ethereum.transactions import UnsignedTransaction
from services.families.solana import family as solana
from services.policy.document import Policy, parse_policy
from services.runtime.intent import (
    Action,
    Approval,
    ClaimRewardsTarget,
    IntentSpec,
    RestakeTarget,
    StakeTarget,
    UnstakeTarget,
    VoteOption,
    VoteTarget,
)
from services.signer.hsm import Hsm
from services.signer.models import SigningRecord
from services.signer.ports import StaticPolicySource
from services.signer.service import KeyInfo, SignerService, SignInput, SignOutput
from services.signer.types import KeyAlgorithm, KeyPurpose
from tests.families.cases import cosmos_validator, solana_blockhash, solana_key, solana_seed
from tests.signer.conftest import CHAIN, CHAIN_ID, GWEI, SUBMITTED, Approvers, RecordingAudit, make_registry

ETH_CHAIN = ChainConfig(name=CHAIN, chain_id=CHAIN_ID, rpc_url="http://127.0.0.1:9")
ATOM = 10**6
#: The Cosmos chain as a careful operator configures it: its fee cap in its own unit (1 ATOM).
COSMOS_HUB = ChainConfig(
    name="cosmoshub",
    family=ChainFamily.COSMOS,
    chain_id="cosmoshub-4",
    rpc_url="http://127.0.0.1:1",
    denom="uatom",
    max_fee_wei=1 * ATOM,
)
#: The vault's validators on the Cosmos chain, and one the attacker runs.
VALIDATOR = cosmos_validator(1)
OTHER_VALIDATOR = cosmos_validator(2)
ATTACKER_VALIDATOR = cosmos_validator(0xA7)
ETH_VALIDATOR = bytes.fromhex("a1" * 48)

POLICY_DOC = parse_policy(
    f"""
format: custos.policy/v1
default: deny
rules:
  - id: eth
    match: {{action: [STAKE, UNSTAKE, RESTAKE], chain: [{CHAIN}]}}
    require:
      groups: [{{name: ops, threshold: 2, approver_groups: [ops]}}]
      expiry: 1h
      fee_cap: "{10**18}"
  - id: atom
    match: {{action: [STAKE, UNSTAKE, RESTAKE], chain: [{COSMOS_HUB.name}]}}
    require:
      groups: [{{name: ops, threshold: 2, approver_groups: [ops]}}]
      expiry: 1h
"""
)
POLICY = POLICY_DOC.version


@dataclass
class FamilyRig:
    service: SignerService
    sessions: sessionmaker[Session]
    approvers: Approvers
    policy: StaticPolicySource
    audit: RecordingAudit
    vault: KeyInfo
    initiator: str = "ivan"
    #: The active policy's version, which every approval names.
    version: str = POLICY

    # --- the vault on each chain ------------------------------------------------------------

    def address(self, chain: str) -> str:
        return dict(self.vault.addresses)[chain]

    @property
    def cosmos_address(self) -> str:
        return self.address(COSMOS_HUB.name)

    # --- intents ------------------------------------------------------------------------------

    def delegate(self, amount: int = 5 * ATOM, validator: str = VALIDATOR) -> IntentSpec:
        return IntentSpec(Action.STAKE, COSMOS_HUB.name, self.vault.vault_id, amount, StakeTarget(validator))

    def undelegate(self, amount: int = 2 * ATOM, validator: str = VALIDATOR) -> IntentSpec:
        return IntentSpec(
            Action.UNSTAKE, COSMOS_HUB.name, self.vault.vault_id, amount, UnstakeTarget(validator)
        )

    def claim(self, validator: str = VALIDATOR) -> IntentSpec:
        return IntentSpec(
            Action.CLAIM_REWARDS, COSMOS_HUB.name, self.vault.vault_id, 0, ClaimRewardsTarget(validator)
        )

    def vote(self, proposal: int = 7, option: VoteOption = VoteOption.YES) -> IntentSpec:
        return IntentSpec(Action.VOTE, COSMOS_HUB.name, self.vault.vault_id, 0, VoteTarget(proposal, option))

    def exit(self, validator: bytes = ETH_VALIDATOR, amount_gwei: int = 32 * 10**9) -> IntentSpec:
        return IntentSpec(
            Action.UNSTAKE,
            CHAIN,
            self.vault.vault_id,
            amount_gwei * GWEI,
            UnstakeTarget("0x" + validator.hex()),
        )

    # --- transactions, built as the chain service would (or not) ------------------------------

    def cosmos_tx(
        self,
        spec: IntentSpec,
        *,
        chain: ChainConfig = COSMOS_HUB,
        sequence: int = 0,
        account_number: int = 12,
        gas_limit: int = 200_000,
        fee: int = 5_000,
        memo: str = "",
    ) -> bytes:
        """The SignDoc the chain service builds (through the family's own builder)."""
        return build_unsigned(
            chain,
            spec,
            public_key=self.vault.public_key,
            account_number=account_number,
            sequence=sequence,
            gas_limit=gas_limit,
            fee_amount=fee,
            memo=memo,
        )

    def cosmos_doc(self, spec: IntentSpec, **changes: object) -> UnsignedTx:
        """The model of :meth:`cosmos_tx`'s SignDoc, any field replaceable (bytes the family's
        builder would refuse to make: an attacker encodes them by hand)."""
        target = spec.target
        assert isinstance(target, StakeTarget | UnstakeTarget)
        message = StakingMessage(
            type_url="/cosmos.staking.v1beta1.MsgDelegate"
            if spec.action is Action.STAKE
            else "/cosmos.staking.v1beta1.MsgUndelegate",
            delegator=self.cosmos_address,
            validator=target.validator,
            amount=Coin(COSMOS_HUB.denom, spec.amount),
        )
        doc = UnsignedTx(
            message=message,
            memo="",
            public_key=addresses.compressed_key(self.vault.public_key),
            sequence=0,
            fee=Coin(COSMOS_HUB.denom, 5_000),
            gas_limit=200_000,
            chain_id=str(COSMOS_HUB.chain_id),
            account_number=12,
        )
        return replace(doc, **changes)  # type: ignore[arg-type]

    def eth_tx(
        self,
        validator: bytes = ETH_VALIDATOR,
        amount_gwei: int = 32 * 10**9,
        *,
        nonce: int = 0,
        gas: int = 200_000,
        max_fee: int = 2 * GWEI,
        tip: int = GWEI,
    ) -> bytes:
        return UnsignedTransaction(
            chain_id=CHAIN_ID,
            nonce=nonce,
            max_priority_fee_per_gas=tip,
            max_fee_per_gas=max_fee,
            gas=gas,
            to=bytes.fromhex(contracts.WITHDRAWAL_REQUEST_CONTRACT[2:]),
            value=1,
            data=contracts.withdrawal_request_calldata(validator, amount_gwei),
        ).encode()

    # --- the worker host's Sign ---------------------------------------------------------------

    def approvals(
        self, spec: IntentSpec, intent_id: str, submitted_at: datetime = SUBMITTED
    ) -> tuple[Approval, ...]:
        """alice's and bob's approvals of ``spec`` as intent ``intent_id``: what the worker host
        reads from the workflow's history."""
        return tuple(
            self.approvers.approve(
                who, spec, intent_id=intent_id, version=self.version, submitted_at=submitted_at
            )
            for who in ("alice", "bob")
        )

    def request(
        self,
        spec: IntentSpec,
        tx: bytes,
        *,
        intent_id: str,
        step: str | None = None,
        approvals: tuple[Approval, ...] | None = None,
        submitted_at: datetime = SUBMITTED,
    ) -> SignInput:
        return SignInput(
            intent_id=intent_id,
            step=step or spec.action.value.lower(),
            spec=spec,
            initiator=self.initiator,
            policy_version=self.version,
            approvals=self.approvals(spec, intent_id, submitted_at) if approvals is None else approvals,
            unsigned_tx=tx,
            submitted_at=submitted_at,
        )

    def sign(self, request: SignInput) -> SignOutput:
        return self.service.sign_blocking(request, "svc:worker")

    # --- evidence -----------------------------------------------------------------------------

    def records(self) -> int:
        with self.sessions() as s:
            return int(s.scalar(select(func.count()).select_from(SigningRecord)) or 0)

    def refusals(self) -> list[dict[str, Any]]:
        """The payloads of the signer's audited refusals, oldest first."""
        with self.sessions() as s:
            rows = s.scalars(
                select(AuditRecordRow)
                .where(AuditRecordRow.action == "signer.sign", AuditRecordRow.outcome == "refused")
                .order_by(AuditRecordRow.sequence)
            )
            return [json.loads(r.payload_json) for r in rows]


def family_rig(
    hsm: Hsm,
    sessions: sessionmaker[Session],
    chains: tuple[ChainConfig, ...] = (ETH_CHAIN, COSMOS_HUB),
    policy_doc: Policy = POLICY_DOC,
) -> Iterator[FamilyRig]:
    """The rig's signer on ``chains`` (by default, Ethereum and a Cosmos chain) with a new vault key,
    under ``policy_doc`` (by default the rig's policy for stake, unstake and restake)."""
    approvers = Approvers({n: Ed25519PrivateKey.generate() for n in ("alice", "bob", "carol", "ivan")})
    policy = StaticPolicySource(policy_doc, make_registry(approvers))
    audit = RecordingAudit(AuditWriter(sessions, "svc:signer"))
    service = SignerService(hsm=hsm, sessions=sessions, policy=policy, audit=audit, chains=chains)
    vault = service.create_key_blocking(
        "operator-1", f"vault-{secrets.token_hex(4)}", KeyAlgorithm.SECP256K1, KeyPurpose.VAULT
    )
    try:
        yield FamilyRig(service, sessions, approvers, policy, audit, vault, version=policy_doc.version)
    finally:
        service.close()


# --- Solana: an Ed25519 vault key, stake accounts derived from it -------------------------------------

SOL = 10**9
#: A Solana chain as an operator configures it: its id the genesis hash (base58 of 32 bytes), its fee
#: cap ten one-signature transactions' worth of lamports.
SOLANA = ChainConfig(
    name="solana-test",
    family=ChainFamily.SOLANA,
    chain_id="GH7ome3EiwEr7tu9JuTh2dpYWBJK3z69Xm1ZE3MEE6JC",
    rpc_url="http://127.0.0.1:2",
    denom="lamports",
    display_unit="SOL",
    display_exponent=9,
    max_fee_wei=50_000,
)
#: The vault's vote accounts on the Solana chain, and one the attacker runs.
SOLANA_VOTE = solana_key("vote 1")
SOLANA_OTHER_VOTE = solana_key("vote 2")
SOLANA_ATTACKER_VOTE = solana_key("attacker's vote")


def solana_policy(
    validators: tuple[str, ...] = (SOLANA_VOTE, SOLANA_OTHER_VOTE), chain: str = SOLANA.name
) -> Policy:
    """Two of the ops group for any Solana stake, unstake or restake on ``chain``, to ``validators``
    only, at most 100 SOL a day."""
    return parse_policy(
        f"""
format: custos.policy/v1
default: deny
rules:
  - id: sol
    match: {{action: [STAKE, UNSTAKE, RESTAKE], chain: [{chain}]}}
    require:
      groups: [{{name: ops, threshold: 2, approver_groups: [ops]}}]
      expiry: 1h
    limits:
      validators: [{", ".join(validators)}]
      velocity: {{window: 24h, max: "{100 * SOL} lamports"}}
"""
    )


@dataclass
class SolanaRig(FamilyRig):
    """:class:`FamilyRig` with an Ed25519 vault key on :data:`SOLANA` (or a devnet's chain)."""

    chain: ChainConfig = SOLANA

    @property
    def solana_address(self) -> str:
        return self.address(self.chain.name)

    def stake(self, seed: str = "stake-1", vote: str = SOLANA_VOTE, amount: int = 3 * SOL) -> IntentSpec:
        target = StakeTarget(vote, solana_seed(seed))
        return IntentSpec(Action.STAKE, self.chain.name, self.vault.vault_id, amount, target)

    def unstake(self, seed: str = "stake-1", vote: str = SOLANA_VOTE) -> IntentSpec:
        target = UnstakeTarget(vote, solana_seed(seed))
        return IntentSpec(Action.UNSTAKE, self.chain.name, self.vault.vault_id, 0, target)

    def restake(
        self, seed: str = "stake-1", source: str = SOLANA_VOTE, target: str = SOLANA_OTHER_VOTE
    ) -> IntentSpec:
        moved = RestakeTarget(source, target, solana_seed(seed))
        return IntentSpec(Action.RESTAKE, self.chain.name, self.vault.vault_id, 0, moved)

    def stake_account(self, seed: str = "stake-1") -> bytes:
        return solana.stake_account(self.vault.public_key, seed.encode())

    def solana_tx(
        self, spec: IntentSpec, step: str, *, blockhash: bytes = solana_blockhash(1), withdraw: int = 3 * SOL
    ) -> bytes:
        """The message the chain service builds for ``step`` (through the family's own builder)."""
        return solana.build_unsigned(
            self.chain,
            spec,
            step,
            public_key=self.vault.public_key,
            recent_blockhash=blockhash,
            withdraw_lamports=withdraw,
        )


def solana_rig(
    hsm: Hsm,
    sessions: sessionmaker[Session],
    chain: ChainConfig = SOLANA,
    policy_doc: Policy | None = None,
) -> Iterator[SolanaRig]:
    """The signer on the Solana ``chain`` alone with a new Ed25519 vault key, under ``policy_doc``
    (by default :func:`solana_policy`: two approvers, the rig's two vote accounts)."""
    policy_doc = policy_doc or solana_policy()
    approvers = Approvers({n: Ed25519PrivateKey.generate() for n in ("alice", "bob", "carol", "ivan")})
    policy = StaticPolicySource(policy_doc, make_registry(approvers))
    audit = RecordingAudit(AuditWriter(sessions, "svc:signer"))
    service = SignerService(hsm=hsm, sessions=sessions, policy=policy, audit=audit, chains=(chain,))
    vault = service.create_key_blocking(
        "operator-1", f"vault-{secrets.token_hex(4)}", KeyAlgorithm.ED25519, KeyPurpose.VAULT
    )
    try:
        yield SolanaRig(
            service, sessions, approvers, policy, audit, vault, version=policy_doc.version, chain=chain
        )
    finally:
        service.close()
