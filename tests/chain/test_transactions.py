"""EIP-1559 bytes: encoding agrees with eth-account, decoding is strict, signatures assemble."""

from __future__ import annotations

import secrets

import pytest
import rlp
from eth_account import Account
from eth_account.typed_transactions import TypedTransaction
from eth_keys import keys
from eth_utils import keccak

from services.chain.errors import TransactionInvalid
from services.chain.ethereum.adapter import EthereumAdapter
from services.families import secp256k1
from services.families.config import ChainConfig
from services.families.ethereum import contracts as c
from services.families.ethereum.deposit import ETHER, DepositData, generate_deposit_data, stake_target
from services.families.ethereum.family import EthereumFamily
from services.families.ethereum.transactions import UnsignedTransaction, parse_signed
from services.runtime.intent import Action, RestakeTarget, UnstakeTarget

CONFIG = ChainConfig(
    name="ethereum-test", chain_id=31337, rpc_url="http://127.0.0.1:1", genesis_fork_version="0x10000910"
)
ADAPTER = EthereumAdapter(CONFIG)
FAMILY = EthereumFamily()
KEY = keys.PrivateKey(secrets.token_bytes(32))
SENDER = KEY.public_key.to_checksum_address()
POINT = b"\x04" + KEY.public_key.to_bytes()
PUBKEY_A = bytes.fromhex("a1" * 48)
PUBKEY_B = bytes.fromhex("b2" * 48)


def _tx(to: bytes, data: bytes, value: int = 0, **kw: int) -> UnsignedTransaction:
    fields: dict[str, int] = {
        "chain_id": CONFIG.evm_chain_id,
        "nonce": 5,
        "max_priority_fee_per_gas": 10**9,
        "max_fee_per_gas": 3 * 10**9,
        "gas": 150_000,
    } | kw
    return UnsignedTransaction(to=to, value=value, data=data, **fields)


def _deposit_tx() -> tuple[UnsignedTransaction, DepositData]:
    gen = generate_deposit_data(
        withdrawal_address=bytes(KEY.public_key.to_canonical_address()),
        amount_wei=32 * ETHER,
        genesis_fork_version=CONFIG.fork_version_bytes,
    )
    d = gen.data
    data = c.deposit_calldata(
        c.DepositCall(d.pubkey, d.withdrawal_credentials, d.signature, d.deposit_data_root)
    )
    return _tx(bytes.fromhex(CONFIG.deposit_contract[2:]), data, 32 * ETHER), d


def test_signing_digest_matches_eth_account() -> None:
    tx, _ = _deposit_tx()
    assert tx.signing_digest() == TypedTransaction.from_dict(tx.as_rpc_dict()).hash()


def test_decode_reads_a_deposit_back_into_the_intent_fields() -> None:
    tx, d = _deposit_tx()
    decoded = ADAPTER.decode(tx.encode(), sender=SENDER)
    assert decoded.action is Action.STAKE
    assert decoded.amount == decoded.value == 32 * ETHER
    assert decoded.target == stake_target(d)
    assert (
        decoded.nonce == 5 and decoded.fee_ceiling == tx.max_fee_per_gas * 150_000 and decoded.step == "stake"
    )
    assert decoded.from_address == SENDER
    assert decoded.signing_digest == keccak(tx.encode())


def test_decode_reads_exit_and_consolidation_requests() -> None:
    exit_tx = _tx(
        bytes.fromhex(c.WITHDRAWAL_REQUEST_CONTRACT[2:]), c.withdrawal_request_calldata(PUBKEY_A, 7), 1
    )
    decoded = ADAPTER.decode(exit_tx.encode())
    assert (decoded.action, decoded.amount, decoded.value) == (Action.UNSTAKE, 7 * 10**9, 1)
    assert decoded.target == UnstakeTarget(validator="0x" + PUBKEY_A.hex())
    cons = _tx(
        bytes.fromhex(c.CONSOLIDATION_REQUEST_CONTRACT[2:]),
        c.consolidation_request_calldata(PUBKEY_A, PUBKEY_B),
        1,
    )
    decoded = ADAPTER.decode(cons.encode())
    assert decoded.action is Action.RESTAKE and decoded.amount == 0
    assert decoded.target == RestakeTarget("0x" + PUBKEY_A.hex(), "0x" + PUBKEY_B.hex())


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (_tx(b"\x12" * 20, b"").encode(), "no staking contract"),
        (_tx(bytes.fromhex(c.WITHDRAWAL_REQUEST_CONTRACT[2:]), PUBKEY_A).encode(), "56 bytes"),
        (_tx(bytes.fromhex(c.CONSOLIDATION_REQUEST_CONTRACT[2:]), PUBKEY_A).encode(), "96 bytes"),
        (_tx(bytes.fromhex(CONFIG.deposit_contract[2:]), b"\xde\xad\xbe\xef").encode(), "not deposit"),
        (_tx(bytes.fromhex(CONFIG.deposit_contract[2:]), b"", chain_id=1).encode(), "chain id 1"),
        (_tx(b"\x12" * 20, b"", max_fee_per_gas=10**15).encode(), "cap"),
        (b"\x01" + rlp.encode([1, 2, 3]), "type 2"),
        (b"\x02\xff\xff", "RLP"),
        (
            b"\x02" + rlp.encode([31337, 0, 1, 2, 21000, b"\x12" * 20, 0, b"", [[b"\x00" * 20, []]]]),
            "access list",
        ),
        (b"\x02" + rlp.encode([31337, 0, 1, 2, 21000, b"", 0, b"", []]), "contract creation"),
        (b"\x02" + rlp.encode([31337, b"\x00\x01", 1, 2, 21000, b"\x12" * 20, 0, b"", []]), "canonical"),
    ],
)
def test_decode_refuses_anything_custos_would_not_build(raw: bytes, reason: str) -> None:
    with pytest.raises(TransactionInvalid, match=reason):
        ADAPTER.decode(raw)


def test_deposit_calldata_with_extra_bytes_is_refused() -> None:
    tx, _ = _deposit_tx()
    padded = _tx(tx.to, tx.data + b"\x00" * 32, tx.value)
    with pytest.raises(TransactionInvalid, match="canonical"):
        ADAPTER.decode(padded.encode())


def test_high_s_is_refused_and_its_low_s_twin_assembles_with_the_recovery_id() -> None:
    tx, _ = _deposit_tx()
    digest = tx.signing_digest()
    sig = KEY.sign_msg_hash(digest)
    high_s = secp256k1.N - sig.s  # what an HSM returns about half the time
    rs = sig.r.to_bytes(32, "big") + high_s.to_bytes(32, "big")
    with pytest.raises(TransactionInvalid, match="high-S"):
        FAMILY.assemble(CONFIG, tx.encode(), rs, POINT)
    low = secp256k1.low_s(rs)
    assert int.from_bytes(low[32:], "big") == sig.s <= secp256k1.N // 2
    signed_tx = FAMILY.assemble(CONFIG, tx.encode(), low, POINT)
    assert Account.recover_transaction(signed_tx.signed_tx) == SENDER  # eth-account, independently
    signed = parse_signed(signed_tx.signed_tx)
    assert signed.sender == SENDER and signed.tx == tx and signed.tx_hash == keccak(signed_tx.signed_tx)
    assert signed_tx.tx_id == "0x" + keccak(signed_tx.signed_tx).hex()


def test_a_signature_from_another_key_is_refused() -> None:
    tx, _ = _deposit_tx()
    other = keys.PrivateKey(secrets.token_bytes(32)).sign_msg_hash(tx.signing_digest())
    rs = secp256k1.low_s(other.r.to_bytes(32, "big") + other.s.to_bytes(32, "big"))
    with pytest.raises(TransactionInvalid, match="not made by the vault's key"):
        FAMILY.assemble(CONFIG, tx.encode(), rs, POINT)
