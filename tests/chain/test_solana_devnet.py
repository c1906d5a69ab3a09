"""The Solana devnet (LiteSVM behind our JSON-RPC server), driven through solana-py's AsyncClient as the
adapter will drive it: faucet, transfers, statuses, the stake lifecycle across epochs, and the refusals a
cluster answers (tampered signature, replay, expired blockhash), each read on the wire.

Stake instructions are written inline (bincode: u32 LE variant, then the fields); the product encoder is
another module's job and is tested against reference bytes there.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import base58
import pytest
from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed, Finalized, Processed
from solana.rpc.core import RPCException
from solana.rpc.models import TxOpts
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.rpc.errors import RpcCustomErrorFieldless, SendTransactionPreflightFailureMessage
from solders.signature import Signature
from solders.system_program import (
    CreateAccountWithSeedParams,
    TransferParams,
    create_account_with_seed,
    transfer,
)
from solders.sysvar import CLOCK, RENT, STAKE_HISTORY
from solders.transaction import Transaction, VersionedTransaction

from services.chain.solana.chain import MAX_PROCESSING_AGE
from services.chain.solana.devnet import SolanaDevnet
from services.chain.solana.programs import STAKE_PROGRAM
from services.families.config import ChainFamily
from services.runtime.ports import free_port

SOL = 1_000_000_000
STAKE_CONFIG = Pubkey.from_string("StakeConfig11111111111111111111111111111111")
STAKE_ACCOUNT_SIZE = 200
U64_MAX = 2**64 - 1
FAST = TxOpts(preflight_commitment=Confirmed)
SKIP = TxOpts(skip_preflight=True, preflight_commitment=Confirmed)


# -- helpers --------------------------------------------------------------------------------


@pytest.fixture
async def client(solana_devnet: SolanaDevnet) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(solana_devnet.rpc_url, commitment=Confirmed) as c:
        yield c


def raw_rpc(url: str, method: str, params: list[Any] | None = None) -> dict[str, Any]:
    """One JSON-RPC call as bytes on the wire: the whole answer, error or result."""
    body = json.dumps({"jsonrpc": "2.0", "id": 7, "method": method, "params": params or []}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - our 127.0.0.1 server
        return dict(json.loads(answer.read()))


async def signed(client: AsyncClient, payer: Keypair, instructions: list[Instruction]) -> Transaction:
    blockhash = (await client.get_latest_blockhash(Confirmed)).value.blockhash
    return Transaction([payer], Message(instructions, payer.pubkey()), blockhash)


async def land(client: AsyncClient, tx: Transaction | bytes) -> Signature:
    """Sends with preflight and waits until the transaction is confirmed."""
    sent = await client.send_raw_transaction(bytes(tx), FAST)
    await client.confirm_transaction(sent.value, Confirmed, sleep_seconds=0.05)
    return sent.value


async def funded(client: AsyncClient, lamports: int = 10 * SOL) -> Keypair:
    wallet = Keypair()
    airdrop = await client.request_airdrop(wallet.pubkey(), lamports)
    await client.confirm_transaction(airdrop.value, Confirmed, sleep_seconds=0.05)
    return wallet


def preflight_failure(e: pytest.ExceptionInfo[RPCException]) -> SendTransactionPreflightFailureMessage:
    error = e.value.args[0]
    assert isinstance(error, SendTransactionPreflightFailureMessage), error
    return error


# Stake instructions: bincode, u32 LE variant then fields; account lists as the Stake program reads them.


def stake_initialize(stake: Pubkey, authority: Pubkey) -> Instruction:
    lockup = struct.pack("<qQ", 0, 0) + bytes(32)  # unix_timestamp, epoch, custodian: no lockup
    data = struct.pack("<I", 0) + bytes(authority) + bytes(authority) + lockup
    return Instruction(
        STAKE_PROGRAM, data, [AccountMeta(stake, False, True), AccountMeta(RENT, False, False)]
    )


def stake_delegate(stake: Pubkey, vote: Pubkey, authority: Pubkey) -> Instruction:
    accounts = [
        AccountMeta(stake, False, True),
        AccountMeta(vote, False, False),
        AccountMeta(CLOCK, False, False),
        AccountMeta(STAKE_HISTORY, False, False),
        AccountMeta(STAKE_CONFIG, False, False),
        AccountMeta(authority, True, False),
    ]
    return Instruction(STAKE_PROGRAM, struct.pack("<I", 2), accounts)


def stake_withdraw(stake: Pubkey, to: Pubkey, authority: Pubkey, lamports: int) -> Instruction:
    accounts = [
        AccountMeta(stake, False, True),
        AccountMeta(to, False, True),
        AccountMeta(CLOCK, False, False),
        AccountMeta(STAKE_HISTORY, False, False),
        AccountMeta(authority, True, False),
    ]
    return Instruction(STAKE_PROGRAM, struct.pack("<IQ", 4, lamports), accounts)


def stake_deactivate(stake: Pubkey, authority: Pubkey) -> Instruction:
    accounts = [
        AccountMeta(stake, False, True),
        AccountMeta(CLOCK, False, False),
        AccountMeta(authority, True, False),
    ]
    return Instruction(STAKE_PROGRAM, struct.pack("<I", 5), accounts)


async def delegation(client: AsyncClient, stake: Pubkey) -> tuple[Pubkey, int, int, int]:
    """(vote account, stake, activation epoch, deactivation epoch) read from the stake account's bytes."""
    account = (await client.get_account_info(stake, Confirmed)).value
    assert account is not None and account.owner == STAKE_PROGRAM
    data = bytes(account.data)
    assert struct.unpack_from("<I", data, 0)[0] == 2  # StakeStateV2::Stake
    amount, activation, deactivation = struct.unpack_from("<QQQ", data, 156)
    return Pubkey(data[124:156]), amount, activation, deactivation


async def activated(client: AsyncClient, vote: str) -> int:
    accounts = (await client.get_vote_accounts(commitment=Confirmed)).value
    return next(a.activated_stake for a in accounts.current if str(a.vote_pubkey) == vote)


async def epoch(client: AsyncClient) -> int:
    return (await client.get_epoch_info(Processed)).value.epoch


# -- the faucet, accounts and a transfer ---------------------------------------------------------


async def test_airdrop_lands_and_balances_read_back(client: AsyncClient, solana_devnet: SolanaDevnet) -> None:
    wallet = await funded(client, 3 * SOL)
    assert (await client.get_balance(wallet.pubkey(), Confirmed)).value == 3 * SOL
    solana_devnet.fund(str(wallet.pubkey()), SOL)
    solana_devnet.fund(wallet.pubkey(), SOL)  # the same transfer again in one slot is a second transfer
    assert (await client.get_balance(wallet.pubkey(), Processed)).value == 5 * SOL

    nobody = Keypair().pubkey()
    answer = await client.get_multiple_accounts([wallet.pubkey(), nobody], Confirmed)
    mine, missing = answer.value
    assert (
        mine is not None
        and mine.lamports == 5 * SOL
        and str(mine.owner) == "11111111111111111111111111111111"
    )
    assert missing is None
    assert (await client.get_balance(nobody)).value == 0
    assert answer.context.slot >= 0


async def test_transfer_is_confirmed_then_finalized_and_read_back(client: AsyncClient) -> None:
    sender, receiver = await funded(client), Keypair().pubkey()
    tx = await signed(
        client,
        sender,
        [transfer(TransferParams(from_pubkey=sender.pubkey(), to_pubkey=receiver, lamports=SOL))],
    )
    signature = await land(client, tx)
    assert signature == tx.signatures[0]

    status = (await client.get_signature_statuses([signature])).value[0]
    assert status is not None and status.err is None and status.slot > 0
    assert str(status.confirmation_status) in (
        "TransactionConfirmationStatus.Confirmed",
        "TransactionConfirmationStatus.Processed",
    )

    found = (await client.get_transaction(signature, "json", Confirmed, 0)).value
    assert found is not None and found.slot == status.slot
    meta = found.transaction.meta
    assert meta is not None and meta.err is None and meta.fee == 5000
    assert meta.log_messages == [
        "Program 11111111111111111111111111111111 invoke [1]",
        "Program 11111111111111111111111111111111 success",
    ]
    assert meta.pre_balances[0] - meta.post_balances[0] == SOL + 5000
    assert meta.post_balances[1] == SOL
    assert found.transaction.transaction.signatures == [signature]
    as_bytes = (await client.get_transaction(signature, "base64", Confirmed, 0)).value
    assert as_bytes is not None and bytes(as_bytes.transaction.transaction) == bytes(
        VersionedTransaction.from_legacy(tx)
    )

    deadline = time.monotonic() + 10
    while (
        status := (await client.get_signature_statuses([signature])).value[0]
    ) is not None and status.confirmations is not None:
        assert time.monotonic() < deadline, "not finalized within 10 s"
        await asyncio.sleep(0.05)
    assert status is not None and str(status.confirmation_status).endswith("Finalized")
    assert (await client.get_transaction(signature, "json", Finalized, 0)).value is not None


# -- stake: delegate, activate at the epoch boundary, redelegate, cool down, withdraw -------------


async def test_stake_activates_redelegates_cools_down_and_withdraws(
    client: AsyncClient, solana_devnet: SolanaDevnet
) -> None:
    vault = await funded(client, 20 * SOL)
    first, second = solana_devnet.vote_accounts
    seed = "custos-stake-1"
    stake = Pubkey.create_with_seed(vault.pubkey(), seed, STAKE_PROGRAM)
    amount = 3 * SOL
    create = create_account_with_seed(
        CreateAccountWithSeedParams(
            from_pubkey=vault.pubkey(),
            to_pubkey=stake,
            base=vault.pubkey(),
            seed=seed,
            lamports=amount,
            space=STAKE_ACCOUNT_SIZE,
            owner=STAKE_PROGRAM,
        )
    )
    before = await activated(client, first)
    await land(
        client,
        await signed(
            client,
            vault,
            [
                create,
                stake_initialize(stake, vault.pubkey()),
                stake_delegate(stake, Pubkey.from_string(first), vault.pubkey()),
            ],
        ),
    )
    start = await epoch(client)
    voter, delegated, activation, deactivation = await delegation(client, stake)
    rent = (await client.get_minimum_balance_for_rent_exemption(STAKE_ACCOUNT_SIZE)).value
    assert (str(voter), delegated, activation, deactivation) == (first, amount - rent, start, U64_MAX)
    assert await activated(client, first) == before  # activating: not yet effective

    assert solana_devnet.advance_epoch() == start + 1
    assert await epoch(client) == start + 1
    assert await activated(client, first) == before + delegated

    # Redelegate: deactivate, wait out the cooldown epoch, delegate to the other vote account.
    await land(client, await signed(client, vault, [stake_deactivate(stake, vault.pubkey())]))
    assert (await delegation(client, stake))[3] == start + 1
    solana_devnet.advance_epoch()
    assert await activated(client, first) == before
    other_before = await activated(client, second)
    await land(
        client,
        await signed(client, vault, [stake_delegate(stake, Pubkey.from_string(second), vault.pubkey())]),
    )
    assert (await delegation(client, stake))[:3] == (Pubkey.from_string(second), delegated, start + 2)
    solana_devnet.advance_epoch()
    assert await activated(client, second) == other_before + delegated

    # Unstake: deactivate; a withdrawal before the cooldown epoch passes is refused by the Stake program.
    await land(client, await signed(client, vault, [stake_deactivate(stake, vault.pubkey())]))
    whole = (await client.get_balance(stake, Confirmed)).value
    early = await signed(client, vault, [stake_withdraw(stake, vault.pubkey(), vault.pubkey(), whole)])
    with pytest.raises(RPCException) as refused:
        await client.send_raw_transaction(bytes(early), FAST)
    failure = preflight_failure(refused)
    assert (
        failure.message
        == "Transaction simulation failed: Error processing Instruction 0: insufficient funds for instruction"
    )
    assert json.loads(failure.data.to_json())["err"] == {"InstructionError": [0, "InsufficientFunds"]}
    assert any("insufficient funds" in line for line in failure.data.logs or [])
    # Sent anyway (skipPreflight), it lands, fails and pays its fee, as on a cluster.
    vault_before = (await client.get_balance(vault.pubkey(), Processed)).value
    landed = (await client.send_raw_transaction(bytes(early), SKIP)).value
    status = (await client.get_signature_statuses([landed])).value[0]
    assert status is not None and json.loads(status.to_json())["err"] == {
        "InstructionError": [0, "InsufficientFunds"]
    }
    assert (await client.get_balance(vault.pubkey(), Processed)).value == vault_before - 5000
    await client.confirm_transaction(landed, Confirmed, sleep_seconds=0.05)
    failed = (await client.get_transaction(landed, "json", Confirmed, 0)).value
    assert failed is not None and failed.transaction.meta is not None and failed.transaction.meta.fee == 5000
    assert json.loads(failed.transaction.meta.to_json())["err"] == {
        "InstructionError": [0, "InsufficientFunds"]
    }

    solana_devnet.advance_epoch()
    await land(
        client, await signed(client, vault, [stake_withdraw(stake, vault.pubkey(), vault.pubkey(), whole)])
    )
    assert (await client.get_account_info(stake, Confirmed)).value is None
    assert (await client.get_balance(vault.pubkey(), Confirmed)).value == vault_before - 5000 - 5000 + whole


# -- refusals a cluster answers ---------------------------------------------------------------


async def test_tampered_signature_is_refused(client: AsyncClient) -> None:
    sender = await funded(client)
    tx = await signed(
        client,
        sender,
        [transfer(TransferParams(from_pubkey=sender.pubkey(), to_pubkey=Keypair().pubkey(), lamports=SOL))],
    )
    wire = bytearray(bytes(tx))
    wire[1 + 10] ^= 0x01  # a bit of the signature
    with pytest.raises(RPCException) as refused:
        await client.send_raw_transaction(bytes(wire), FAST)
    assert refused.value.args[0] == RpcCustomErrorFieldless.TransactionSignatureVerificationFailure  # -32003
    # Without preflight the node takes it and the leader drops it: it never gets a status.
    sent = (await client.send_raw_transaction(bytes(wire), SKIP)).value
    await asyncio.sleep(0.1)
    assert (await client.get_signature_statuses([sent], search_transaction_history=True)).value == [None]
    assert (await client.get_balance(sender.pubkey(), Processed)).value == 10 * SOL


async def test_replayed_transaction_is_answered_as_a_cluster_does(client: AsyncClient) -> None:
    sender = await funded(client)
    tx = await signed(
        client,
        sender,
        [transfer(TransferParams(from_pubkey=sender.pubkey(), to_pubkey=Keypair().pubkey(), lamports=SOL))],
    )
    signature = await land(client, tx)
    first = (await client.get_signature_statuses([signature])).value[0]
    with pytest.raises(RPCException) as replayed:
        await client.send_raw_transaction(bytes(tx), FAST)
    failure = preflight_failure(replayed)
    assert failure.message == "Transaction simulation failed: This transaction has already been processed"
    assert json.loads(failure.data.to_json())["err"] == "AlreadyProcessed"
    assert (
        await client.send_raw_transaction(bytes(tx), SKIP)
    ).value == signature  # accepted, not executed twice
    again = (await client.get_signature_statuses([signature])).value[0]
    assert again is not None and first is not None and again.slot == first.slot
    assert (await client.get_balance(sender.pubkey(), Processed)).value == 9 * SOL - 5000


async def test_expired_blockhash_is_refused(client: AsyncClient, solana_devnet: SolanaDevnet) -> None:
    sender, receiver = await funded(client), Keypair().pubkey()
    tx = await signed(
        client,
        sender,
        [transfer(TransferParams(from_pubkey=sender.pubkey(), to_pubkey=receiver, lamports=SOL))],
    )
    blockhash = str(tx.message.recent_blockhash)
    assert (
        raw_rpc(solana_devnet.rpc_url, "isBlockhashValid", [blockhash, {"commitment": "processed"}])[
            "result"
        ]["value"]
        is True
    )
    solana_devnet.advance_slots(MAX_PROCESSING_AGE + 1)
    assert raw_rpc(solana_devnet.rpc_url, "isBlockhashValid", [blockhash])["result"]["value"] is False
    # solana-py types the message as MessageV0 but sends its bytes: a legacy message is what custos sends.
    assert (await client.get_fee_for_message(tx.message)).value is None  # type: ignore[arg-type]
    with pytest.raises(RPCException) as expired:
        await client.send_raw_transaction(bytes(tx), FAST)
    failure = preflight_failure(expired)
    assert failure.message == "Transaction simulation failed: Blockhash not found"
    assert json.loads(failure.data.to_json())["err"] == "BlockhashNotFound"
    sent = (await client.send_raw_transaction(bytes(tx), SKIP)).value
    assert (await client.get_signature_statuses([sent])).value == [None]
    # The same transfer under a fresh blockhash is another transaction (the one allowed rebuild), and lands.
    again = [transfer(TransferParams(from_pubkey=sender.pubkey(), to_pubkey=receiver, lamports=SOL))]
    rebuilt = await signed(client, sender, again)
    assert rebuilt.message.instructions == tx.message.instructions
    assert rebuilt.signatures[0] != tx.signatures[0]
    await land(client, rebuilt)


async def test_blockhash_expires_with_time_at_a_fast_slot_rate() -> None:
    with SolanaDevnet(slot_seconds=0.002) as net:
        async with AsyncClient(net.rpc_url, commitment=Processed) as client:
            latest = (await client.get_latest_blockhash(Processed)).value
            height = (await client.get_block_height(Processed)).value
            assert height <= latest.last_valid_block_height - MAX_PROCESSING_AGE + 5
            deadline = time.monotonic() + 10
            while (await client.get_block_height(Processed)).value <= latest.last_valid_block_height:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            answer = raw_rpc(
                net.rpc_url, "isBlockhashValid", [str(latest.blockhash), {"commitment": "processed"}]
            )
            assert answer["result"]["value"] is False


# -- the rest of the surface, on the wire -----------------------------------------------------


async def test_cluster_queries_answer_in_a_clusters_shapes(
    client: AsyncClient, solana_devnet: SolanaDevnet
) -> None:
    url = solana_devnet.rpc_url
    assert (await client.get_genesis_hash()).value == Hash.from_string(solana_devnet.genesis_hash)
    assert await client.is_connected()
    assert "litesvm" in (await client.get_version()).value.solana_core
    info = (await client.get_epoch_info(Processed)).value
    assert info.slots_in_epoch == 432_000 and info.absolute_slot == info.block_height
    finalized, processed = (await client.get_slot(Finalized)).value, (await client.get_slot(Processed)).value
    assert processed - 32 <= finalized <= processed
    assert (await client.get_minimum_balance_for_rent_exemption(STAKE_ACCOUNT_SIZE)).value == 2_282_880
    minimum = raw_rpc(url, "getStakeMinimumDelegation", [{"commitment": "confirmed"}])["result"]
    assert minimum["value"] == SOL and minimum["context"]["slot"] >= 0  # all features on: the 1 SOL minimum
    votes = (await client.get_vote_accounts()).value
    assert sorted(str(v.vote_pubkey) for v in votes.current) == sorted(solana_devnet.vote_accounts)
    assert votes.delinquent == []
    for vote in solana_devnet.vote_accounts:
        account = (await client.get_account_info(Pubkey.from_string(vote))).value
        assert account is not None and str(account.owner) == "Vote111111111111111111111111111111111111111"

    assert raw_rpc(url, "getBalance", ["not-a-key"])["error"]["code"] == -32602
    assert (
        raw_rpc(url, "getTransaction", [str(Signature.default()), {"commitment": "processed"}])["error"][
            "code"
        ]
        == -32602
    )
    assert raw_rpc(url, "getSlot", [{"minContextSlot": 10**12}])["error"]["code"] == -32016
    assert raw_rpc(url, "getProgramAccounts", [str(STAKE_PROGRAM)])["error"] == {
        "code": -32601,
        "message": "Method not found",
    }
    assert raw_rpc(url, "requestAirdrop", [str(Keypair().pubkey()), 0])["error"]["code"] == -32602


async def test_simulation_reports_logs_and_replaces_an_expired_blockhash(
    client: AsyncClient, solana_devnet: SolanaDevnet
) -> None:
    sender = await funded(client)
    tx = await signed(
        client,
        sender,
        [transfer(TransferParams(from_pubkey=sender.pubkey(), to_pubkey=Keypair().pubkey(), lamports=SOL))],
    )
    ok = (await client.simulate_transaction(VersionedTransaction.from_legacy(tx), sig_verify=True)).value
    assert ok.err is None and ok.logs and ok.units_consumed == 150
    solana_devnet.advance_slots(MAX_PROCESSING_AGE + 1)
    stale = (await client.simulate_transaction(VersionedTransaction.from_legacy(tx))).value
    assert json.loads(stale.to_json())["err"] == "BlockhashNotFound"
    replaced = (
        await client.simulate_transaction(VersionedTransaction.from_legacy(tx), replace_recent_blockhash=True)
    ).value
    assert replaced.err is None and replaced.replacement_blockhash is not None
    assert (await client.get_balance(sender.pubkey(), Processed)).value == 10 * SOL  # nothing executed


async def test_base58_transactions_and_account_data(client: AsyncClient, solana_devnet: SolanaDevnet) -> None:
    """sendTransaction's default encoding is base58; getAccountInfo's is "binary" (a bare string)."""
    sender, receiver = await funded(client), Keypair().pubkey()
    tx = await signed(
        client,
        sender,
        [transfer(TransferParams(from_pubkey=sender.pubkey(), to_pubkey=receiver, lamports=SOL))],
    )
    sent = raw_rpc(solana_devnet.rpc_url, "sendTransaction", [base58.b58encode(bytes(tx)).decode()])
    assert sent["result"] == str(tx.signatures[0])
    await client.confirm_transaction(tx.signatures[0], Confirmed, sleep_seconds=0.05)
    vote = solana_devnet.vote_accounts[0]
    plain = raw_rpc(solana_devnet.rpc_url, "getAccountInfo", [str(receiver)])["result"]["value"]
    assert plain["lamports"] == SOL and plain["data"] == "" and plain["space"] == 0
    sliced = raw_rpc(
        solana_devnet.rpc_url,
        "getAccountInfo",
        [vote, {"encoding": "base58", "dataSlice": {"offset": 0, "length": 4}}],
    )["result"]["value"]
    assert base58.b58decode(sliced["data"][0]) == bytes([3, 0, 0, 0])  # VoteStateVersions::V3
    refused = raw_rpc(solana_devnet.rpc_url, "getAccountInfo", [vote, {"encoding": "base58"}])
    assert refused["error"]["code"] == -32602  # 3762 bytes: too large for base58, as on a cluster
    garbage = raw_rpc(solana_devnet.rpc_url, "sendTransaction", ["AAAA", {"encoding": "base64"}])
    assert garbage["error"]["code"] == -32602


def test_chain_config_is_the_registry_entry(solana_devnet: SolanaDevnet) -> None:
    config = solana_devnet.chain_config()
    assert config.family is ChainFamily.SOLANA and config.name == "solana-devnet"
    assert (
        config.chain_id
        == raw_rpc(solana_devnet.rpc_url, "getGenesisHash")["result"]
        == solana_devnet.genesis_hash
    )
    assert (config.rpc_url, config.denom, config.max_fee_wei) == (solana_devnet.rpc_url, "lamports", 50_000)
    assert config.amount_text(1_500_000_000) == "1.5 SOL"


def test_custos_advance_epoch_over_rpc(solana_devnet: SolanaDevnet) -> None:
    before = raw_rpc(solana_devnet.rpc_url, "getEpochInfo", [{"commitment": "processed"}])["result"]
    moved = raw_rpc(solana_devnet.rpc_url, "custos_advanceEpoch")["result"]
    assert moved == {"epoch": before["epoch"] + 1, "slot": (before["epoch"] + 1) * 432_000}
    assert (
        raw_rpc(solana_devnet.rpc_url, "getEpochInfo", [{"commitment": "processed"}])["result"]["slotIndex"]
        < 100
    )


# -- lifecycle -----------------------------------------------------------------------------


async def test_stop_leaves_no_thread_and_frees_the_port() -> None:
    threads = set(threading.enumerate())
    with SolanaDevnet() as net:
        port = net.port
        assert net.rpc_url == f"http://127.0.0.1:{port}"
        async with AsyncClient(net.rpc_url) as client:
            wallet = Keypair().pubkey()
            await client.request_airdrop(wallet, SOL)
            assert (await client.get_balance(wallet, Processed)).value == SOL
    assert set(threading.enumerate()) <= threads
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):
        s.connect(("127.0.0.1", port))  # nothing listens any more
    with pytest.raises(SolanaRpcException):
        async with AsyncClient(f"http://127.0.0.1:{port}", timeout=2) as client:
            await client.get_slot()
    with SolanaDevnet(port=port) as again:  # and the port can be served again at once
        assert raw_rpc(again.rpc_url, "getHealth")["result"] == "ok"


def test_runs_as_its_own_process_and_stops_on_sigterm() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.chain.solana.devnet", "--port", str(port), "--slot-ms", "100"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("ready "), line
        ready = json.loads(line.removeprefix("ready "))
        assert ready["rpc_url"] == f"http://127.0.0.1:{port}" and len(ready["vote_accounts"]) == 2
        assert raw_rpc(ready["rpc_url"], "getGenesisHash")["result"] == ready["genesis_hash"]
        assert raw_rpc(ready["rpc_url"], "getHealth")["result"] == "ok"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
