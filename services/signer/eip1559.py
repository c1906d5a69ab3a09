"""The EIP-1559 envelope, as far as the signer needs it.

The signer computes what the HSM signs from the unsigned bytes itself: the
signing hash is ``keccak256(0x02 || rlp([chain_id, nonce, tip, max_fee, gas, to,
value, data, access_list]))``, which is keccak of the unsigned transaction as
the chain service serialises it. Whether those fields are the approved intent is
the chain decoder's question (``ports.TransactionDecoder``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import rlp
from eth_utils import keccak, to_checksum_address

from services.signer.errors import BadSignRequest
from services.signer.types import EcdsaSignature

TX_TYPE = 0x02
_FIELDS = 9
_MAX_U256 = 2**256 - 1


@dataclass(frozen=True)
class Eip1559Tx:
    chain_id: int
    nonce: int
    max_priority_fee_per_gas: int
    max_fee_per_gas: int
    gas: int
    to: str | None
    value: int
    data: bytes
    access_list: tuple[Any, ...]

    def without_fees(self) -> tuple[Any, ...]:
        """Every field a fee bump must leave unchanged."""
        return (self.chain_id, self.nonce, self.gas, self.to, self.value, self.data, self.access_list)


def _int(raw: Any, name: str) -> int:
    if not isinstance(raw, bytes) or (len(raw) > 0 and raw[0] == 0) or len(raw) > 32:
        raise BadSignRequest(f"EIP-1559 field {name} is not a canonical integer")
    return int.from_bytes(raw, "big")


def _freeze(value: Any) -> Any:
    return tuple(_freeze(v) for v in value) if isinstance(value, list) else value


def decode_fields(items: list[Any]) -> Eip1559Tx:
    to_raw = items[5]
    if not isinstance(to_raw, bytes) or len(to_raw) not in (0, 20):
        raise BadSignRequest("EIP-1559 'to' must be empty or 20 bytes")
    if not isinstance(items[7], bytes) or not isinstance(items[8], list):
        raise BadSignRequest("EIP-1559 data or access list malformed")
    return Eip1559Tx(
        chain_id=_int(items[0], "chain_id"),
        nonce=_int(items[1], "nonce"),
        max_priority_fee_per_gas=_int(items[2], "max_priority_fee_per_gas"),
        max_fee_per_gas=_int(items[3], "max_fee_per_gas"),
        gas=_int(items[4], "gas"),
        to=to_checksum_address(to_raw) if to_raw else None,
        value=_int(items[6], "value"),
        data=items[7],
        access_list=_freeze(items[8]),
    )


def decode_unsigned(raw: bytes) -> Eip1559Tx:
    """Parses an unsigned EIP-1559 transaction; refuses anything else."""
    if len(raw) < 2 or raw[0] != TX_TYPE:
        raise BadSignRequest("unsigned_tx must be an EIP-1559 (type 2) transaction")
    try:
        items = rlp.decode(raw[1:], strict=True)
    except rlp.exceptions.DecodingError:
        raise BadSignRequest("unsigned_tx is not valid RLP") from None
    if not isinstance(items, list) or len(items) != _FIELDS:
        raise BadSignRequest(f"unsigned EIP-1559 transaction must have {_FIELDS} fields")
    if rlp.encode(items) != raw[1:]:
        raise BadSignRequest("unsigned_tx is not canonically encoded")
    tx = decode_fields(items)
    if tx.nonce >= 2**63:
        raise BadSignRequest("nonce out of range")
    return tx


def decode_signed(raw: bytes) -> Eip1559Tx:
    """The transaction fields of a signed EIP-1559 transaction (signature dropped)."""
    items = rlp.decode(raw[1:])
    assert isinstance(items, list)
    return decode_fields(items[:_FIELDS])


def signing_hash(unsigned: bytes) -> bytes:
    return keccak(unsigned)


def encode_signed(unsigned: bytes, sig: EcdsaSignature) -> tuple[bytes, str]:
    """Returns the signed transaction and its hash (``0x``-hex)."""
    items = rlp.decode(unsigned[1:])
    assert isinstance(items, list)
    signed = bytes([TX_TYPE]) + rlp.encode([*items, sig.v, sig.r, sig.s])
    return signed, "0x" + keccak(signed).hex()


def encode_unsigned(tx: Eip1559Tx) -> bytes:
    """Serialises ``tx`` unsigned (the chain service's job; here for tests and tools)."""
    to = bytes.fromhex(tx.to[2:]) if tx.to else b""
    return bytes([TX_TYPE]) + rlp.encode(
        [
            tx.chain_id,
            tx.nonce,
            tx.max_priority_fee_per_gas,
            tx.max_fee_per_gas,
            tx.gas,
            to,
            tx.value,
            tx.data,
            list(tx.access_list),
        ]
    )
