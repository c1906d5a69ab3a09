"""Fixtures of the chain tests: a chain service on the session's anvil, funded vaults."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from eth_keys import keys
from eth_keys.datatypes import PrivateKey
from eth_utils import keccak
from sqlalchemy.orm import Session, sessionmaker

from services.chain.config import ChainConfig
from services.chain.devnet import Devnet
from services.chain.ethereum.deposit import ETHER, GeneratedDeposit, generate_deposit_data
from services.chain.ethereum.transactions import assemble_signed, normalize_low_s, recovery_id_for
from services.chain.service import ChainService
from services.chain.types import TransactionStatus, TxState
from services.runtime.db import make_engine, make_session_factory
from services.runtime.intent import Action, IntentSpec, RestakeTarget, StakeTarget, UnstakeTarget


@dataclass(frozen=True)
class LocalKeySigner:
    """A secp256k1 key in memory, standing in for the HSM: it hands over (r, s) like the HSM does."""

    key: PrivateKey

    @property
    def address(self) -> str:
        return str(self.key.public_key.to_checksum_address())

    @property
    def address_bytes(self) -> bytes:
        return bytes(self.key.public_key.to_canonical_address())

    def sign(self, unsigned_tx: bytes) -> bytes:
        digest = keccak(unsigned_tx)
        sig = self.key.sign_msg_hash(digest)
        r, s = normalize_low_s(sig.r, sig.s)
        rid = recovery_id_for(digest, r, s, self.address)
        return assemble_signed(unsigned_tx, r, s, rid, expected_sender=self.address)


@pytest.fixture(scope="session")
def chain_config(devnet: Devnet) -> ChainConfig:
    return devnet.chain_config()


@pytest.fixture
def vault(devnet: Devnet) -> LocalKeySigner:
    signer = LocalKeySigner(keys.PrivateKey(secrets.token_bytes(32)))
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


def deposit_for(vault: LocalKeySigner, config: ChainConfig, amount: int = 32 * ETHER) -> GeneratedDeposit:
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
        target=StakeTarget(validator="0x" + gen.data.pubkey.hex(), deposit_data=gen.data),
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
