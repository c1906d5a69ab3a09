"""Vault-key addresses from public keys (the families'), checked against independent derivations."""

from __future__ import annotations

import hashlib

import bech32
import pytest
from Crypto.Hash import RIPEMD160
from eth_account import Account
from eth_keys import keys

from services.families.config import ChainConfig, ChainFamily
from services.families.errors import FamilyError
from services.families.ethereum.family import address_of
from services.families.registry import family
from services.signer.hsm import Hsm
from services.signer.types import KeyAlgorithm

COSMOS = ChainConfig(
    name="cosmos-test",
    family=ChainFamily.COSMOS,
    chain_id="test-1",
    rpc_url="x",
    denom="uatom",
    max_fee_wei=10**6,
)
ETHEREUM = ChainConfig(name="ethereum-test", chain_id=1, rpc_url="x")


def test_ethereum_address_matches_eth_account() -> None:
    private = keys.PrivateKey(
        bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
    )
    point = b"\x04" + private.public_key.to_bytes()
    assert address_of(point) == Account.from_key(private.to_bytes()).address
    assert family("ethereum").address(ETHEREUM, point) == "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"


def test_cosmos_address_is_bech32_of_ripemd160_sha256() -> None:
    private = keys.PrivateKey(b"\x07" * 32)
    point = b"\x04" + private.public_key.to_bytes()
    compressed = private.public_key.to_compressed_bytes()
    expected = RIPEMD160.new(hashlib.sha256(compressed).digest()).digest()
    address = family("cosmos").address(COSMOS, point)
    hrp, data = bech32.bech32_decode(address)
    assert hrp == "cosmos" and data is not None
    assert bytes(bech32.convertbits(data, 5, 8, False) or []) == expected
    osmo = COSMOS.model_copy(update={"bech32_prefix": "osmo"})
    assert family("cosmos").address(osmo, point).startswith("osmo1")


def test_bad_public_keys_are_refused() -> None:
    for name, chain in (("ethereum", ETHEREUM), ("cosmos", COSMOS)):
        with pytest.raises(FamilyError):
            family(name).address(chain, b"\x04" + b"\x01" * 64)  # not on the curve
        with pytest.raises(FamilyError):
            family(name).address(chain, b"\x04" + b"\x01" * 63)  # neither point encoding


def test_hsm_keys_have_addresses_on_each_family(hsm: Hsm) -> None:
    secp = hsm.generate_keypair(KeyAlgorithm.SECP256K1, "t-addr-k1", b"\xaa" * 16)
    eth = family("ethereum").address(ETHEREUM, secp)
    assert eth.startswith("0x") and len(eth) == 42
    assert family("cosmos").address(COSMOS, secp).startswith("cosmos1")
