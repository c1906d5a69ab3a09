"""Deposit data verification: every refusal the issue names, and the SSZ/domain arithmetic."""

from __future__ import annotations

from dataclasses import replace

import pytest
from eth_typing import BLSPubkey, BLSSignature
from py_ecc.bls import G2ProofOfPossession as PyEccBls

from services.chain.errors import DepositDataInvalid, IntentInvalid
from services.chain.ethereum.adapter import EthereumAdapter
from services.families.config import ChainConfig
from services.families.ethereum.deposit import (
    ETHER,
    GWEI,
    DepositData,
    GeneratedDeposit,
    deposit_data_root,
    deposit_domain,
    deposit_message_root,
    deposit_params,
    generate_deposit_data,
    signing_root,
    verify_deposit_data,
)
from services.runtime.errors import InvalidArgument
from services.runtime.intent import Action, IntentSpec, StakeTarget

VAULT = bytes.fromhex("5b38da6a701c568545dcfcb03fcb875f56beddc4")
OTHER = bytes.fromhex("ab8483f64d9c6d1ecf9b849ae677dd3315835cb2")
FORK = bytes.fromhex("10000910")  # Hoodi

CONFIG = ChainConfig(
    name="ethereum-test", chain_id=560048, rpc_url="http://127.0.0.1:1", genesis_fork_version="0x10000910"
)
ADAPTER = EthereumAdapter(CONFIG)


def _spec(gen_data: DepositData, amount: int, validator: str | None = None) -> IntentSpec:
    return IntentSpec(
        action=Action.STAKE,
        chain=CONFIG.name,
        vault_id="v",
        amount=amount,
        target=StakeTarget(
            validator=validator or "0x" + gen_data.pubkey.hex(), params=deposit_params(gen_data)
        ),
    )


@pytest.fixture(scope="module")
def good() -> GeneratedDeposit:
    return generate_deposit_data(withdrawal_address=VAULT, amount_wei=32 * ETHER, genesis_fork_version=FORK)


def test_mainnet_deposit_domain_matches_the_published_constant() -> None:
    assert (
        deposit_domain(bytes(4)).hex() == "03000000f5a5fd42d16a20302798ef6ed309979b43003d2320d9f0e8ea9831a9"
    )


def test_generated_data_verifies_with_an_independent_bls_implementation(good: GeneratedDeposit) -> None:
    d = good.data
    message = signing_root(
        deposit_message_root(d.pubkey, d.withdrawal_credentials, 32 * ETHER // GWEI), deposit_domain(FORK)
    )
    assert PyEccBls.Verify(BLSPubkey(d.pubkey), message, BLSSignature(d.signature))
    assert (
        verify_deposit_data(d, amount_wei=32 * ETHER, vault_address=VAULT, genesis_fork_version=FORK)
        == 32 * 10**9
    )
    ADAPTER.plan(_spec(d, 32 * ETHER), "0x" + VAULT.hex())


def test_bad_bls_signature_is_refused(good: GeneratedDeposit) -> None:
    other = generate_deposit_data(withdrawal_address=VAULT, amount_wei=32 * ETHER, genesis_fork_version=FORK)
    # Another key's valid signature, with a root recomputed so only the signature is wrong.
    d = good.data
    root = deposit_data_root(d.pubkey, d.withdrawal_credentials, 32 * 10**9, other.data.signature)
    bad = replace(d, signature=other.data.signature, deposit_data_root=root)
    with pytest.raises(DepositDataInvalid, match="BLS signature"):
        ADAPTER.plan(_spec(bad, 32 * ETHER), "0x" + VAULT.hex())


def test_signature_for_another_network_is_refused() -> None:
    mainnet = generate_deposit_data(
        withdrawal_address=VAULT, amount_wei=32 * ETHER, genesis_fork_version=bytes(4)
    )
    with pytest.raises(DepositDataInvalid, match="BLS signature"):
        ADAPTER.plan(_spec(mainnet.data, 32 * ETHER), "0x" + VAULT.hex())


def test_wrong_deposit_data_root_is_refused(good: GeneratedDeposit) -> None:
    bad = replace(good.data, deposit_data_root=bytes(32))
    with pytest.raises(DepositDataInvalid, match="deposit data root") as e:
        ADAPTER.plan(_spec(bad, 32 * ETHER), "0x" + VAULT.hex())
    assert isinstance(e.value, InvalidArgument)


def test_withdrawal_credentials_pointing_elsewhere_are_refused(good: GeneratedDeposit) -> None:
    with pytest.raises(DepositDataInvalid, match="not at the vault"):
        ADAPTER.plan(_spec(good.data, 32 * ETHER), "0x" + OTHER.hex())


def test_bls_withdrawal_credentials_are_refused(good: GeneratedDeposit) -> None:
    bad = replace(good.data, withdrawal_credentials=b"\x00" + good.data.withdrawal_credentials[1:])
    with pytest.raises(DepositDataInvalid, match="type 0x00"):
        ADAPTER.plan(_spec(bad, 32 * ETHER), "0x" + VAULT.hex())


@pytest.mark.parametrize(
    "pubkey",
    [b"\x01" * 47, b"\x01" * 49, b""],
)
def test_malformed_pubkey_is_refused(good: GeneratedDeposit, pubkey: bytes) -> None:
    bad = replace(good.data, pubkey=pubkey)
    with pytest.raises(DepositDataInvalid):
        ADAPTER.plan(_spec(bad, 32 * ETHER, validator="0x" + pubkey.hex()), "0x" + VAULT.hex())


def test_pubkey_that_is_not_a_curve_point_is_refused(good: GeneratedDeposit) -> None:
    pubkey = b"\xaa" * 48
    root = deposit_data_root(pubkey, good.data.withdrawal_credentials, 32 * 10**9, good.data.signature)
    bad = replace(good.data, pubkey=pubkey, deposit_data_root=root)
    with pytest.raises(DepositDataInvalid, match="BLS signature"):
        ADAPTER.plan(_spec(bad, 32 * ETHER), "0x" + VAULT.hex())


@pytest.mark.parametrize("validator", ["0xzz", "abcd", "0x" + "AB" * 48])
def test_malformed_validator_string_is_refused(good: GeneratedDeposit, validator: str) -> None:
    with pytest.raises(IntentInvalid):
        ADAPTER.plan(_spec(good.data, 32 * ETHER, validator=validator), "0x" + VAULT.hex())


def test_validator_differing_from_the_deposit_pubkey_is_refused(good: GeneratedDeposit) -> None:
    with pytest.raises(IntentInvalid, match="differs"):
        ADAPTER.plan(_spec(good.data, 32 * ETHER, validator="0x" + "a1" * 48), "0x" + VAULT.hex())


@pytest.mark.parametrize(
    ("amount", "reason"),
    [
        (ETHER - GWEI, "below the 1 ETH minimum"),
        (0, "below the 1 ETH minimum"),
        (2 * ETHER + 1, "whole number of gwei"),
        (2049 * ETHER, "2048 ETH"),
    ],
)
def test_amount_the_protocol_does_not_accept_is_refused(amount: int, reason: str) -> None:
    gen = generate_deposit_data(
        withdrawal_address=VAULT, amount_wei=amount, genesis_fork_version=FORK, compounding=True
    )
    with pytest.raises(DepositDataInvalid, match=reason):
        ADAPTER.plan(_spec(gen.data, amount), "0x" + VAULT.hex())


def test_0x01_credentials_take_exactly_32_eth_and_0x02_take_less() -> None:
    gen = generate_deposit_data(withdrawal_address=VAULT, amount_wei=16 * ETHER, genesis_fork_version=FORK)
    with pytest.raises(DepositDataInvalid, match="exactly 32 ETH"):
        ADAPTER.plan(_spec(gen.data, 16 * ETHER), "0x" + VAULT.hex())
    comp = generate_deposit_data(
        withdrawal_address=VAULT, amount_wei=16 * ETHER, genesis_fork_version=FORK, compounding=True
    )
    ADAPTER.plan(_spec(comp.data, 16 * ETHER), "0x" + VAULT.hex())


def test_amount_differing_from_what_was_signed_is_refused(good: GeneratedDeposit) -> None:
    comp = generate_deposit_data(
        withdrawal_address=VAULT, amount_wei=16 * ETHER, genesis_fork_version=FORK, compounding=True
    )
    with pytest.raises(DepositDataInvalid, match="deposit data root"):
        ADAPTER.plan(_spec(comp.data, 17 * ETHER), "0x" + VAULT.hex())


def test_stake_without_deposit_data_is_refused() -> None:
    spec = IntentSpec(
        action=Action.STAKE,
        chain=CONFIG.name,
        vault_id="v",
        amount=32 * ETHER,
        target=StakeTarget("0x" + "a1" * 48),
    )
    with pytest.raises(IntentInvalid, match="needs deposit data"):
        ADAPTER.plan(spec, "0x" + VAULT.hex())
