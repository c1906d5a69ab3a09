"""Fixtures of the chain tests: a chain service on the session's anvil, funded vaults."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from eth_utils import keccak
from sqlalchemy.orm import Session, sessionmaker

from services.chain.devnet import Devnet
from services.chain.service import ChainService
from services.chain.types import TransactionStatus, TxState
from services.families.config import ChainConfig
from services.families.ethereum.deposit import ETHER, GeneratedDeposit, generate_deposit_data, stake_target
from services.families.ethereum.family import EthereumFamily
from services.families.ethereum.family import address_of as ethereum_address
from services.runtime.db import make_engine, make_session_factory
from services.runtime.intent import Action, IntentSpec, RestakeTarget, UnstakeTarget
from services.signer.hsm import Hsm
from services.signer.types import KeyAlgorithm


@dataclass
class HsmVaultSigner:
    """A vault key generated in SoftHSM: the chain tests sign as production does."""

    hsm: Hsm
    key_id: bytes
    address: str
    config: ChainConfig
    # The HSM's ECDSA is randomised: like the signer service's signing records, one
    # signature per payload, so re-signing the same transaction gives the same bytes.
    signed: dict[bytes, bytes] = field(default_factory=dict)

    @property
    def address_bytes(self) -> bytes:
        return bytes.fromhex(self.address[2:])

    def sign(self, unsigned_tx: bytes) -> bytes:
        if unsigned_tx not in self.signed:
            sig = self.hsm.sign_secp256k1(self.key_id, keccak(unsigned_tx))
            point = self.hsm.public_key(self.key_id)[1]
            signed = EthereumFamily().assemble(self.config, unsigned_tx, sig, point)
            self.signed[unsigned_tx] = signed.signed_tx
        return self.signed[unsigned_tx]


@pytest.fixture(scope="session")
def chain_config(devnet: Devnet) -> ChainConfig:
    return devnet.chain_config()


@pytest.fixture
def vault(devnet: Devnet, hsm: Hsm, chain_config: ChainConfig) -> HsmVaultSigner:
    """A fresh vault whose key lives in SoftHSM, funded on the devnet."""
    key_id = secrets.token_bytes(16)
    point = hsm.generate_keypair(KeyAlgorithm.SECP256K1, "chain-test-vault", key_id)
    signer = HsmVaultSigner(hsm, key_id, str(ethereum_address(point)), chain_config)
    devnet.fund(signer.address, 1000 * ETHER)
    return signer


@pytest.fixture
def sqlite_sessions(sqlite_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(sqlite_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def service(chain_config: ChainConfig, sqlite_sessions: sessionmaker[Session]) -> ChainService:
    return ChainService([chain_config], sqlite_sessions)


def deposit_for(vault: HsmVaultSigner, config: ChainConfig, amount: int = 32 * ETHER) -> GeneratedDeposit:
    return generate_deposit_data(
        withdrawal_address=vault.address_bytes,
        amount_wei=amount,
        genesis_fork_version=config.fork_version_bytes,
        compounding=amount != 32 * ETHER,
    )


def stake_spec(config: ChainConfig, gen: GeneratedDeposit, amount: int | None = None) -> IntentSpec:
    return IntentSpec(
        action=Action.STAKE,
        chain=config.name,
        vault_id="vault-1",
        amount=gen.amount_wei if amount is None else amount,
        target=stake_target(gen.data),
    )


def unstake_spec(config: ChainConfig, pubkey: bytes, amount: int = 0) -> IntentSpec:
    return IntentSpec(
        action=Action.UNSTAKE,
        chain=config.name,
        vault_id="vault-1",
        amount=amount,
        target=UnstakeTarget(validator="0x" + pubkey.hex()),
    )


def restake_spec(config: ChainConfig, source: bytes, target: bytes) -> IntentSpec:
    return IntentSpec(
        action=Action.RESTAKE,
        chain=config.name,
        vault_id="vault-1",
        amount=0,
        target=RestakeTarget(source_validator="0x" + source.hex(), target_validator="0x" + target.hex()),
    )


async def wait_final(service: ChainService, chain: str, tx_hash: str) -> TransactionStatus:
    """Polls until CONFIRMED or FAILED (automine receipts may lag the send), for up to 10 s."""
    async with asyncio.timeout(10):
        while True:
            status = await service.transaction_status(chain, tx_hash)
            if status.state in (TxState.CONFIRMED, TxState.FAILED):
                return status
            await asyncio.sleep(0.05)
