"""One case per chain family: how the conformance suite builds valid transactions for it.

The suite itself sees only the :class:`~services.families.base.Family` interface; a case adds
what the interface leaves to the chain service (building an unsigned transaction) and an
independent reading of signed bytes (eth-account for Ethereum, cosmpy for Cosmos). The vault
key is a coincurve test key standing in for the HSM.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import bech32
from coincurve import PrivateKey
from eth_account import Account
from eth_utils import keccak

from services.families.base import Family
from services.families.config import ChainConfig, ChainFamily
from services.families.cosmos.family import CosmosFamily, build_unsigned
from services.families.ethereum.deposit import ETHER, GWEI, generate_deposit_data, stake_target
from services.families.ethereum.family import EthereumFamily
from services.families.ethereum.transactions import UnsignedTransaction
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
from tests.families import cosmpy_reference

VAULT_KEY = PrivateKey(hashlib.sha256(b"custos families conformance vault key").digest())
OTHER_KEY = PrivateKey(hashlib.sha256(b"custos families conformance other key").digest())


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
    #: Builds the unsigned transaction of a spec's signed step with a given replay key.
    build: Callable[[IntentSpec, int], bytes]
    #: The address whose key made the signature in signed bytes, read independently.
    signer_of: Callable[[bytes], str]
    #: The transaction id of signed bytes, computed independently.
    tx_id: Callable[[bytes], str]

    @property
    def public_key(self) -> bytes:
        return bytes(VAULT_KEY.public_key.format(compressed=False))

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
        build=build,
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
        build=build,
        signer_of=signer_of,
        tx_id=lambda signed: hashlib.sha256(signed).hexdigest().upper(),
    )


CASES: dict[str, Callable[[], FamilyCase]] = {"ethereum": ethereum_case, "cosmos": cosmos_case}
#: The actions each case has a spec of, known without building it (the suite parametrizes over
#: them; it checks they are exactly the actions the family has steps for).
_STAKING = (Action.STAKE, Action.UNSTAKE, Action.RESTAKE)
ACTIONS: dict[str, tuple[Action, ...]] = {
    "ethereum": _STAKING,
    "cosmos": (*_STAKING, Action.CLAIM_REWARDS, Action.VOTE),
}
