"""Stake, unstake and restake on a real anvil with the real deposit and system contracts."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.orm import Session, sessionmaker

from services.chain.devnet import Devnet
from services.chain.errors import DepositDataInvalid
from services.chain.ethereum.adapter import EthereumAdapter
from services.chain.service import ChainService
from services.chain.types import TxState
from services.families.config import ChainConfig
from services.families.ethereum.contracts import (
    CONSOLIDATION_REQUEST_CONTRACT,
    WITHDRAWAL_REQUEST_CONTRACT,
)
from services.families.ethereum.deposit import ETHER, GWEI
from services.families.ethereum.transactions import UnsignedTransaction
from services.runtime.intent import Action
from tests.chain.conftest import (
    HsmVaultSigner,
    deposit_for,
    restake_spec,
    stake_spec,
    unstake_spec,
    wait_final,
)

EMPTY_DEPOSIT_ROOT = bytes.fromhex("d70a234731285c6804c2a4f56711ddb8c82c99740f207854891028af34e27e5e")


async def _balance(devnet: Devnet, address: str) -> int:
    return int(await devnet.rpc.call("eth_getBalance", address, "latest"), 16)


async def test_32_eth_deposit_is_mined_and_emits_the_deposit_event(
    service: ChainService, chain_config: ChainConfig, vault: HsmVaultSigner
) -> None:
    adapter = service.adapter(chain_config.name)
    assert isinstance(adapter, EthereumAdapter)
    root_before = await adapter.deposit_root()
    gen = deposit_for(vault, chain_config)
    built = await service.build_transaction("intent-deposit", stake_spec(chain_config, gen), vault.address)
    assert built.decoded.action is Action.STAKE
    assert built.decoded.amount == built.decoded.value == 32 * ETHER
    assert built.decoded.from_address == vault.address

    sent = await service.broadcast(chain_config.name, vault.sign(built.unsigned_tx))
    status = await wait_final(service, chain_config.name, sent.tx_hash)

    assert status.state is TxState.CONFIRMED, status.failure_reason
    assert status.confirmations >= 1 and status.block_number > 0
    (event,) = [e for e in status.events if e.name == "DepositEvent"]
    assert event.fields["pubkey"] == "0x" + gen.data.pubkey.hex()
    assert event.fields["withdrawal_credentials"] == "0x" + gen.data.withdrawal_credentials.hex()
    assert event.fields["withdrawal_credentials"].endswith(vault.address[2:].lower())
    assert event.fields["amount_gwei"] == str(32 * ETHER // GWEI)
    assert event.fields["signature"] == "0x" + gen.data.signature.hex()
    assert int(event.fields["index"]) >= 0
    root_after = await adapter.deposit_root()
    assert root_after != root_before
    assert root_after != EMPTY_DEPOSIT_ROOT


async def test_exit_request_is_mined_and_its_log_names_vault_pubkey_and_amount(
    service: ChainService, chain_config: ChainConfig, vault: HsmVaultSigner
) -> None:
    pubkey = deposit_for(vault, chain_config).data.pubkey
    built = await service.build_transaction("intent-exit", unstake_spec(chain_config, pubkey), vault.address)
    assert built.decoded.to_address.lower() == WITHDRAWAL_REQUEST_CONTRACT
    assert built.decoded.value >= 1  # the fee the contract asked
    sent = await service.broadcast(chain_config.name, vault.sign(built.unsigned_tx))
    status = await wait_final(service, chain_config.name, sent.tx_hash)

    assert status.state is TxState.CONFIRMED, status.failure_reason
    (log,) = status.events
    assert log.name == "WithdrawalRequest"
    assert log.fields == {
        "source_address": vault.address,
        "validator_pubkey": "0x" + pubkey.hex(),
        "amount_gwei": "0",  # full exit
    }


async def test_partial_withdrawal_request_carries_the_amount(
    service: ChainService, chain_config: ChainConfig, vault: HsmVaultSigner
) -> None:
    pubkey = deposit_for(vault, chain_config).data.pubkey
    spec = unstake_spec(chain_config, pubkey, amount=3 * ETHER)
    built = await service.build_transaction("intent-partial", spec, vault.address)
    assert built.decoded.amount == 3 * ETHER
    sent = await service.broadcast(chain_config.name, vault.sign(built.unsigned_tx))
    status = await wait_final(service, chain_config.name, sent.tx_hash)
    assert status.events[0].fields["amount_gwei"] == str(3 * ETHER // GWEI)


async def test_consolidation_request_is_mined_and_its_log_names_both_validators(
    service: ChainService, chain_config: ChainConfig, vault: HsmVaultSigner
) -> None:
    source = deposit_for(vault, chain_config).data.pubkey
    target = deposit_for(vault, chain_config).data.pubkey
    built = await service.build_transaction(
        "intent-restake", restake_spec(chain_config, source, target), vault.address
    )
    assert built.decoded.to_address.lower() == CONSOLIDATION_REQUEST_CONTRACT
    sent = await service.broadcast(chain_config.name, vault.sign(built.unsigned_tx))
    status = await wait_final(service, chain_config.name, sent.tx_hash)

    assert status.state is TxState.CONFIRMED, status.failure_reason
    (log,) = status.events
    assert log.name == "ConsolidationRequest"
    assert log.fields == {
        "source_address": vault.address,
        "source_pubkey": "0x" + source.hex(),
        "target_pubkey": "0x" + target.hex(),
    }


async def test_bad_deposit_data_is_refused_before_any_nonce_is_reserved(
    service: ChainService, chain_config: ChainConfig, vault: HsmVaultSigner
) -> None:
    gen = deposit_for(vault, chain_config)
    bad = stake_spec(chain_config, gen, amount=31 * ETHER)
    with pytest.raises(DepositDataInvalid):
        await service.build_transaction("intent-bad", bad, vault.address)
    built = await service.build_transaction("intent-good", stake_spec(chain_config, gen), vault.address)
    assert built.decoded.nonce == 0  # the refused intent took nothing


async def test_two_intents_of_one_vault_built_concurrently_get_distinct_nonces_and_both_confirm(
    service: ChainService, chain_config: ChainConfig, vault: HsmVaultSigner
) -> None:
    specs = [stake_spec(chain_config, deposit_for(vault, chain_config)) for _ in range(2)]
    built = await asyncio.gather(
        *(service.build_transaction(f"intent-c{i}", spec, vault.address) for i, spec in enumerate(specs))
    )
    assert sorted(b.decoded.nonce for b in built) == [0, 1]
    # Broadcast the higher nonce first: the node holds it until the gap fills.
    for b in sorted(built, key=lambda b: -b.decoded.nonce):
        await service.broadcast(chain_config.name, vault.sign(b.unsigned_tx))
    hashes = [(await service.broadcast(chain_config.name, vault.sign(b.unsigned_tx))).tx_hash for b in built]
    statuses = [await wait_final(service, chain_config.name, h) for h in hashes]
    assert [s.state for s in statuses] == [TxState.CONFIRMED, TxState.CONFIRMED]


async def test_the_same_intent_step_asked_again_gets_the_same_nonce(
    service: ChainService, chain_config: ChainConfig, vault: HsmVaultSigner
) -> None:
    spec = stake_spec(chain_config, deposit_for(vault, chain_config))
    first = await service.build_transaction("intent-same", spec, vault.address)
    again = await service.build_transaction("intent-same", spec, vault.address)
    other = await service.build_transaction("intent-other", spec, vault.address)
    assert first.decoded.nonce == again.decoded.nonce == 0
    assert other.decoded.nonce == 1


async def test_a_reverting_transaction_is_reported_failed_with_its_reason(
    service: ChainService, chain_config: ChainConfig, vault: HsmVaultSigner
) -> None:
    """A deposit below the contract's minimum, built by hand past custos's own checks."""
    adapter = service.adapter(chain_config.name)
    assert isinstance(adapter, EthereumAdapter)
    gen = deposit_for(vault, chain_config)
    call = adapter.plan(stake_spec(chain_config, gen), vault.address)
    max_fee, tip = await adapter.estimate_fees()
    tx = UnsignedTransaction(
        chain_id=chain_config.evm_chain_id,
        nonce=await adapter.pending_nonce(vault.address),
        max_priority_fee_per_gas=tip,
        max_fee_per_gas=max_fee,
        gas=200_000,
        to=call.to,
        value=GWEI,  # the contract wants at least 1 ETH
        data=call.data,
    )
    sent = await service.broadcast(chain_config.name, vault.sign(tx.encode()))
    status = await wait_final(service, chain_config.name, sent.tx_hash)
    assert status.state is TxState.FAILED
    assert "deposit value too low" in status.failure_reason
    assert status.events == ()


async def test_broadcast_repeated_after_a_restart_does_not_double_spend(
    chain_config: ChainConfig,
    sqlite_sessions: sessionmaker[Session],
    vault: HsmVaultSigner,
    devnet: Devnet,
) -> None:
    first_service = ChainService([chain_config], sqlite_sessions)
    gen = deposit_for(vault, chain_config)
    built = await first_service.build_transaction("intent-r", stake_spec(chain_config, gen), vault.address)
    signed = vault.sign(built.unsigned_tx)
    first = await first_service.broadcast(chain_config.name, signed)
    await wait_final(first_service, chain_config.name, first.tx_hash)
    balance = await _balance(devnet, vault.address)

    restarted = ChainService([chain_config], sqlite_sessions)  # a new process, same database
    again = await restarted.broadcast(chain_config.name, signed)
    also = await restarted.broadcast(chain_config.name, signed)

    assert again.tx_hash == also.tx_hash == first.tx_hash
    assert again.already_known and also.already_known
    devnet.mine(1)
    assert await _balance(devnet, vault.address) == balance
    assert await restarted.adapter(chain_config.name).pending_nonce(vault.address) == 1
    # The rebuilt intent step after restart gets the same nonce, so it cannot pay twice either.
    rebuilt = await restarted.build_transaction("intent-r", stake_spec(chain_config, gen), vault.address)
    assert rebuilt.decoded.nonce == built.decoded.nonce


async def test_confirmations_are_counted_up_to_the_required_number(
    chain_config: ChainConfig, sqlite_sessions: sessionmaker[Session], vault: HsmVaultSigner, devnet: Devnet
) -> None:
    config = chain_config.model_copy(update={"confirmations": 3})
    service = ChainService([config], sqlite_sessions)
    pubkey = deposit_for(vault, config).data.pubkey
    built = await service.build_transaction("intent-conf", unstake_spec(config, pubkey), vault.address)
    sent = await service.broadcast(config.name, vault.sign(built.unsigned_tx))
    for _ in range(100):
        status = await service.transaction_status(config.name, sent.tx_hash)
        if status.confirmations:
            break
        await asyncio.sleep(0.05)
    assert status.state is TxState.PENDING and status.confirmations_required == 3
    devnet.mine(2)
    status = await service.transaction_status(config.name, sent.tx_hash)
    assert status.state is TxState.CONFIRMED and status.confirmations >= 3


async def test_unknown_transaction_hash_is_not_found(
    service: ChainService, chain_config: ChainConfig
) -> None:
    status = await service.transaction_status(chain_config.name, "0x" + "ab" * 32)
    assert status.state is TxState.NOT_FOUND


async def test_a_broadcast_the_node_lost_is_sent_again_when_its_status_is_asked(
    service: ChainService, chain_config: ChainConfig, vault: HsmVaultSigner, devnet: Devnet
) -> None:
    pubkey = deposit_for(vault, chain_config).data.pubkey
    built = await service.build_transaction("intent-lost", unstake_spec(chain_config, pubkey), vault.address)
    rpc = devnet.rpc
    await rpc.call("evm_setAutomine", False)
    try:
        sent = await service.broadcast(chain_config.name, vault.sign(built.unsigned_tx))
        await rpc.call("anvil_dropTransaction", sent.tx_hash)
        assert await rpc.call("eth_getTransactionByHash", sent.tx_hash) is None
        status = await service.transaction_status(chain_config.name, sent.tx_hash)
        assert status.state is TxState.PENDING
    finally:
        await rpc.call("evm_setAutomine", True)
    devnet.mine(1)
    assert (await wait_final(service, chain_config.name, sent.tx_hash)).state is TxState.CONFIRMED
