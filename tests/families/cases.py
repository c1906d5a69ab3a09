"""One case per chain family: how the conformance suite builds valid transactions for it.

The suite itself sees only the :class:`~services.families.base.Family` interface; a case adds
what the interface leaves to the chain service (building an unsigned transaction) and an
independent reading of signed bytes (eth-account for Ethereum, cosmpy for Cosmos, solders for
Solana). The vault key is a test key standing in for the HSM: coincurve secp256k1, or an
Ed25519 key of ``cryptography``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import base58
import bech32
from coincurve import PrivateKey
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from eth_account import Account
from eth_utils import keccak

from services.families import secp256k1
from services.families.base import Family
from services.families.config import ChainConfig, ChainFamily
from services.families.cosmos.family import CosmosFamily, build_unsigned
from services.families.ethereum.deposit import ETHER, GWEI, generate_deposit_data, stake_target
from services.families.ethereum.family import EthereumFamily
from services.families.ethereum.transactions import UnsignedTransaction
from services.families.solana import family as solana
from services.runtime.intent import (
    Action,
    ClaimRewardsTarget,
    IntentSpec,
    RestakeTarget,
    StakeTarget,
    Target,
    TargetParams,
    UnstakeTarget,
    VoteOption,
    VoteTarget,
)
from tests.families import cosmpy_reference, solana_reference

VAULT_KEY = PrivateKey(hashlib.sha256(b"custos families conformance vault key").digest())
OTHER_KEY = PrivateKey(hashlib.sha256(b"custos families conformance other key").digest())
ED25519_VAULT_KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"custos solana vault key").digest())
ED25519_OTHER_KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"custos solana other key").digest())
#: The order of the Ed25519 group: S and S + L verify alike where S is not checked to be below L.
ED25519_ORDER = 2**252 + 27742317777372353535851937790883648493


def ed25519_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class CaseKeys:
    """The vault key of a case and another key, signing as the HSM would."""

    public_key: bytes
    other_public_key: bytes
    #: Signs a signing payload's data with the vault key (or the other one).
    sign: Callable[[bytes, bool], bytes]
    #: The same signature in another, non-canonical spelling (high-S, S + L) a node must refuse.
    malleate: Callable[[bytes], bytes]


def _secp256k1_sign(data: bytes, other: bool) -> bytes:
    """``r || s`` over a digest, as the HSM's ``CKM_ECDSA`` returns it (libsecp256k1 gives low-S)."""
    return bytes((OTHER_KEY if other else VAULT_KEY).sign_recoverable(data, hasher=None))[:64]


def _high_s(sig: bytes) -> bytes:
    high = sig[:32] + (secp256k1.N - int.from_bytes(sig[32:], "big")).to_bytes(32, "big")
    assert secp256k1.low_s(high) == sig
    return high


SECP256K1_KEYS = CaseKeys(
    public_key=bytes(VAULT_KEY.public_key.format(compressed=False)),
    other_public_key=bytes(OTHER_KEY.public_key.format(compressed=False)),
    sign=_secp256k1_sign,
    malleate=_high_s,
)


def _s_plus_order(sig: bytes) -> bytes:
    return sig[:32] + (int.from_bytes(sig[32:], "little") + ED25519_ORDER).to_bytes(32, "little")


ED25519_KEYS = CaseKeys(
    public_key=ed25519_public(ED25519_VAULT_KEY),
    other_public_key=ed25519_public(ED25519_OTHER_KEY),
    sign=lambda data, other: (ED25519_OTHER_KEY if other else ED25519_VAULT_KEY).sign(data),
    malleate=_s_plus_order,
)


def _as_approved(spec: IntentSpec, step: str) -> tuple[Action, int, Target]:
    return spec.action, spec.amount, spec.target


@dataclass(frozen=True)
class FamilyCase:
    """A family, a chain of it, and valid intents of every action it supports (see :data:`ACTIONS`)."""

    family: Family
    chain: ChainConfig
    specs: Mapping[Action, IntentSpec]
    #: The smallest change of an amount that is still well formed on the chain.
    amount_unit: int
    #: A well-formed validator that none of the specs names.
    other_validator: str
    #: Builds the unsigned transaction of a signed step of a spec; ``variant`` is the one free
    #: choice of the builder: the replay key (a nonce, a sequence) or, on Solana, the blockhash.
    build: Callable[[IntentSpec, str, int], bytes]
    #: The address whose key made the signature in signed bytes, read independently.
    signer_of: Callable[[bytes], str]
    #: The transaction id of signed bytes, computed independently.
    tx_id: Callable[[bytes], str]
    keys: CaseKeys = SECP256K1_KEYS
    #: The replay key of what ``build(spec, step, variant)`` gives.
    replay_key: Callable[[IntentSpec, str, int], int] = lambda spec, step, variant: variant
    #: (action, amount, target) that ``decode`` reads from a step's bytes: the spec's, unless a
    #: step's bytes cannot say all of it (Solana's later steps name the stake account only).
    reads_back: Callable[[IntentSpec, str], tuple[Action, int, Target]] = _as_approved
    #: Whether another variant of the same step may replace a signed one (Solana: the same
    #: message with a fresh blockhash), rather than being another transaction.
    variant_replaces: bool = False
    #: Well-formed target params none of the specs uses (another Solana seed), if the family has any.
    other_params: TargetParams | None = None
    #: Signed steps whose bytes do not name the intent's validators (a Solana deactivation or
    #: withdrawal names the stake account only): another validator with the same params is the
    #: same transaction there.
    validator_blind_steps: frozenset[str] = frozenset()
    #: Signed steps whose amount the builder reads from the chain, not from the intent (a
    #: Solana withdrawal: the stake account's balance).
    chain_amount_steps: frozenset[str] = frozenset()

    @property
    def public_key(self) -> bytes:
        return self.keys.public_key

    @property
    def vault(self) -> str:
        return self.family.address(self.chain, self.public_key)


def ethereum_case() -> FamilyCase:
    """Deposit, EIP-7002 exit and EIP-7251 consolidation; one BLS deposit generated (slow-ish)."""
    family = EthereumFamily()
    chain = ChainConfig(
        name="ethereum-test", chain_id=560048, rpc_url="http://127.0.0.1:1", genesis_fork_version="0x10000910"
    )
    vault = family.address(chain, bytes(VAULT_KEY.public_key.format(compressed=False)))
    deposit = generate_deposit_data(
        withdrawal_address=bytes.fromhex(vault[2:]),
        amount_wei=32 * ETHER,
        genesis_fork_version=chain.fork_version_bytes,
    ).data
    staked = "0x" + deposit.pubkey.hex()
    running = "0x" + bytes(range(1, 49)).hex()
    specs = {
        Action.STAKE: IntentSpec(Action.STAKE, chain.name, "vault-1", 32 * ETHER, stake_target(deposit)),
        Action.UNSTAKE: IntentSpec(Action.UNSTAKE, chain.name, "vault-1", 1 * ETHER, UnstakeTarget(running)),
        Action.RESTAKE: IntentSpec(Action.RESTAKE, chain.name, "vault-1", 0, RestakeTarget(running, staked)),
    }

    def build(spec: IntentSpec, replay_key: int) -> bytes:
        planned = family.plan(chain, spec, vault)
        return UnsignedTransaction(
            chain_id=chain.evm_chain_id,
            nonce=replay_key,
            max_priority_fee_per_gas=1 * GWEI,
            max_fee_per_gas=20 * GWEI,
            gas=150_000,
            to=planned.to,
            value=1 if planned.pays_request_fee else planned.value,
            data=planned.data,
        ).encode()

    return FamilyCase(
        family=family,
        chain=chain,
        specs=specs,
        amount_unit=GWEI,
        other_validator="0x" + bytes(range(101, 149)).hex(),
        build=lambda spec, step, variant: build(spec, variant),
        signer_of=lambda signed: str(Account.recover_transaction(signed)),
        tx_id=lambda signed: "0x" + keccak(signed).hex(),
    )


COSMOS_ACCOUNT_NUMBER = 7


def cosmos_chain() -> ChainConfig:
    return ChainConfig(
        name="cosmos-test",
        family=ChainFamily.COSMOS,
        chain_id="cosmoshub-test-4",
        rpc_url="http://127.0.0.1:1",
        denom="uatom",
        bech32_prefix="cosmos",
        max_fee_wei=1_000_000,
    )


def cosmos_validator(seed: int) -> str:
    """A well-formed operator address (any 20 bytes are one)."""
    data = bech32.convertbits(bytes([seed]) * 20, 8, 5)
    assert data is not None
    return bech32.bech32_encode("cosmosvaloper", data)


def cosmos_case() -> FamilyCase:
    """Delegate, undelegate, redelegate, claim rewards and vote on a generic Cosmos SDK chain."""
    family = CosmosFamily()
    chain = cosmos_chain()
    first, second = cosmos_validator(1), cosmos_validator(2)
    specs = {
        Action.STAKE: IntentSpec(Action.STAKE, chain.name, "vault-1", 5_000_000, StakeTarget(first)),
        Action.UNSTAKE: IntentSpec(Action.UNSTAKE, chain.name, "vault-1", 2_000_000, UnstakeTarget(first)),
        Action.RESTAKE: IntentSpec(
            Action.RESTAKE, chain.name, "vault-1", 1_000_000, RestakeTarget(first, second)
        ),
        Action.CLAIM_REWARDS: IntentSpec(
            Action.CLAIM_REWARDS, chain.name, "vault-1", 0, ClaimRewardsTarget(first)
        ),
        Action.VOTE: IntentSpec(Action.VOTE, chain.name, "vault-1", 0, VoteTarget(3, VoteOption.YES)),
    }

    def build(spec: IntentSpec, replay_key: int) -> bytes:
        return build_unsigned(
            chain,
            spec,
            public_key=bytes(VAULT_KEY.public_key.format(compressed=False)),
            account_number=COSMOS_ACCOUNT_NUMBER,
            sequence=replay_key,
            gas_limit=250_000,
            fee_amount=6_250,
        )

    def signer_of(signed: bytes) -> str:
        return cosmpy_reference.signer_of(
            signed, chain_id=str(chain.chain_id), account_number=COSMOS_ACCOUNT_NUMBER, prefix="cosmos"
        )

    return FamilyCase(
        family=family,
        chain=chain,
        specs=specs,
        amount_unit=1,
        other_validator=cosmos_validator(3),
        build=lambda spec, step, variant: build(spec, variant),
        signer_of=signer_of,
        tx_id=lambda signed: hashlib.sha256(signed).hexdigest().upper(),
    )


def solana_chain() -> ChainConfig:
    return ChainConfig(
        name="solana-test",
        family=ChainFamily.SOLANA,
        chain_id="GH7ome3EiwEr7tu9JuTh2dpYWBJK3z69Xm1ZE3MEE6JC",
        rpc_url="http://127.0.0.1:1",
        denom="lamports",
        display_unit="SOL",
        display_exponent=9,
        max_fee_wei=50_000,
    )


def solana_key(name: str) -> str:
    """A well-formed account address (any 32 bytes are one), e.g. a vote account."""
    return base58.b58encode(hashlib.sha256(b"custos solana " + name.encode()).digest()).decode()


def solana_blockhash(variant: int) -> bytes:
    return hashlib.sha256(b"custos solana blockhash %d" % variant).digest()


def solana_seed(seed: str) -> TargetParams:
    return TargetParams.of({"seed": seed.encode()})


#: What a Solana case's withdrawal takes back: the stake account's balance, read from the chain.
SOLANA_WITHDRAW_LAMPORTS = 2_002_282_880
SOLANA_PUBLIC_KEY = ED25519_KEYS.public_key


def solana_case() -> FamilyCase:
    """Stake (one transaction), unstake and restake (deactivate, cooldown, withdraw/redelegate),
    each through its own stake account (seed)."""
    family = solana.SolanaFamily()
    chain = solana_chain()
    first, second = solana_key("vote 1"), solana_key("vote 2")
    specs = {
        Action.STAKE: IntentSpec(
            Action.STAKE, chain.name, "vault-1", 2 * 10**9, StakeTarget(first, solana_seed("stake-1"))
        ),
        Action.UNSTAKE: IntentSpec(
            Action.UNSTAKE, chain.name, "vault-1", 0, UnstakeTarget(first, solana_seed("unstake-1"))
        ),
        Action.RESTAKE: IntentSpec(
            Action.RESTAKE, chain.name, "vault-1", 0, RestakeTarget(first, second, solana_seed("restake-1"))
        ),
    }

    def build(spec: IntentSpec, step: str, variant: int) -> bytes:
        return solana.build_unsigned(
            chain,
            spec,
            step,
            public_key=SOLANA_PUBLIC_KEY,
            recent_blockhash=solana_blockhash(variant),
            withdraw_lamports=SOLANA_WITHDRAW_LAMPORTS,
        )

    def stake_account(spec: IntentSpec) -> bytes:
        params = getattr(spec.target, "params", None)
        assert isinstance(params, TargetParams)
        seed = params.get("seed")
        assert seed is not None
        return solana.stake_account(SOLANA_PUBLIC_KEY, seed)

    def reads_back(spec: IntentSpec, step: str) -> tuple[Action, int, Target]:
        named = TargetParams.of({"stake_account": stake_account(spec)})
        if step == "deactivate":
            return Action.UNSTAKE, 0, UnstakeTarget("", named)
        if step == "withdraw":
            return Action.UNSTAKE, SOLANA_WITHDRAW_LAMPORTS, UnstakeTarget("", named)
        if step == "redelegate":
            assert isinstance(spec.target, RestakeTarget)
            return Action.RESTAKE, 0, RestakeTarget("", spec.target.target_validator, named)
        return spec.action, spec.amount, spec.target

    return FamilyCase(
        family=family,
        chain=chain,
        specs=specs,
        amount_unit=1,
        other_validator=solana_key("vote 3"),
        build=build,
        signer_of=solana_reference.signer_of,
        tx_id=solana_reference.tx_id,
        keys=ED25519_KEYS,
        replay_key=lambda spec, step, variant: solana.replay_key(stake_account(spec), step),
        reads_back=reads_back,
        variant_replaces=True,
        other_params=solana_seed("another-seed"),
        validator_blind_steps=frozenset({"deactivate", "withdraw"}),
        chain_amount_steps=frozenset({"withdraw"}),
    )


CASES: dict[str, Callable[[], FamilyCase]] = {
    "ethereum": ethereum_case,
    "cosmos": cosmos_case,
    "solana": solana_case,
}
#: The actions each case has a spec of, known without building it (the suite parametrizes over
#: them; it checks they are exactly the actions the family has steps for).
_STAKING = (Action.STAKE, Action.UNSTAKE, Action.RESTAKE)
ACTIONS: dict[str, tuple[Action, ...]] = {
    "ethereum": _STAKING,
    "cosmos": (*_STAKING, Action.CLAIM_REWARDS, Action.VOTE),
    "solana": _STAKING,
}
