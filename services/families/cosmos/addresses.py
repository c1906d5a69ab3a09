"""Cosmos SDK keys and addresses: bech32 of ripemd160(sha256(compressed secp256k1 key)).

An account is ``<prefix>1...`` and a validator operator ``<prefix>valoper1...``, both over a
20-byte payload. The canonical spelling is lower case (bech32 also allows all upper case).
"""

from __future__ import annotations

import hashlib
from typing import NewType

import bech32
from coincurve import PublicKey
from Crypto.Hash import RIPEMD160  # hashlib's ripemd160 is missing under OpenSSL 3

from services.families import secp256k1
from services.families.errors import AddressInvalid

#: A bech32 account address in canonical (lower-case) spelling.
AccountAddress = NewType("AccountAddress", str)
#: A bech32 validator operator address in canonical (lower-case) spelling.
ValidatorAddress = NewType("ValidatorAddress", str)
#: A 33-byte compressed secp256k1 public key, as Cosmos transactions carry it.
CompressedKey = NewType("CompressedKey", bytes)

ADDRESS_LENGTH = 20
VALOPER = "valoper"


def compressed_key(public_key: bytes) -> CompressedKey:
    """The compressed form of a vault key given as a 65-byte point (as the HSM gives it) or
    already compressed (33 bytes); raises ``PointInvalid`` for anything else."""
    if len(public_key) == 65:
        return CompressedKey(secp256k1.compress(public_key))
    if len(public_key) == 33 and public_key[0] in (2, 3):
        try:
            point = PublicKey(public_key).format(compressed=False)
        except ValueError:
            raise secp256k1.PointInvalid("the compressed secp256k1 public key is not on the curve") from None
        return CompressedKey(secp256k1.compress(point))
    raise secp256k1.PointInvalid("a secp256k1 public key is a 65-byte point or 33 bytes compressed")


def key_hash(key: CompressedKey) -> bytes:
    """The 20 bytes an account address encodes."""
    return bytes(RIPEMD160.new(hashlib.sha256(key).digest()).digest())


def encode(prefix: str, payload: bytes) -> str:
    data = bech32.convertbits(payload, 8, 5)
    assert data is not None
    return bech32.bech32_encode(prefix, data)


def account_address(prefix: str, key: CompressedKey) -> AccountAddress:
    return AccountAddress(encode(prefix, key_hash(key)))


def decode(text: object, prefix: str, what: str) -> bytes:
    """The 20-byte payload of bech32 ``text`` under ``prefix``; raises ``AddressInvalid``."""
    if not isinstance(text, str):
        raise AddressInvalid(f"{what} must be a bech32 string")
    hrp, data = bech32.bech32_decode(text)
    if hrp is None or data is None:
        raise AddressInvalid(f"{what} is not bech32 (character set, case or checksum)")
    if hrp != prefix:
        raise AddressInvalid(f"{what} has prefix {hrp!r}, not {prefix!r}")
    payload = bech32.convertbits(data, 5, 8, False)
    if payload is None or len(payload) != ADDRESS_LENGTH:
        raise AddressInvalid(f"{what} does not encode {ADDRESS_LENGTH} bytes")
    return bytes(payload)


def normalise_account(prefix: str, text: object, what: str = "address") -> AccountAddress:
    return AccountAddress(encode(prefix, decode(text, prefix, what)))


def normalise_validator(prefix: str, text: object, what: str = "validator") -> ValidatorAddress:
    valoper = prefix + VALOPER
    return ValidatorAddress(encode(valoper, decode(text, valoper, what)))
