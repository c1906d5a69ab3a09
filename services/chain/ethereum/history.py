"""An Ethereum account's history as reconciliation reads it: its nonce, and who used each nonce.

A node has no index from (sender, nonce) to a transaction except the
``eth_getTransactionBySenderAndNonce`` extension (reth, anvil). Elsewhere the
mined transaction of a nonce is found by bisecting blocks on the account's
historical nonce, which needs the node to hold that state (an archive node, or a
recent enough block); when it cannot be found the caller says so instead.
"""

from __future__ import annotations

import logging
from typing import Any

from eth_utils import keccak, to_checksum_address

from services.chain.errors import NodeError
from services.chain.ethereum.rpc import JsonRpcClient, RpcError
from services.chain.types import SeenTransaction

log = logging.getLogger(__name__)

_METHOD_NOT_FOUND = -32601
_SECP256K1 = "SECP256K1"


def account_address(algorithm: str, public_key: bytes) -> str | None:
    """The Ethereum address of a secp256k1 key (65-byte uncompressed point); None for other keys."""
    if algorithm != _SECP256K1 or len(public_key) != 65 or public_key[0] != 0x04:
        return None
    return str(to_checksum_address(keccak(public_key[1:])[-20:]))


async def confirmed_nonce(rpc: JsonRpcClient, address: str) -> int:
    """How many transactions of ``address`` are in the latest block: the next nonce mined."""
    return _int(await _call(rpc, "eth_getTransactionCount", address, "latest"))


async def head(rpc: JsonRpcClient) -> int:
    return _int(await _call(rpc, "eth_blockNumber"))


async def mined_block(rpc: JsonRpcClient, tx_hash: str) -> int | None:
    """The block that mined ``tx_hash`` (successful or reverted), or None when it is not mined."""
    receipt = await _call(rpc, "eth_getTransactionReceipt", tx_hash)
    if not receipt or receipt.get("blockNumber") is None:
        return None
    return _int(receipt["blockNumber"])


async def transaction_at(rpc: JsonRpcClient, address: str, nonce: int, latest: int) -> SeenTransaction | None:
    """The mined transaction of ``address`` with ``nonce``; None when the node cannot say."""
    try:
        tx = await rpc.call("eth_getTransactionBySenderAndNonce", address, hex(nonce))
    except RpcError as e:
        if e.code != _METHOD_NOT_FOUND and "not supported" not in e.message.lower():
            raise NodeError(f"looking up nonce {nonce} of {address} failed: {e.message}") from None
        tx = await _bisect(rpc, address, nonce, latest)
    if not tx or tx.get("blockNumber") is None:
        return None
    return _seen(tx)


async def _bisect(rpc: JsonRpcClient, address: str, nonce: int, latest: int) -> dict[str, Any] | None:
    """Finds the first block after which the account's nonce exceeds ``nonce``, and the transaction in it."""
    low, high = 0, latest  # the nonce is used by ``high`` (the caller saw it confirmed there)
    try:
        while low < high:
            middle = (low + high) // 2
            if _int(await rpc.call("eth_getTransactionCount", address, hex(middle))) > nonce:
                high = middle
            else:
                low = middle + 1
        block = await rpc.call("eth_getBlockByNumber", hex(high), True)
    except RpcError as e:  # e.g. a full node that pruned the state of old blocks
        log.warning("nonce %d of %s: the node cannot say which transaction used it (%s)", nonce, address, e)
        return None
    for tx in (block or {}).get("transactions") or []:
        if str(tx.get("from", "")).lower() == address.lower() and _int(tx.get("nonce", "0x0")) == nonce:
            return dict(tx)
    return None


def _seen(tx: dict[str, Any]) -> SeenTransaction:
    return SeenTransaction(
        tx_hash=str(tx["hash"]).lower(),
        block_number=_int(tx["blockNumber"]),
        to_address=str(to_checksum_address(tx["to"])) if tx.get("to") else "",
        value=_int(tx.get("value") or "0x0"),
    )


async def _call(rpc: JsonRpcClient, method: str, *params: Any) -> Any:
    try:
        return await rpc.call(method, *params)
    except RpcError as e:
        raise NodeError(f"{method} failed: {e.message}") from None


def _int(value: Any) -> int:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise NodeError(f"the node answered {value!r} where a hex quantity belongs")
    return int(value, 16)
