"""EIP-1559 transactions: the unsigned bytes custos builds, reads back, and assembles once signed.

The unsigned form is the exact EIP-2718 signing payload
``0x02 || rlp([chain_id, nonce, max_priority_fee, max_fee, gas, to, value, data, access_list])``,
so the digest the key signs is simply ``keccak256(unsigned_tx)``: the signer can
recompute it from the bytes it was shown, without trusting anyone's digest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import rlp
from eth_keys import keys
from eth_keys.exceptions import BadSignature
from eth_utils import keccak, to_checksum_address

from services.families.errors import TransactionInvalid

TX_TYPE_DYNAMIC_FEE = 0x02


@dataclass(frozen=True)
class UnsignedTransaction:
    """The fields of an EIP-1559 transaction before signing. Amounts in wei."""

    chain_id: int
    nonce: int
    max_priority_fee_per_gas: int
    max_fee_per_gas: int
    gas: int
    to: bytes
    value: int
    data: bytes

    def encode(self) -> bytes:
        return bytes([TX_TYPE_DYNAMIC_FEE]) + rlp.encode(
            [
                self.chain_id,
                self.nonce,
                self.max_priority_fee_per_gas,
                self.max_fee_per_gas,
                self.gas,
                self.to,
                self.value,
                self.data,
                [],
            ]
        )

    def signing_digest(self) -> bytes:
        return keccak(self.encode())

    def as_rpc_dict(self) -> dict[str, Any]:
        return {
            "type": TX_TYPE_DYNAMIC_FEE,
            "chainId": self.chain_id,
            "nonce": self.nonce,
            "maxPriorityFeePerGas": self.max_priority_fee_per_gas,
            "maxFeePerGas": self.max_fee_per_gas,
            "gas": self.gas,
            "to": to_checksum_address(self.to),
            "value": self.value,
            "data": self.data,
            "accessList": [],
        }


def _uint(item: Any, field: str) -> int:
    if not isinstance(item, bytes) or (item[:1] == b"\0"):
        raise TransactionInvalid(f"transaction field {field} is not a canonical integer")
    return int.from_bytes(item, "big")


def parse_unsigned(raw: bytes) -> UnsignedTransaction:
    """Reads unsigned EIP-1559 bytes; anything non-canonical or unexpected is refused."""
    if not raw or raw[0] != TX_TYPE_DYNAMIC_FEE:
        raise TransactionInvalid("not an EIP-1559 (type 2) transaction")
    try:
        items = rlp.decode(raw[1:], strict=True)
    except Exception as e:
        raise TransactionInvalid(f"transaction RLP does not decode: {e}") from None
    if not isinstance(items, list) or len(items) != 9:
        raise TransactionInvalid("an unsigned EIP-1559 transaction has exactly 9 fields")
    chain_id, nonce, tip, fee, gas, to, value, data, access_list = items
    if not isinstance(to, bytes) or len(to) != 20:
        raise TransactionInvalid("transaction has no 20-byte recipient (contract creation is refused)")
    if not isinstance(data, bytes):
        raise TransactionInvalid("transaction data is not a byte string")
    if access_list != []:
        raise TransactionInvalid("transactions with an access list are refused")
    tx = UnsignedTransaction(
        chain_id=_uint(chain_id, "chain_id"),
        nonce=_uint(nonce, "nonce"),
        max_priority_fee_per_gas=_uint(tip, "max_priority_fee_per_gas"),
        max_fee_per_gas=_uint(fee, "max_fee_per_gas"),
        gas=_uint(gas, "gas"),
        to=to,
        value=_uint(value, "value"),
        data=data,
    )
    if tx.encode() != raw:
        raise TransactionInvalid("transaction bytes are not canonically encoded")
    return tx


def recover_sender(digest: bytes, r: int, s: int, recovery_id: int) -> str:
    """The checksummed address whose key made (r, s, recovery_id) over ``digest``."""
    if recovery_id not in (0, 1):
        raise TransactionInvalid("recovery id must be 0 or 1")
    try:
        sig = keys.Signature(vrs=(recovery_id, r, s))
        return str(sig.recover_public_key_from_msg_hash(digest).to_checksum_address())
    except (BadSignature, ValueError) as e:
        raise TransactionInvalid(f"signature does not recover: {e}") from None


@dataclass(frozen=True)
class SignedTransaction:
    tx: UnsignedTransaction
    sender: str
    tx_hash: bytes
    raw: bytes


def parse_signed(raw: bytes) -> SignedTransaction:
    """Reads a signed EIP-1559 transaction and recovers its sender."""
    if not raw or raw[0] != TX_TYPE_DYNAMIC_FEE:
        raise TransactionInvalid("not a signed EIP-1559 (type 2) transaction")
    try:
        items = rlp.decode(raw[1:], strict=True)
    except Exception as e:
        raise TransactionInvalid(f"transaction RLP does not decode: {e}") from None
    if not isinstance(items, list) or len(items) != 12:
        raise TransactionInvalid("a signed EIP-1559 transaction has exactly 12 fields")
    unsigned = bytes([TX_TYPE_DYNAMIC_FEE]) + rlp.encode(items[:9])
    tx = parse_unsigned(unsigned)
    v = int.from_bytes(items[9], "big") if isinstance(items[9], bytes) else -1
    r = int.from_bytes(items[10], "big") if isinstance(items[10], bytes) else 0
    s = int.from_bytes(items[11], "big") if isinstance(items[11], bytes) else 0
    sender = recover_sender(tx.signing_digest(), r, s, v)
    return SignedTransaction(tx=tx, sender=sender, tx_hash=keccak(raw), raw=raw)
