"""Chain addresses from public keys, checked against independent derivations."""

from __future__ import annotations

import hashlib

import base58
import bech32
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from eth_account import Account
from eth_keys import keys

from services.signer.addresses import (
    compress_secp256k1,
    cosmos_address,
    ethereum_address,
    solana_address,
)
from services.signer.errors import InvalidPublicKey
from services.signer.hsm import Hsm
from services.signer.types import KeyAlgorithm


def test_ethereum_address_matches_eth_account() -> None:
    private = keys.PrivateKey(
        bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
    )
    point = b"\x04" + private.public_key.to_bytes()
    assert ethereum_address(point) == Account.from_key(private.to_bytes()).address
    assert ethereum_address(point) == "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"


def test_cosmos_address_is_bech32_of_ripemd160_sha256() -> None:
    private = keys.PrivateKey(b"\x07" * 32)
    point = b"\x04" + private.public_key.to_bytes()
    compressed = compress_secp256k1(point)
    assert compressed == private.public_key.to_compressed_bytes()
    expected = hashlib.new("ripemd160", hashlib.sha256(compressed).digest()).digest()
    address = cosmos_address(point, "cosmos")
    hrp, data = bech32.bech32_decode(address)
    assert hrp == "cosmos" and data is not None
    assert bytes(bech32.convertbits(data, 5, 8, False) or []) == expected
    assert cosmos_address(point, "osmo").startswith("osmo1")


def test_solana_address_is_base58_of_the_key() -> None:
    public = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert base58.b58decode(solana_address(public)) == public
    assert solana_address(b"\x00" * 32) == "11111111111111111111111111111111"


def test_bad_public_keys_are_refused() -> None:
    with pytest.raises(InvalidPublicKey):
        ethereum_address(b"\x04" + b"\x01" * 64)  # not on the curve
    with pytest.raises(InvalidPublicKey):
        solana_address(b"\x01" * 31)


def test_hsm_keys_have_addresses_for_each_chain(hsm: Hsm) -> None:
    secp = hsm.generate_keypair(KeyAlgorithm.SECP256K1, "t-addr-k1", b"\xaa" * 16)
    ed = hsm.generate_keypair(KeyAlgorithm.ED25519, "t-addr-ed", b"\xab" * 16)
    assert ethereum_address(secp).startswith("0x") and len(ethereum_address(secp)) == 42
    assert cosmos_address(secp, "cosmos").startswith("cosmos1")
    assert len(base58.b58decode(solana_address(ed))) == 32
