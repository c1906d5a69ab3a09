"""Chain addresses and public-key encodings, computed from public keys only."""

from __future__ import annotations

import hashlib
from typing import NewType

import base58
import bech32
from Crypto.Hash import RIPEMD160  # hashlib's ripemd160 is missing under OpenSSL 3
from eth_utils import keccak, to_checksum_address

from services.signer.errors import InvalidPublicKey

EthAddress = NewType("EthAddress", str)
CosmosAddress = NewType("CosmosAddress", str)
SolanaAddress = NewType("SolanaAddress", str)

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_SECP256K1_P = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F


def unwrap_ec_point(value: bytes, size: int) -> bytes:
    """Returns the raw point from ``CKA_EC_POINT``, DER OCTET STRING-wrapped or not.

    SoftHSM wraps it (``04 41 04 ...`` for secp256k1, ``04 20 ...`` for Ed25519);
    other HSMs return it raw. ``size`` is the raw length (65 or 32).
    """
    if len(value) == size and (size != 65 or value[0] == 0x04):
        return value
    if len(value) == size + 2 and value[0] == 0x04 and value[1] == size:
        return value[2:]
    if len(value) == size + 3 and value[0] == 0x04 and value[1] == 0x81 and value[2] == size:
        return value[3:]
    raise InvalidPublicKey(f"unexpected CKA_EC_POINT encoding ({len(value)} bytes)")


def check_secp256k1_point(point: bytes) -> tuple[int, int]:
    if len(point) != 65 or point[0] != 0x04:
        raise InvalidPublicKey("secp256k1 public key must be a 65-byte uncompressed point")
    x, y = int.from_bytes(point[1:33], "big"), int.from_bytes(point[33:], "big")
    if (y * y - x * x * x - 7) % _SECP256K1_P != 0:
        raise InvalidPublicKey("secp256k1 public key is not on the curve")
    return x, y


def compress_secp256k1(point: bytes) -> bytes:
    x, y = check_secp256k1_point(point)
    return bytes([0x02 | (y & 1)]) + x.to_bytes(32, "big")


def ethereum_address(point: bytes) -> EthAddress:
    """EIP-55 checksum address: last 20 bytes of keccak256 of the 64-byte point."""
    check_secp256k1_point(point)
    return EthAddress(to_checksum_address(keccak(point[1:])[-20:]))


def cosmos_address(point: bytes, prefix: str) -> CosmosAddress:
    """Bech32 of ripemd160(sha256(compressed public key)), e.g. ``cosmos1...``."""
    digest = RIPEMD160.new(hashlib.sha256(compress_secp256k1(point)).digest()).digest()
    data = bech32.convertbits(digest, 8, 5)
    assert data is not None
    return CosmosAddress(bech32.bech32_encode(prefix, data))


def solana_address(public_key: bytes) -> SolanaAddress:
    """Base58 of the 32-byte Ed25519 public key."""
    if len(public_key) != 32:
        raise InvalidPublicKey("Ed25519 public key must be 32 bytes")
    return SolanaAddress(base58.b58encode(public_key).decode())
