"""The Ethereum chain adapter: stake = deposit, unstake = EIP-7002 request, restake = EIP-7251 request."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from eth_abi import decode as abi_decode
from eth_utils import keccak, to_checksum_address

from services.chain.errors import (
    BroadcastRejected,
    FeesAboveCap,
    InsufficientFunds,
    IntentInvalid,
    NodeError,
    NodeUnavailable,
)
from services.chain.ethereum import history
from services.chain.ethereum.rpc import JsonRpcClient, RpcError
from services.chain.types import (
    ChainEvent,
    DecodedTransaction,
    SeenTransaction,
    SignedInfo,
    TransactionStatus,
    TxState,
    WaitStatus,
)
from services.families.config import ChainConfig
from services.families.ethereum import contracts as c
from services.families.ethereum.family import EthereumFamily, PlannedCall, parse_address
from services.families.ethereum.transactions import UnsignedTransaction, parse_signed
from services.runtime.intent import IntentSpec, PolicyChangeTarget

log = logging.getLogger("custos.chain")
GAS_MARGIN_PERCENT = 20
#: The deposit contract's cost depends on the deposit count when the transaction runs (one sha256 per
#: trailing zero bit of the new count, a fresh storage slot at each power of two): from 50,286 gas at an
#: odd count to 159,670 at 2**31 (measured on anvil, Prague). A build cannot know the count while other
#: deposits from the vault are in flight, and an estimate at an odd count ran out of gas at the next
#: power of two; so a deposit always gets the worst case. Unused gas is not charged.
DEPOSIT_GAS_FLOOR = 180_000
_ALREADY_KNOWN = ("already known", "known transaction", "already imported", "already exists")
_ERROR_SELECTOR = keccak(text="Error(string)")[:4]


def _eth(wei: int) -> str:
    """Wei as ETH for people: exact, without trailing zeros."""
    whole, frac = divmod(wei, 10**18)
    return f"{whole}.{frac:018d}".rstrip("0").rstrip(".") + " ETH"


def _revert_reason(err: RpcError) -> str:
    data = err.data
    if isinstance(data, dict):
        data = data.get("data")
    if isinstance(data, str) and data.startswith("0x"):
        raw = bytes.fromhex(data[2:])
        if raw[:4] == _ERROR_SELECTOR:
            with contextlib.suppress(Exception):  # not a well-formed Error(string): use the message
                return str(abi_decode(["string"], raw[4:])[0])
    return err.message


@dataclass(frozen=True)
class PreparedTransaction:
    """Everything of a transaction but its nonce: priced, and known to be affordable, when made."""

    call: PlannedCall
    sender: str
    value: int
    max_fee_per_gas: int
    max_priority_fee_per_gas: int
    gas: int


class EthereumAdapter:
    """One Ethereum chain of the registry, reached through its JSON-RPC node."""

    def __init__(self, config: ChainConfig, rpc: JsonRpcClient | None = None) -> None:
        self.config = config
        self.family = EthereumFamily()
        self.rpc = rpc or JsonRpcClient(config.rpc_url, timeout=config.rpc_timeout_seconds)
        self._deposit = bytes.fromhex(config.deposit_contract[2:])
        self._withdrawals = bytes.fromhex(c.WITHDRAWAL_REQUEST_CONTRACT[2:])
        self._consolidations = bytes.fromhex(c.CONSOLIDATION_REQUEST_CONTRACT[2:])

    # -- validation (pure: no node needed) ------------------------------------------------

    def plan(self, spec: IntentSpec, vault_address: str) -> PlannedCall:
        """Checks the intent's chain-specific data and returns the call that carries it out."""
        return self.family.plan(self.config, spec, vault_address)

    # -- building ---------------------------------------------------------------------------

    async def request_fee(self, contract: bytes) -> int:
        """The fee a system request contract asks now (eth_call with empty calldata)."""
        try:
            out = await self.rpc.call("eth_call", {"to": "0x" + contract.hex(), "data": "0x"}, "latest")
        except RpcError as e:
            raise NodeError(f"fee read from 0x{contract.hex()} failed: {e.message}") from None
        return int(out, 16)

    async def estimate_fees(self) -> tuple[int, int]:
        """(max_fee_per_gas, max_priority_fee_per_gas) within the chain's caps."""
        block = await self.rpc.call("eth_getBlockByNumber", "latest", False)
        base = int(block["baseFeePerGas"], 16)
        tip = min(int(await self.rpc.call("eth_maxPriorityFeePerGas"), 16), self.config.max_priority_fee_cap)
        if base + tip > self.config.max_fee_per_gas_cap:
            raise FeesAboveCap(
                f"base fee {base} + tip {tip} wei exceeds the cap {self.config.max_fee_per_gas_cap}",
                details={"base_fee": str(base)},
            )
        return min(2 * base + tip, self.config.max_fee_per_gas_cap), tip

    async def estimate_gas(self, sender: str, call: PlannedCall, value: int) -> int:
        try:
            est = await self.rpc.call(
                "eth_estimateGas",
                {
                    "from": sender,
                    "to": "0x" + call.to.hex(),
                    "value": hex(value),
                    "data": "0x" + call.data.hex(),
                },
            )
        except RpcError as e:
            raise NodeError(f"gas estimation failed: {_revert_reason(e)}") from None
        return int(est, 16) * (100 + GAS_MARGIN_PERCENT) // 100

    def normalise_address(self, address: str) -> str:
        return str(to_checksum_address(parse_address(address, "address")))

    async def pending_nonce(self, address: str) -> int:
        return int(
            await self.rpc.call("eth_getTransactionCount", to_checksum_address(address), "pending"), 16
        )

    async def prepare(
        self, spec: IntentSpec, vault_address: str, public_key: bytes = b"", step: str = ""
    ) -> PreparedTransaction:
        """The intent's call, priced (request fee, fees, gas) and checked affordable; no nonce yet.

        Raises what would make the transaction fail to build or be refused outright by the
        node (bad data, fees above the caps, a reverting call, a vault that cannot pay).
        """
        call = self.plan(spec, vault_address)
        value = call.value + (await self.request_fee(call.to) if call.pays_request_fee else 0)
        max_fee, tip = await self.estimate_fees()
        gas = await self.estimate_gas(vault_address, call, value)
        if call.to == self._deposit:
            gas = max(gas, DEPOSIT_GAS_FLOOR)
        await self._check_funds(vault_address, value + gas * max_fee)
        return PreparedTransaction(call, vault_address, value, max_fee, tip, gas)

    async def check_holds_value(self, spec: IntentSpec, vault_address: str) -> str:
        """Refuses an intent whose value the vault does not hold now (fees aside: they change).

        Asked at submission, so nobody is asked to approve what cannot be paid. A node that
        cannot be reached does not hold the submission back: the build checks again.
        """
        call = self.plan(spec, vault_address)
        if call.value == 0:
            return ""
        try:
            held = await self.rpc.call("eth_getBalance", to_checksum_address(vault_address), "latest")
        except (RpcError, NodeUnavailable) as e:
            log.warning("balance of %s not checked at submission: %s", vault_address, e)
            return ""
        balance = int(held, 16)
        if balance < call.value:
            raise InsufficientFunds(
                f"vault {spec.vault_id} ({vault_address}) holds {_eth(balance)} on {self.config.name};"
                f" the intent needs {_eth(call.value)} plus fees: fund the vault, then submit",
                details={"balance": str(balance), "value": str(call.value)},
            )
        return ""

    async def _check_funds(self, address: str, cost: int) -> None:
        """The node refuses outright what its sender cannot pay (value + gas * max fee, at the
        latest block): refused here instead, before a nonce is reserved and anything signed."""
        balance = int(await self.rpc.call("eth_getBalance", to_checksum_address(address), "latest"), 16)
        if balance < cost:
            raise InsufficientFunds(
                f"vault {address} holds {balance} wei; the transaction may cost {cost} wei"
                " (its value and maximum fee)",
                details={"balance": str(balance), "cost": str(cost)},
            )

    def assemble(self, prepared: PreparedTransaction, nonce: int) -> tuple[bytes, DecodedTransaction]:
        """The unsigned transaction bytes with ``nonce``, and what they decode to."""
        tx = UnsignedTransaction(
            chain_id=self.config.evm_chain_id,
            nonce=nonce,
            max_priority_fee_per_gas=prepared.max_priority_fee_per_gas,
            max_fee_per_gas=prepared.max_fee_per_gas,
            gas=prepared.gas,
            to=prepared.call.to,
            value=prepared.value,
            data=prepared.call.data,
        )
        raw = tx.encode()
        return raw, self.decode(raw, sender=prepared.sender)

    # -- decoding ---------------------------------------------------------------------------

    def decode(self, unsigned_tx: bytes, *, sender: str | None = None) -> DecodedTransaction:
        """Reads unsigned bytes back into the intent fields; strict about everything (the family's)."""
        tx, decoded = self.family.read(self.config, unsigned_tx)
        assert not isinstance(decoded.target, PolicyChangeTarget)
        return DecodedTransaction(
            chain=self.config.name,
            action=decoded.action,
            from_address=to_checksum_address(sender) if sender else "",
            to_address=to_checksum_address(tx.to),
            value=tx.value,
            amount=decoded.amount,
            target=decoded.target,
            nonce=decoded.replay_key,
            fee_ceiling=decoded.fee_ceiling,
            signing_digest=self.family.signing_payload(self.config, unsigned_tx).data,
            summary=decoded.summary,
            step=decoded.step,
        )

    def inspect_signed(self, signed_tx: bytes) -> SignedInfo:
        """Sender, nonce and hash of signed bytes; also checks they decode as custos's own kind."""
        signed = parse_signed(signed_tx)
        unsigned = signed.tx.encode()
        self.decode(unsigned)
        return SignedInfo(tx_hash="0x" + signed.tx_hash.hex(), sender=signed.sender, nonce=signed.tx.nonce)

    # -- broadcast and status -------------------------------------------------------------------

    def tx_id(self, text: str) -> str:
        """``0x`` and 64 lower-case hex digits."""
        tx_id = text.lower()
        if len(tx_id) != 66 or not tx_id.startswith("0x"):
            raise IntentInvalid("tx_hash must be 0x followed by 64 hex digits")
        try:
            bytes.fromhex(tx_id[2:])
        except ValueError:
            raise IntentInvalid("tx_hash must be 0x followed by 64 hex digits") from None
        return tx_id

    async def wait_status(self, step: str, tx_hash: str, vault_address: str) -> WaitStatus:
        raise IntentInvalid(f"the Ethereum family has no wait {step!r}")

    async def transaction_exists(self, tx_hash: str) -> bool:
        return await self.rpc.call("eth_getTransactionByHash", tx_hash) is not None

    async def broadcast(self, signed_tx: bytes, tx_hash: str) -> bool:
        """Sends the raw transaction; returns True when the node already had it."""
        if await self.transaction_exists(tx_hash):
            return True
        try:
            sent = await self.rpc.call("eth_sendRawTransaction", "0x" + signed_tx.hex())
        except RpcError as e:
            text = e.message.lower()
            if any(k in text for k in _ALREADY_KNOWN):
                return True
            if "nonce too low" in text and await self.transaction_exists(tx_hash):
                return True
            raise BroadcastRejected(f"node refused the transaction: {e.message}") from None
        if str(sent).lower() != tx_hash.lower():
            raise BroadcastRejected(f"node reports hash {sent}, expected {tx_hash}")
        return False

    async def status(self, tx_hash: str) -> TransactionStatus:
        required = self.config.confirmations
        receipt = await self.rpc.call("eth_getTransactionReceipt", tx_hash)
        if receipt is None or receipt.get("blockNumber") is None:
            state = TxState.PENDING if await self.transaction_exists(tx_hash) else TxState.NOT_FOUND
            return TransactionStatus(state=state, confirmations_required=required)
        block = int(receipt["blockNumber"], 16)
        head = int(await self.rpc.call("eth_blockNumber"), 16)
        confirmations = max(0, head - block + 1)
        if int(receipt["status"], 16) != 1:
            return TransactionStatus(
                state=TxState.FAILED,
                confirmations=confirmations,
                confirmations_required=required,
                block_number=block,
                failure_reason=await self._failure_reason(tx_hash, block),
            )
        return TransactionStatus(
            state=TxState.CONFIRMED if confirmations >= required else TxState.PENDING,
            confirmations=confirmations,
            confirmations_required=required,
            block_number=block,
            events=tuple(self._events(receipt.get("logs") or [])),
        )

    async def _failure_reason(self, tx_hash: str, block: int) -> str:
        """Replays the failed call on the parent block's state to read its revert reason."""
        tx = await self.rpc.call("eth_getTransactionByHash", tx_hash)
        call = {k: tx[k] for k in ("from", "to", "value", "input", "gas") if tx.get(k) is not None}
        try:
            await self.rpc.call("eth_call", call, hex(max(block - 1, 0)))
        except RpcError as e:
            return _revert_reason(e)
        return "reverted (no reason given; out of gas or state changed since)"

    def _events(self, logs: list[dict[str, Any]]) -> list[ChainEvent]:
        out: list[ChainEvent] = []
        for log in logs:
            address = bytes.fromhex(log["address"][2:])
            data = bytes.fromhex(log["data"][2:])
            index = int(log["logIndex"], 16)
            topics = [bytes.fromhex(t[2:]) for t in log.get("topics") or []]
            try:
                if address == self._deposit and topics[:1] == [c.DEPOSIT_EVENT_TOPIC]:
                    out.append(
                        ChainEvent(
                            "DepositEvent", to_checksum_address(address), index, c.deposit_event_fields(data)
                        )
                    )
                elif address == self._withdrawals:
                    fields = c.withdrawal_request_log_fields(data)
                    out.append(ChainEvent("WithdrawalRequest", to_checksum_address(address), index, fields))
                elif address == self._consolidations:
                    fields = c.consolidation_request_log_fields(data)
                    out.append(
                        ChainEvent("ConsolidationRequest", to_checksum_address(address), index, fields)
                    )
            except (ValueError, IndexError):
                out.append(
                    ChainEvent("UndecodedLog", to_checksum_address(address), index, {"data": log["data"]})
                )
        return out

    # -- account history, for reconciliation (see services.chain.reconcile) -----------------------

    def account_address(self, algorithm: str, public_key: bytes) -> str | None:
        return history.account_address(algorithm, public_key)

    async def confirmed_nonce(self, address: str) -> int:
        return await history.confirmed_nonce(self.rpc, address)

    async def head(self) -> int:
        return await history.head(self.rpc)

    async def mined_block(self, tx_hash: str) -> int | None:
        return await history.mined_block(self.rpc, tx_hash)

    async def transaction_at(self, address: str, nonce: int, latest: int) -> SeenTransaction | None:
        return await history.transaction_at(self.rpc, address, nonce, latest)

    # -- reads the tests and the demo use -------------------------------------------------------

    async def deposit_root(self) -> bytes:
        out = await self.rpc.call(
            "eth_call",
            {"to": self.config.deposit_contract, "data": "0x" + c.GET_DEPOSIT_ROOT_SELECTOR.hex()},
            "latest",
        )
        return bytes.fromhex(out[2:])
