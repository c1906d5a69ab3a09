"""The Ethereum account-history reads reconciliation relies on, against anvil."""

from __future__ import annotations

import secrets
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from services.chain.devnet import Devnet
from services.chain.ethereum import history
from services.chain.ethereum.rpc import JsonRpcClient, RpcError
from services.families.ethereum.deposit import ETHER
from services.families.ethereum.family import address_of as ethereum_address

ELSEWHERE = "0x000000000000000000000000000000000000dEaD"


class NodeWithoutSenderIndex(JsonRpcClient):
    """anvil answering like a node without ``eth_getTransactionBySenderAndNonce`` (geth): a fake of
    that one refusal, since no such node runs here; every other call is anvil's own answer."""

    def call_sync(self, method: str, params: list[Any] | None = None) -> Any:
        if method == "eth_getTransactionBySenderAndNonce":
            raise RpcError(
                -32601, "the method eth_getTransactionBySenderAndNonce does not exist/is not available"
            )
        return super().call_sync(method, params)


def _send_from(devnet: Devnet, address: str, count: int) -> list[str]:
    """``count`` transactions from ``address`` (impersonated), with empty blocks between them."""
    rpc = devnet.rpc
    devnet.fund(address, 10 * ETHER)
    rpc.call_sync("anvil_impersonateAccount", [address])
    hashes = []
    for _ in range(count):
        hashes.append(
            str(rpc.call_sync("eth_sendTransaction", [{"from": address, "to": ELSEWHERE, "value": "0x2"}]))
        )
        devnet.mine(3)
    rpc.call_sync("anvil_stopImpersonatingAccount", [address])
    return [h.lower() for h in hashes]


async def test_nonces_map_to_their_transactions_with_or_without_the_sender_index(devnet: Devnet) -> None:
    address = history.account_address(
        "SECP256K1",
        ec.generate_private_key(ec.SECP256K1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint),
    )
    assert address is not None
    hashes = _send_from(devnet, address, 3)
    rpc, plain = devnet.rpc, NodeWithoutSenderIndex(devnet.rpc_url)
    latest = await history.head(rpc)
    assert await history.confirmed_nonce(rpc, address) == 3
    for nonce, tx_hash in enumerate(hashes):
        direct = await history.transaction_at(rpc, address, nonce, latest)
        bisected = await history.transaction_at(plain, address, nonce, latest)
        assert direct == bisected and direct is not None
        assert (direct.tx_hash, direct.to_address, direct.value) == (tx_hash, ELSEWHERE, 2)
        assert direct.block_number == await history.mined_block(rpc, tx_hash)
    assert await history.transaction_at(plain, address, 3, latest) is None  # not used yet
    assert await history.mined_block(rpc, "0x" + secrets.token_hex(32)) is None


def test_the_address_of_a_key_is_the_signers() -> None:
    point = (
        ec.generate_private_key(ec.SECP256K1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    assert history.account_address("SECP256K1", point) == ethereum_address(point)
    raw = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    assert history.account_address("ED25519", raw) is None
    assert history.account_address("SECP256K1", point[1:]) is None
