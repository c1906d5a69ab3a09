"""The chain service's Cosmos adapter against a real node (injectived), with keys in SoftHSM.

Each action goes build -> HSM signature -> broadcast -> inclusion; a repeated broadcast sends
nothing twice; an unbonding's completion time comes from the chain and its end is seen there;
and what the node refuses (a high-S signature, another chain id, a used or a future sequence, a
redelegation the chain's rules forbid) comes back as a typed error that says what happened.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from services.chain.cosmos.adapter import (
    CosmosAdapter,
    SequenceAhead,
    SequenceUsed,
    SignatureRejected,
    TransactionRefused,
)
from services.chain.cosmos.devnet import INJ, CosmosDevnet
from services.chain.errors import BroadcastRejected, InsufficientFunds, IntentInvalid
from services.chain.service import ChainService
from services.chain.types import TransactionStatus, TxState
from services.families import secp256k1
from services.families.config import ChainConfig
from services.families.cosmos import tx as cosmos_tx
from services.families.cosmos.family import CosmosFamily, build_unsigned
from services.runtime.errors import Unavailable
from services.runtime.intent import (
    Action,
    ClaimRewardsTarget,
    IntentSpec,
    RestakeTarget,
    StakeTarget,
    UnstakeTarget,
    VoteOption,
    VoteTarget,
)
from services.signer.hsm import Hsm
from services.signer.types import KeyAlgorithm

_N = secp256k1.N


@dataclass
class CosmosVault:
    """A vault key generated in SoftHSM and its account on the devnet."""

    hsm: Hsm
    key_id: bytes
    point: bytes
    address: str
    config: ChainConfig
    signed: dict[bytes, bytes] = field(default_factory=dict)

    def signature(self, unsigned_tx: bytes) -> bytes:
        """The HSM's low-S ``r || s`` over sha256 of the SignDoc (one per payload)."""
        if unsigned_tx not in self.signed:
            self.signed[unsigned_tx] = self.hsm.sign_secp256k1(
                self.key_id, hashlib.sha256(unsigned_tx).digest()
            )
        return self.signed[unsigned_tx]

    def sign(self, unsigned_tx: bytes) -> bytes:
        return (
            CosmosFamily()
            .assemble(self.config, unsigned_tx, self.signature(unsigned_tx), self.point)
            .signed_tx
        )


@pytest.fixture(scope="module")
def cosmos_config(cosmos_devnet: CosmosDevnet) -> ChainConfig:
    return cosmos_devnet.chain_config()


@pytest.fixture
def cosmos_service(cosmos_config: ChainConfig, sqlite_sessions: sessionmaker[Session]) -> ChainService:
    return ChainService([cosmos_config], sqlite_sessions)


@pytest.fixture
def vault(cosmos_devnet: CosmosDevnet, hsm: Hsm, cosmos_config: ChainConfig) -> CosmosVault:
    key_id = secrets.token_bytes(16)
    point = hsm.generate_keypair(KeyAlgorithm.SECP256K1, "cosmos-test-vault", key_id)
    address = CosmosFamily().address(cosmos_config, point)
    cosmos_devnet.fund(address, 100 * INJ)
    return CosmosVault(hsm, key_id, point, address, cosmos_config)


def _spec(config: ChainConfig, action: Action, amount: int, target: object) -> IntentSpec:
    return IntentSpec(action, config.name, "vault-c", amount, target)  # type: ignore[arg-type]


async def _confirmed(
    service: ChainService, chain: str, tx_hash: str, timeout: float = 20
) -> TransactionStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = await service.transaction_status(chain, tx_hash)
        if status.state in (TxState.CONFIRMED, TxState.FAILED):
            return status
        assert time.monotonic() < deadline, f"{tx_hash} not included: {status}"
        await asyncio.sleep(0.2)


async def _run(service: ChainService, vault: CosmosVault, spec: IntentSpec) -> TransactionStatus:
    built = await service.build_transaction(
        f"int-{uuid.uuid4().hex}", spec, vault.address, public_key=vault.point
    )
    signed = vault.sign(built.unsigned_tx)
    sent = await service.broadcast(spec.chain, signed)
    assert sent.already_known is False
    again = await service.broadcast(spec.chain, signed)  # idempotent: the same transaction, once
    assert (again.tx_hash, again.already_known) == (sent.tx_hash, True)
    status = await _confirmed(service, spec.chain, sent.tx_hash)
    assert status.state is TxState.CONFIRMED, status.failure_reason
    return status


def _delegated(devnet: CosmosDevnet, delegator: str) -> dict[str, int]:
    answer = devnet.rest(f"/cosmos/staking/v1beta1/delegations/{delegator}")
    return {
        d["delegation"]["validator_address"]: int(d["balance"]["amount"])
        for d in answer.get("delegation_responses", [])
    }


async def test_delegate_then_redelegate_and_the_chain_s_redelegation_rule_is_a_clear_refusal(
    cosmos_service: ChainService, vault: CosmosVault, cosmos_devnet: CosmosDevnet, cosmos_config: ChainConfig
) -> None:
    v1, v2 = cosmos_devnet.genesis.validators[:2]
    status = await _run(cosmos_service, vault, _spec(cosmos_config, Action.STAKE, 10 * INJ, StakeTarget(v1)))
    (delegate,) = [e for e in status.events if e.name == "delegate"]
    assert delegate.fields["validator"] == v1
    assert _delegated(cosmos_devnet, vault.address) == {v1: 10 * INJ}

    await _run(cosmos_service, vault, _spec(cosmos_config, Action.RESTAKE, 4 * INJ, RestakeTarget(v1, v2)))
    assert _delegated(cosmos_devnet, vault.address) == {v1: 6 * INJ, v2: 4 * INJ}

    # x/staking refuses a redelegation out of a validator that stake is still redelegating into
    back = _spec(cosmos_config, Action.RESTAKE, 1 * INJ, RestakeTarget(v2, v1))
    with pytest.raises(TransactionRefused, match=r"refuses the restake: .*redelegation"):
        await cosmos_service.build_transaction("int-back", back, vault.address, public_key=vault.point)
    # nothing was reserved for it: the vault's next build takes the next sequence
    nxt = await cosmos_service.build_transaction(
        "int-next",
        _spec(cosmos_config, Action.STAKE, INJ, StakeTarget(v1)),
        vault.address,
        public_key=vault.point,
    )
    assert nxt.decoded.nonce == 2


async def test_undelegate_waits_for_the_chain_s_completion_time_and_sees_the_funds_back(
    cosmos_service: ChainService, vault: CosmosVault, cosmos_devnet: CosmosDevnet, cosmos_config: ChainConfig
) -> None:
    v1 = cosmos_devnet.genesis.validators[0]
    await _run(cosmos_service, vault, _spec(cosmos_config, Action.STAKE, 5 * INJ, StakeTarget(v1)))
    spec = _spec(cosmos_config, Action.UNSTAKE, 5 * INJ, UnstakeTarget(v1))
    built = await cosmos_service.build_transaction("int-unbond", spec, vault.address, public_key=vault.point)
    sent = await cosmos_service.broadcast(cosmos_config.name, vault.sign(built.unsigned_tx))
    status = await _confirmed(cosmos_service, cosmos_config.name, sent.tx_hash)
    # x/distribution pays the delegation's rewards out with the undelegation
    assert [e.name for e in status.events] == ["withdraw_rewards", "unbond"]
    before = cosmos_devnet.balance(vault.address)

    wait = await cosmos_service.wait_status(cosmos_config.name, "unbonding", sent.tx_hash, vault.address)
    assert wait.done is False and wait.until is not None
    now = datetime.now(UTC)
    assert now + timedelta(seconds=10) < wait.until < now + timedelta(seconds=25)  # the genesis's 20 s
    assert "until" in wait.detail

    deadline = time.monotonic() + 40
    while not wait.done:
        assert time.monotonic() < deadline, wait
        await asyncio.sleep(0.5)
        wait = await cosmos_service.wait_status(cosmos_config.name, "unbonding", sent.tx_hash, vault.address)
    assert datetime.now(UTC) >= wait.until
    assert cosmos_devnet.balance(vault.address) == before + 5 * INJ
    assert _delegated(cosmos_devnet, vault.address) == {}


async def test_a_build_is_refused_before_anything_is_reserved_when_the_vault_cannot_pay(
    cosmos_service: ChainService, vault: CosmosVault, cosmos_devnet: CosmosDevnet, cosmos_config: ChainConfig
) -> None:
    v1 = cosmos_devnet.genesis.validators[0]
    too_much = _spec(cosmos_config, Action.STAKE, 1000 * INJ, StakeTarget(v1))
    with pytest.raises(InsufficientFunds):
        await cosmos_service.validate_intent(too_much, vault.address)
    with pytest.raises((InsufficientFunds, TransactionRefused)):
        await cosmos_service.build_transaction("int-poor", too_much, vault.address, public_key=vault.point)
    undelegate = _spec(cosmos_config, Action.UNSTAKE, INJ, UnstakeTarget(v1))
    with pytest.raises(InsufficientFunds, match="has 0 inj delegated"):
        await cosmos_service.validate_intent(undelegate, vault.address)


# -- what the node refuses, reported clearly ------------------------------------------------------


async def _signed_at(
    service: ChainService,
    vault: CosmosVault,
    config: ChainConfig,
    validator: str,
    *,
    sequence_offset: int = 0,
    chain_id: str | None = None,
) -> bytes:
    """A delegation built with the service's gas and fee, then rebuilt with another sequence or
    chain id and signed by the HSM (what a broken or hostile builder could hand the signer)."""
    spec = _spec(config, Action.STAKE, INJ, StakeTarget(validator))
    built = await service.build_transaction(
        f"int-{uuid.uuid4().hex}", spec, vault.address, public_key=vault.point
    )
    tx = cosmos_tx.parse(built.unsigned_tx)
    other = config.model_copy(update={"chain_id": chain_id}) if chain_id else config
    unsigned = build_unsigned(
        other,
        spec,
        public_key=vault.point,
        account_number=tx.account_number,
        sequence=tx.sequence + sequence_offset,
        gas_limit=tx.gas_limit,
        fee_amount=tx.fee.amount if tx.fee else 0,
    )
    signature = vault.signature(unsigned)
    return cosmos_tx.parse(unsigned).tx_raw(signature)


async def test_a_high_s_signature_is_refused_by_the_node_and_reported(
    cosmos_service: ChainService, vault: CosmosVault, cosmos_devnet: CosmosDevnet, cosmos_config: ChainConfig
) -> None:
    signed = await _signed_at(cosmos_service, vault, cosmos_config, cosmos_devnet.genesis.validators[0])
    r, s = signed[-64:-32], int.from_bytes(signed[-32:], "big")
    high = signed[:-32] + (_N - s).to_bytes(32, "big")  # the same signature, its other S
    assert r == high[-64:-32] and high != signed
    with pytest.raises(SignatureRejected, match="refused the signature"):
        await cosmos_service.broadcast(cosmos_config.name, high)


async def test_a_transaction_for_another_chain_id_is_refused_by_the_node_and_reported(
    cosmos_service: ChainService, vault: CosmosVault, cosmos_devnet: CosmosDevnet, cosmos_config: ChainConfig
) -> None:
    v1 = cosmos_devnet.genesis.validators[0]
    signed = await _signed_at(cosmos_service, vault, cosmos_config, v1, chain_id="another-chain-1")
    with pytest.raises(SignatureRejected, match="chain id"):
        await cosmos_service.broadcast(cosmos_config.name, signed)


async def test_a_used_sequence_is_refused_and_a_future_one_waits_its_turn(
    cosmos_service: ChainService, vault: CosmosVault, cosmos_devnet: CosmosDevnet, cosmos_config: ChainConfig
) -> None:
    v1 = cosmos_devnet.genesis.validators[0]
    await _run(cosmos_service, vault, _spec(cosmos_config, Action.STAKE, INJ, StakeTarget(v1)))  # sequence 0

    stale = await _signed_at(cosmos_service, vault, cosmos_config, v1, sequence_offset=-1)
    # custos's own record refuses it first: sequence 0 went out with another signed transaction
    with pytest.raises(BroadcastRejected, match=r"nonce 0 .* was already used by"):
        await cosmos_service.broadcast(cosmos_config.name, stale)
    # and the node refuses it too (sent past that record, as a second chain service could)
    adapter = cosmos_service.adapter(cosmos_config.name)
    with pytest.raises(SequenceUsed, match=r"sequence 0 was already used .*at 1"):
        await adapter.broadcast(stale, adapter.inspect_signed(stale).tx_hash)

    ahead = await _signed_at(cosmos_service, vault, cosmos_config, v1, sequence_offset=1)
    with pytest.raises(SequenceAhead, match="waits its turn") as refused:
        await cosmos_service.broadcast(cosmos_config.name, ahead)
    assert isinstance(refused.value, Unavailable)  # retryable: the worker sends the same bytes again


async def test_a_vote_shows_the_proposal_and_the_vault_s_weight_then_is_cast_with_it(
    cosmos_service: ChainService, vault: CosmosVault, cosmos_devnet: CosmosDevnet, cosmos_config: ChainConfig
) -> None:
    v1 = cosmos_devnet.genesis.validators[0]
    proposal = cosmos_devnet.submit_text_proposal("Raise the community tax", "a devnet proposal")
    vote = _spec(cosmos_config, Action.VOTE, 0, VoteTarget(proposal, VoteOption.NO))
    context = await cosmos_service.validate_intent(vote, vault.address)
    assert f"proposal {proposal} 'Raise the community tax'" in context
    assert "no bonded stake: its vote carries no weight" in context

    await _run(cosmos_service, vault, _spec(cosmos_config, Action.STAKE, 7 * INJ, StakeTarget(v1)))
    context = await cosmos_service.validate_intent(vote, vault.address)
    assert context.endswith("the vault votes with 7 INJ bonded")

    status = await _run(cosmos_service, vault, vote)
    assert [e.name for e in status.events] == ["proposal_vote"]
    cast = cosmos_devnet.rest(f"/cosmos/gov/v1/proposals/{proposal}/votes/{vault.address}")["vote"]
    assert [o["option"] for o in cast["options"]] == ["VOTE_OPTION_NO"]

    closed = _spec(cosmos_config, Action.VOTE, 0, VoteTarget(10**9, VoteOption.YES))
    with pytest.raises(IntentInvalid, match="has no proposal 1000000000"):
        await cosmos_service.validate_intent(closed, vault.address)


async def test_a_claim_shows_the_pending_rewards_and_pays_them_to_the_vault(
    cosmos_service: ChainService, vault: CosmosVault, cosmos_devnet: CosmosDevnet, cosmos_config: ChainConfig
) -> None:
    v2 = cosmos_devnet.genesis.validators[1]
    claim = _spec(cosmos_config, Action.CLAIM_REWARDS, 0, ClaimRewardsTarget(v2))
    with pytest.raises(IntentInvalid, match="no delegation to"):
        await cosmos_service.validate_intent(claim, vault.address)
    await _run(cosmos_service, vault, _spec(cosmos_config, Action.STAKE, 50 * INJ, StakeTarget(v2)))
    await asyncio.sleep(1)  # a few blocks of rewards
    assert "rewards pending from" in await cosmos_service.validate_intent(claim, vault.address)

    before = cosmos_devnet.balance(vault.address)
    status = await _run(cosmos_service, vault, claim)
    (withdrawn,) = [e for e in status.events if e.name == "withdraw_rewards"]
    assert withdrawn.fields["validator"] == v2 and withdrawn.fields["amount"].endswith("inj")
    assert cosmos_devnet.balance(vault.address) > before - cosmos_config.max_fee_wei


async def test_the_account_history_names_the_transaction_at_each_sequence_for_reconciliation(
    cosmos_service: ChainService, vault: CosmosVault, cosmos_devnet: CosmosDevnet, cosmos_config: ChainConfig
) -> None:
    """What reconciliation reads: the account's used sequences, where custos's transaction landed, and
    which transaction took a sequence custos never signed (here one the HSM's PIN holder sent past
    custos, straight to the node)."""
    adapter = cosmos_service.adapter(cosmos_config.name)
    assert isinstance(adapter, CosmosAdapter)
    assert adapter.account_address("SECP256K1", vault.point) == vault.address
    assert adapter.account_address("ED25519", bytes(32)) is None
    v1 = cosmos_devnet.genesis.validators[0]
    ours = await _run(cosmos_service, vault, _spec(cosmos_config, Action.STAKE, INJ, StakeTarget(v1)))
    outside = await _signed_at(cosmos_service, vault, cosmos_config, v1)  # sequence 1, never recorded
    outside_id = adapter.inspect_signed(outside).tx_hash
    await adapter.broadcast(outside, outside_id)
    await _confirmed(cosmos_service, cosmos_config.name, outside_id)

    assert await adapter.confirmed_nonce(vault.address) == 2
    latest = await adapter.head()
    seen = await adapter.transaction_at(vault.address, 1, latest)
    assert seen is not None and seen.tx_hash == outside_id
    assert await adapter.mined_block(outside_id) == seen.block_number
    first = await adapter.transaction_at(vault.address, 0, latest)
    assert first is not None and first.block_number == ours.block_number
    assert await adapter.transaction_at(vault.address, 2, latest) is None
