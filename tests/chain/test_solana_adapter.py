"""The chain service's Solana adapter against the LiteSVM devnet, with the vault key in SoftHSM.

Each step goes build -> HSM signature (Ed25519) -> broadcast -> confirmation, and the chain is
read back independently (the stake account's bytes). The cooldown is waited out across an
epoch boundary; what the chain or the stake account's state refuses comes back typed, before
anything is signed where it can be (a withdrawal still cooling down is retryable); an expired
blockhash makes the transaction EXPIRED and the family's replacement under a new one lands.
"""

from __future__ import annotations

import asyncio
import secrets
import struct
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.models import TxOpts
from solders.pubkey import Pubkey
from sqlalchemy.orm import Session, sessionmaker

from services.chain.errors import (
    BlockhashExpired,
    FeesAboveCap,
    InsufficientFunds,
    IntentInvalid,
)
from services.chain.repository import NonceRepository
from services.chain.service import ChainService
from services.chain.servicer import status_to_pb
from services.chain.solana.adapter import (
    PreflightRefused,
    SignatureRejected,
    SolanaAdapter,
    StakeAccountExists,
    StakeDelegatedElsewhere,
    StakeNotInactive,
    StakeStateInvalid,
    TransactionRefused,
)
from services.chain.solana.chain import LAMPORTS_PER_SOL, MAX_PROCESSING_AGE
from services.chain.solana.devnet import SolanaDevnet
from services.chain.types import NonceRelease, TransactionStatus, TxState
from services.families.config import ChainConfig
from services.families.solana.family import SolanaFamily, replay_key, stake_account
from services.families.solana.instructions import STAKE_ACCOUNT_RENT_EXEMPT
from services.families.solana.keys import b58
from services.pb.custos.chain.v1 import chain_pb2
from services.runtime.errors import FailedPrecondition, Unavailable
from services.runtime.intent import (
    Action,
    IntentSpec,
    RestakeTarget,
    StakeTarget,
    TargetParams,
    UnstakeTarget,
)
from services.signer.hsm import Hsm
from services.signer.types import KeyAlgorithm
from tests.fixtures.solana import SESSION_SLOT_SECONDS

SOL = LAMPORTS_PER_SOL
FEE = 5000
FAMILY = SolanaFamily()


@dataclass
class SolanaVault:
    """A vault key generated in SoftHSM (Ed25519) and its funded account on the devnet."""

    hsm: Hsm
    key_id: bytes
    public_key: bytes
    config: ChainConfig
    signed: dict[bytes, bytes] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return b58(self.public_key)

    def sign(self, unsigned_tx: bytes) -> bytes:
        """The wire transaction: the HSM's CKM_EDDSA signature over the message, assembled."""
        signature = self.hsm.sign(self.key_id, FAMILY.signing_payload(self.config, unsigned_tx))
        return FAMILY.assemble(self.config, unsigned_tx, signature, self.public_key).signed_tx


@pytest.fixture(scope="module")
def solana_devnet() -> Iterator[SolanaDevnet]:
    """This module's own devnet: its stake accounts, left activating, would change the vote
    accounts' active stake that other modules' tests measure across an epoch boundary."""
    with SolanaDevnet(slot_seconds=SESSION_SLOT_SECONDS) as net:
        yield net


@pytest.fixture(scope="module")
def solana_config(solana_devnet: SolanaDevnet) -> ChainConfig:
    return solana_devnet.chain_config()


@pytest.fixture
def solana_service(solana_config: ChainConfig, sqlite_sessions: sessionmaker[Session]) -> ChainService:
    return ChainService([solana_config], sqlite_sessions)


def _new_vault(hsm: Hsm, config: ChainConfig) -> SolanaVault:
    key_id = secrets.token_bytes(16)
    public_key = hsm.generate_keypair(KeyAlgorithm.ED25519, f"solana-test-vault-{key_id.hex()}", key_id)
    return SolanaVault(hsm, key_id, public_key, config)


@pytest.fixture
def vault(solana_devnet: SolanaDevnet, hsm: Hsm, solana_config: ChainConfig) -> SolanaVault:
    made = _new_vault(hsm, solana_config)
    solana_devnet.fund(made.address, 20 * SOL)
    return made


@pytest.fixture
async def client(solana_devnet: SolanaDevnet) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(solana_devnet.rpc_url, commitment=Confirmed) as c:
        yield c


def _seed() -> TargetParams:
    return TargetParams.of({"seed": f"t-{uuid.uuid4().hex[:20]}".encode()})


def _stake(config: ChainConfig, vote: str, seed: TargetParams, amount: int = 3 * SOL) -> IntentSpec:
    return IntentSpec(Action.STAKE, config.name, "vault-s", amount, StakeTarget(vote, seed))


def _unstake(config: ChainConfig, vote: str, seed: TargetParams) -> IntentSpec:
    return IntentSpec(Action.UNSTAKE, config.name, "vault-s", 0, UnstakeTarget(vote, seed))


def _restake(config: ChainConfig, source: str, target: str, seed: TargetParams) -> IntentSpec:
    return IntentSpec(Action.RESTAKE, config.name, "vault-s", 0, RestakeTarget(source, target, seed))


def _stake_address(vault: SolanaVault, seed: TargetParams) -> Pubkey:
    raw = seed.get("seed")
    assert raw is not None
    return Pubkey(stake_account(vault.public_key, raw))


async def _delegation(client: AsyncClient, stake: Pubkey) -> tuple[str, int, int, int]:
    """(vote account, delegated lamports, activation, deactivation) from the account's own bytes."""
    account = (await client.get_account_info(stake, Confirmed)).value
    assert account is not None
    data = bytes(account.data)
    assert struct.unpack_from("<I", data, 0)[0] == 2  # StakeStateV2::Stake
    amount, activation, deactivation = struct.unpack_from("<QQQ", data, 156)
    return str(Pubkey(data[124:156])), amount, activation, deactivation


async def _balance(client: AsyncClient, address: str | Pubkey) -> int:
    key = address if isinstance(address, Pubkey) else Pubkey.from_string(address)
    return (await client.get_balance(key, Confirmed)).value


async def _settled(service: ChainService, chain: str, tx_hash: str, timeout: float = 10) -> TransactionStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = await service.transaction_status(chain, tx_hash)
        if status.state in (TxState.CONFIRMED, TxState.FAILED, TxState.EXPIRED):
            return status
        assert time.monotonic() < deadline, f"{tx_hash} not confirmed: {status}"
        await asyncio.sleep(0.05)


async def _run(service: ChainService, vault: SolanaVault, spec: IntentSpec, step: str) -> str:
    """Builds, signs, broadcasts (twice: the second sends nothing) and waits for CONFIRMED."""
    built = await service.build_transaction(
        f"int-{uuid.uuid4().hex}", spec, vault.address, step=step, public_key=vault.public_key
    )
    assert built.decoded.step == step and built.decoded.from_address == vault.address
    signed = vault.sign(built.unsigned_tx)
    sent = await service.broadcast(spec.chain, signed)
    assert sent.already_known is False
    again = await service.broadcast(spec.chain, signed)
    assert (again.tx_hash, again.already_known) == (sent.tx_hash, True)
    status = await _settled(service, spec.chain, sent.tx_hash)
    assert status.state is TxState.CONFIRMED, status.failure_reason
    return sent.tx_hash


# -- the steps ------------------------------------------------------------------------------------


async def test_stake_then_unstake_waits_out_the_cooldown_epoch_and_returns_everything(
    solana_service: ChainService,
    vault: SolanaVault,
    solana_devnet: SolanaDevnet,
    solana_config: ChainConfig,
    client: AsyncClient,
) -> None:
    first = solana_devnet.vote_accounts[0]
    seed = _seed()
    stake = _stake(solana_config, first, seed)
    context = await solana_service.validate_intent(stake, vault.address)
    address = _stake_address(vault, seed)
    assert f"new stake account {address}" in context and first in context

    await _run(solana_service, vault, stake, "stake")
    start = (await client.get_epoch_info(Confirmed)).value.epoch
    assert await _delegation(client, address) == (
        first,
        3 * SOL - STAKE_ACCOUNT_RENT_EXEMPT,
        start,
        2**64 - 1,
    )
    assert await _balance(client, vault.address) == 20 * SOL - 3 * SOL - FEE
    # the same seed again is another STAKE of an existing account: refused at submission and build
    with pytest.raises(StakeAccountExists, match="already exists"):
        await solana_service.validate_intent(stake, vault.address)
    with pytest.raises(StakeAccountExists):
        await solana_service.build_transaction(
            "int-again", stake, vault.address, step="stake", public_key=vault.public_key
        )
    solana_devnet.advance_epoch()

    unstake = _unstake(solana_config, first, seed)
    context = await solana_service.validate_intent(unstake, vault.address)
    assert f"stake account {address} holds 3 SOL, delegated to vote account {first}" in context
    # a withdrawal before the deactivation: the stake account is still delegated
    with pytest.raises(StakeStateInvalid, match="deactivated first"):
        await solana_service.build_transaction(
            "int-u", unstake, vault.address, step="withdraw", public_key=vault.public_key
        )
    deactivation_tx = await _run(solana_service, vault, unstake, "deactivate")
    now = (await client.get_epoch_info(Confirmed)).value.epoch
    assert (await _delegation(client, address))[3] == now

    wait = await solana_service.wait_status(solana_config.name, "cooldown", deactivation_tx, vault.address)
    assert (wait.done, wait.until) == (False, None)
    assert (
        wait.detail == f"cooling down: deactivated in epoch {now}, inactive from epoch {now + 1} (now {now})"
    )
    # built before the cooldown epoch passes: retryable, never a failure
    with pytest.raises(StakeNotInactive, match="cooling down") as early:
        await solana_service.build_transaction(
            "int-u", unstake, vault.address, step="withdraw", public_key=vault.public_key
        )
    assert isinstance(early.value, Unavailable)

    solana_devnet.advance_epoch()
    wait = await solana_service.wait_status(solana_config.name, "cooldown", deactivation_tx, vault.address)
    assert wait.done is True and wait.detail.startswith("cooled down: deactivated in epoch")

    before = await _balance(client, vault.address)
    whole = await _balance(client, address)
    assert whole == 3 * SOL
    built = await solana_service.build_transaction(
        "int-u", unstake, vault.address, step="withdraw", public_key=vault.public_key
    )
    assert built.decoded.amount == whole
    await _run(solana_service, vault, unstake, "withdraw")
    assert (await client.get_account_info(address, Confirmed)).value is None
    assert await _balance(client, vault.address) == before + whole - FEE
    wait = await solana_service.wait_status(solana_config.name, "cooldown", deactivation_tx, vault.address)
    assert wait.done is True and "closed" in wait.detail
    # nothing was ever reserved: releasing gives nothing back
    assert await solana_service.release_nonces(solana_config.name, "int-u", "test") == NonceRelease()


async def test_restake_deactivates_cools_down_and_redelegates_to_the_other_vote_account(
    solana_service: ChainService,
    vault: SolanaVault,
    solana_devnet: SolanaDevnet,
    solana_config: ChainConfig,
    client: AsyncClient,
) -> None:
    first, second = solana_devnet.vote_accounts
    seed = _seed()
    await _run(solana_service, vault, _stake(solana_config, first, seed), "stake")
    solana_devnet.advance_epoch()
    restake = _restake(solana_config, first, second, seed)
    context = await solana_service.validate_intent(restake, vault.address)
    assert f"moves to vote account {second}" in context

    deactivation_tx = await _run(solana_service, vault, restake, "deactivate")
    with pytest.raises(StakeNotInactive):
        await solana_service.build_transaction(
            "int-r", restake, vault.address, step="redelegate", public_key=vault.public_key
        )
    solana_devnet.advance_epoch()
    assert (
        await solana_service.wait_status(solana_config.name, "cooldown", deactivation_tx, vault.address)
    ).done
    await _run(solana_service, vault, restake, "redelegate")
    voter, delegated, activation, deactivation = await _delegation(client, _stake_address(vault, seed))
    now = (await client.get_epoch_info(Confirmed)).value.epoch
    assert (voter, delegated, activation, deactivation) == (
        second,
        3 * SOL - STAKE_ACCOUNT_RENT_EXEMPT,
        now,
        2**64 - 1,
    )


# -- refusals -------------------------------------------------------------------------------------


async def test_an_unstake_naming_another_vote_account_than_the_stake_account_s_is_refused_before_building(
    solana_service: ChainService, vault: SolanaVault, solana_devnet: SolanaDevnet, solana_config: ChainConfig
) -> None:
    first, second = solana_devnet.vote_accounts
    seed = _seed()
    await _run(solana_service, vault, _stake(solana_config, first, seed), "stake")
    wrong = _unstake(solana_config, second, seed)
    with pytest.raises(
        StakeDelegatedElsewhere,
        match=f"delegated to vote account {first}; the intent names vote account {second}",
    ):
        await solana_service.validate_intent(wrong, vault.address)
    with pytest.raises(StakeDelegatedElsewhere) as refused:
        await solana_service.build_transaction(
            "int-w", wrong, vault.address, step="deactivate", public_key=vault.public_key
        )
    assert isinstance(refused.value, FailedPrecondition)
    # a RESTAKE out of the wrong vote account likewise; an unknown stake account is missing
    with pytest.raises(StakeDelegatedElsewhere):
        await solana_service.build_transaction(
            "int-w2",
            _restake(solana_config, second, first, seed),
            vault.address,
            step="deactivate",
            public_key=vault.public_key,
        )
    with pytest.raises(FailedPrecondition, match="does not exist"):
        await solana_service.validate_intent(_unstake(solana_config, first, _seed()), vault.address)


async def test_what_the_stake_program_or_the_vault_cannot_do_is_refused_before_signing(
    solana_service: ChainService,
    vault: SolanaVault,
    solana_devnet: SolanaDevnet,
    solana_config: ChainConfig,
    sqlite_sessions: sessionmaker[Session],
    hsm: Hsm,
) -> None:
    first = solana_devnet.vote_accounts[0]
    # below the minimum delegation (1 SOL after the rent-exempt reserve): the cluster says so at
    # submission, and the simulation refuses the build with the Stake program's own error
    small = _stake(solana_config, first, _seed(), amount=STAKE_ACCOUNT_RENT_EXEMPT + SOL // 2)
    with pytest.raises(IntentInvalid, match="minimum delegation is 1 SOL"):
        await solana_service.validate_intent(small, vault.address)
    with pytest.raises(TransactionRefused, match=r"refuses the stake \(stake\): .*instruction 2"):
        await solana_service.build_transaction(
            "int-small", small, vault.address, step="stake", public_key=vault.public_key
        )
    # a vault that cannot pay
    too_much = _stake(solana_config, first, _seed(), amount=25 * SOL)
    with pytest.raises(InsufficientFunds):
        await solana_service.validate_intent(too_much, vault.address)
    with pytest.raises(InsufficientFunds):
        await solana_service.build_transaction(
            "int-much", too_much, vault.address, step="stake", public_key=vault.public_key
        )
    # fees above the chain's cap
    capped = ChainService([solana_devnet.chain_config(max_fee_wei=FEE - 1)], sqlite_sessions)
    with pytest.raises(FeesAboveCap):
        await capped.build_transaction(
            "int-fee",
            _stake(solana_config, first, _seed()),
            vault.address,
            step="stake",
            public_key=vault.public_key,
        )
    # a vote account the cluster does not know, a step the action does not have, another key
    unknown = _stake(solana_config, b58(secrets.token_bytes(32)), _seed())
    with pytest.raises(IntentInvalid, match="is not a vote account"):
        await solana_service.validate_intent(unknown, vault.address)
    with pytest.raises(IntentInvalid, match="not a signed step"):
        await solana_service.build_transaction(
            "int-step",
            _stake(solana_config, first, _seed()),
            vault.address,
            step="withdraw",
            public_key=vault.public_key,
        )
    other = _new_vault(hsm, solana_config)
    with pytest.raises(IntentInvalid, match="vault key's address"):
        await solana_service.build_transaction(
            "int-key",
            _stake(solana_config, first, _seed()),
            vault.address,
            step="stake",
            public_key=other.public_key,
        )
    with pytest.raises(IntentInvalid, match="no wait 'unbonding'"):
        await solana_service.wait_status(solana_config.name, "unbonding", b58(bytes(64)), vault.address)
    with pytest.raises(IntentInvalid, match="64-byte signature"):
        await solana_service.transaction_status(solana_config.name, "0x" + "ab" * 32)


async def test_a_tampered_signature_is_refused_by_the_svm_and_nothing_is_kept_to_resend(
    solana_service: ChainService,
    vault: SolanaVault,
    solana_devnet: SolanaDevnet,
    solana_config: ChainConfig,
    client: AsyncClient,
    sqlite_sessions: sessionmaker[Session],
) -> None:
    spec = _stake(solana_config, solana_devnet.vote_accounts[0], _seed())
    built = await solana_service.build_transaction(
        "int-t", spec, vault.address, step="stake", public_key=vault.public_key
    )
    signed = bytearray(vault.sign(built.unsigned_tx))
    signed[1 + 10] ^= 0x01  # a bit of the signature
    with pytest.raises(SignatureRejected, match="refused the signature"):
        await solana_service.broadcast(solana_config.name, bytes(signed))
    tampered_id = b58(bytes(signed[1:65]))
    assert NonceRepository(sqlite_sessions).broadcast(solana_config.name, tampered_id) is None
    assert (
        await solana_service.transaction_status(solana_config.name, tampered_id)
    ).state is TxState.NOT_FOUND
    assert await _balance(client, vault.address) == 20 * SOL
    # the genuine signature of the same bytes lands
    sent = await solana_service.broadcast(solana_config.name, vault.sign(built.unsigned_tx))
    assert (await _settled(solana_service, solana_config.name, sent.tx_hash)).state is TxState.CONFIRMED


async def test_an_expired_blockhash_makes_the_transaction_expired_and_its_rebuild_lands(
    solana_service: ChainService,
    vault: SolanaVault,
    solana_devnet: SolanaDevnet,
    solana_config: ChainConfig,
    client: AsyncClient,
) -> None:
    seed = _seed()
    spec = _stake(solana_config, solana_devnet.vote_accounts[0], seed)
    first = await solana_service.build_transaction(
        "int-x", spec, vault.address, step="stake", public_key=vault.public_key
    )
    old = vault.sign(first.unsigned_tx)
    solana_devnet.advance_slots(MAX_PROCESSING_AGE + 1)
    adapter = SolanaAdapter(solana_config)
    old_id = adapter.inspect_signed(old).tx_hash
    with pytest.raises(BlockhashExpired, match="can never land"):
        await adapter.broadcast(old, old_id)
    # through the service the send is no error: the transaction just never lands, its status says so
    sent = await solana_service.broadcast(solana_config.name, old)
    assert (sent.tx_hash, sent.already_known) == (old_id, False)
    status = await solana_service.transaction_status(solana_config.name, old_id)
    assert status.state is TxState.EXPIRED and "expired" in status.failure_reason
    assert status_to_pb(status).state == chain_pb2.TRANSACTION_STATE_EXPIRED

    rebuilt = await solana_service.build_transaction(
        "int-x", spec, vault.address, step="stake", public_key=vault.public_key
    )
    assert rebuilt.unsigned_tx != first.unsigned_tx
    assert (
        rebuilt.decoded.nonce
        == first.decoded.nonce
        == replay_key(bytes(_stake_address(vault, seed)), "stake")
    )
    assert FAMILY.replacement_allowed(solana_config, old, rebuilt.unsigned_tx)
    sent = await solana_service.broadcast(solana_config.name, vault.sign(rebuilt.unsigned_tx))
    assert (await _settled(solana_service, solana_config.name, sent.tx_hash)).state is TxState.CONFIRMED
    # the expired one stays expired (it can never land), and the vault paid once
    assert (await solana_service.transaction_status(solana_config.name, old_id)).state is TxState.EXPIRED
    assert await _balance(client, vault.address) == 20 * SOL - 3 * SOL - FEE


async def test_a_repeated_broadcast_sends_nothing_twice_even_after_a_restart(
    solana_service: ChainService,
    vault: SolanaVault,
    solana_devnet: SolanaDevnet,
    solana_config: ChainConfig,
    sqlite_sessions: sessionmaker[Session],
    client: AsyncClient,
) -> None:
    spec = _stake(solana_config, solana_devnet.vote_accounts[1], _seed(), amount=2 * SOL)
    built = await solana_service.build_transaction(
        "int-r", spec, vault.address, step="stake", public_key=vault.public_key
    )
    signed = vault.sign(built.unsigned_tx)
    sent = await solana_service.broadcast(solana_config.name, signed)
    restarted = ChainService([solana_config], sqlite_sessions)
    repeats = await asyncio.gather(*(restarted.broadcast(solana_config.name, signed) for _ in range(3)))
    assert {(r.tx_hash, r.already_known) for r in repeats} == {(sent.tx_hash, True)}
    status = await _settled(restarted, solana_config.name, sent.tx_hash)
    assert status.state is TxState.CONFIRMED and status.confirmations >= 1 and status.block_number > 0
    assert await _balance(client, vault.address) == 20 * SOL - 2 * SOL - FEE


async def test_a_replacement_lands_at_most_once_and_a_landed_failure_reads_failed_with_its_reason(
    solana_service: ChainService,
    vault: SolanaVault,
    solana_devnet: SolanaDevnet,
    solana_config: ChainConfig,
    client: AsyncClient,
) -> None:
    spec = _stake(solana_config, solana_devnet.vote_accounts[0], _seed())
    first = await solana_service.build_transaction(
        "int-2", spec, vault.address, step="stake", public_key=vault.public_key
    )
    solana_devnet.advance_slots(1)
    second = await solana_service.build_transaction(
        "int-2", spec, vault.address, step="stake", public_key=vault.public_key
    )
    replacement = vault.sign(second.unsigned_tx)
    assert FAMILY.replacement_allowed(solana_config, vault.sign(first.unsigned_tx), second.unsigned_tx)
    await _run_signed(solana_service, solana_config, vault.sign(first.unsigned_tx))
    # the replacement of a step that landed: the node's preflight refuses it, nothing is kept
    with pytest.raises(PreflightRefused, match=r"instruction 0 \(System program\): AccountAlreadyInUse"):
        await solana_service.broadcast(solana_config.name, replacement)
    # sent past custos without preflight, it lands, fails, and pays only its fee
    before = await _balance(client, vault.address)
    sent = await client.send_raw_transaction(replacement, TxOpts(skip_preflight=True))
    status = await _settled(solana_service, solana_config.name, str(sent.value))
    assert status.state is TxState.FAILED
    assert "instruction 0 (System program): AccountAlreadyInUse (custom error 0x0)" in status.failure_reason
    assert await _balance(client, vault.address) == before - FEE


async def _run_signed(service: ChainService, config: ChainConfig, signed: bytes) -> None:
    sent = await service.broadcast(config.name, signed)
    assert (await _settled(service, config.name, sent.tx_hash)).state is TxState.CONFIRMED
