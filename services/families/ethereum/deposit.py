"""Beacon-chain deposit data: SSZ roots, the deposit signing domain, verification and generation.

The deposit contract checks the deposit data root but not the BLS signature, so a
deposit with a bad signature would lock 32 ETH in a validator that can never
activate: custos verifies everything here, before anyone approves.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import milagro_bls_binding as bls

from services.families.errors import DepositDataInvalid
from services.runtime.intent import StakeTarget, TargetParams

GWEI = 10**9
ETHER = 10**18
MIN_DEPOSIT_WEI = 1 * ETHER
COMPOUNDING_MAX_WEI = 2048 * ETHER  # MAX_EFFECTIVE_BALANCE_ELECTRA
FULL_DEPOSIT_WEI = 32 * ETHER
MAX_UINT64 = 2**64 - 1

DOMAIN_DEPOSIT = bytes.fromhex("03000000")
ETH1_ADDRESS_WITHDRAWAL_PREFIX = 0x01
COMPOUNDING_WITHDRAWAL_PREFIX = 0x02
PUBKEY_LENGTH = 48
SIGNATURE_LENGTH = 96
_ZERO32 = bytes(32)
# BLS12-381 curve order: a secret key must be in [1, r).
_CURVE_ORDER = 0x73EDA753299D7D483339D80809A1D80553BDA402FFFE5BFEFFFFFFFF00000001


@dataclass(frozen=True)
class DepositData:
    """Ethereum deposit data, exactly as it goes into ``deposit(...)``.

    An Ethereum STAKE carries it as its target's params (:func:`deposit_params`), one byte
    string per field, so approvers approve these exact bytes.
    """

    pubkey: bytes
    withdrawal_credentials: bytes
    signature: bytes
    deposit_data_root: bytes


_DEPOSIT_FIELDS = frozenset({"pubkey", "withdrawal_credentials", "signature", "deposit_data_root"})


def deposit_params(data: DepositData) -> TargetParams:
    """The stake target params that carry ``data``."""
    return TargetParams.of(
        {
            "pubkey": data.pubkey,
            "withdrawal_credentials": data.withdrawal_credentials,
            "signature": data.signature,
            "deposit_data_root": data.deposit_data_root,
        }
    )


def stake_target(data: DepositData) -> StakeTarget:
    """The STAKE target of a new validator with deposit data ``data``."""
    return StakeTarget("0x" + data.pubkey.hex(), deposit_params(data))


def deposit_of(target: StakeTarget) -> DepositData | None:
    """The deposit data a stake target carries (None without params); refuses other fields."""
    params = target.params
    if params is None:
        return None
    if params.names() != _DEPOSIT_FIELDS:
        raise DepositDataInvalid(
            "an Ethereum stake's params are exactly pubkey, withdrawal_credentials, signature and "
            f"deposit_data_root (got {', '.join(sorted(params.names())) or 'none'})"
        )
    fields = dict(params.fields)
    return DepositData(
        fields["pubkey"], fields["withdrawal_credentials"], fields["signature"], fields["deposit_data_root"]
    )


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _chunk_root(value: bytes) -> bytes:
    """hash_tree_root of a fixed-size byte vector (Bytes48, Bytes96...)."""
    chunks = [value[i : i + 32].ljust(32, b"\0") for i in range(0, len(value), 32)]
    while len(chunks) & (len(chunks) - 1):
        chunks.append(_ZERO32)
    while len(chunks) > 1:
        chunks = [_sha(chunks[i] + chunks[i + 1]) for i in range(0, len(chunks), 2)]
    return chunks[0]


def _uint64_root(value: int) -> bytes:
    return value.to_bytes(8, "little").ljust(32, b"\0")


def deposit_message_root(pubkey: bytes, withdrawal_credentials: bytes, amount_gwei: int) -> bytes:
    """hash_tree_root(DepositMessage(pubkey, withdrawal_credentials, amount))."""
    return _sha(
        _sha(_chunk_root(pubkey) + withdrawal_credentials) + _sha(_uint64_root(amount_gwei) + _ZERO32)
    )


def deposit_data_root(
    pubkey: bytes, withdrawal_credentials: bytes, amount_gwei: int, signature: bytes
) -> bytes:
    """hash_tree_root(DepositData(pubkey, withdrawal_credentials, amount, signature))."""
    return _sha(
        _sha(_chunk_root(pubkey) + withdrawal_credentials)
        + _sha(_uint64_root(amount_gwei) + _chunk_root(signature))
    )


def deposit_domain(genesis_fork_version: bytes) -> bytes:
    """compute_domain(DOMAIN_DEPOSIT, fork_version, genesis_validators_root=0).

    Deposits are valid across forks, so the domain uses the genesis fork version
    and a zero validators root, as the consensus specs say.
    """
    if len(genesis_fork_version) != 4:
        raise ValueError("a fork version is 4 bytes")
    fork_data_root = _sha(genesis_fork_version.ljust(32, b"\0") + _ZERO32)
    return DOMAIN_DEPOSIT + fork_data_root[:28]


def signing_root(object_root: bytes, domain: bytes) -> bytes:
    return _sha(object_root + domain)


def withdrawal_credentials_for(address: bytes, *, compounding: bool = False) -> bytes:
    """0x01 (or 0x02) credentials that pay out to the 20-byte execution ``address``."""
    if len(address) != 20:
        raise ValueError("an execution address is 20 bytes")
    prefix = COMPOUNDING_WITHDRAWAL_PREFIX if compounding else ETH1_ADDRESS_WITHDRAWAL_PREFIX
    return bytes([prefix]) + bytes(11) + address


def parse_pubkey(text: str, field: str = "validator") -> bytes:
    """A 0x-hex 48-byte BLS public key; anything else is ``DepositDataInvalid``."""
    body = text[2:] if text[:2].lower() == "0x" else ""
    try:
        raw = bytes.fromhex(body)
    except ValueError:
        raw = b""
    if not body or len(raw) != PUBKEY_LENGTH:
        raise DepositDataInvalid(f"{field} must be a 0x-hex 48-byte BLS public key")
    return raw


def check_amount(amount_wei: int, withdrawal_credentials: bytes) -> int:
    """Returns the amount in gwei if the protocol accepts it for these credentials."""
    if amount_wei < MIN_DEPOSIT_WEI:
        raise DepositDataInvalid(
            f"deposit amount {amount_wei} wei is below the 1 ETH minimum",
            details={"amount": str(amount_wei)},
        )
    if amount_wei % GWEI:
        raise DepositDataInvalid("deposit amount must be a whole number of gwei")
    gwei = amount_wei // GWEI
    if gwei > MAX_UINT64:
        raise DepositDataInvalid("deposit amount does not fit the contract's uint64 gwei")
    if withdrawal_credentials[0] == ETH1_ADDRESS_WITHDRAWAL_PREFIX and amount_wei != FULL_DEPOSIT_WEI:
        raise DepositDataInvalid("a validator with 0x01 credentials takes exactly 32 ETH")
    if withdrawal_credentials[0] == COMPOUNDING_WITHDRAWAL_PREFIX and amount_wei > COMPOUNDING_MAX_WEI:
        raise DepositDataInvalid("a 0x02 deposit above 2048 ETH exceeds the maximum effective balance")
    return gwei


def verify_deposit_data(
    data: DepositData, *, amount_wei: int, vault_address: bytes, genesis_fork_version: bytes
) -> int:
    """Verifies ETH deposit data for a deposit of ``amount_wei`` from the vault.

    Checks, in order: lengths, withdrawal credentials (0x01 or 0x02, pointing at
    the vault), the amount, the deposit data root, and the BLS signature over the
    deposit message under the network's deposit domain.

    Returns:
        The amount in gwei, as it goes into the deposit contract.

    Raises:
        DepositDataInvalid: with the first reason the data is refused.
    """
    if len(data.pubkey) != PUBKEY_LENGTH:
        raise DepositDataInvalid(f"deposit pubkey must be {PUBKEY_LENGTH} bytes, got {len(data.pubkey)}")
    if len(data.withdrawal_credentials) != 32:
        raise DepositDataInvalid("withdrawal credentials must be 32 bytes")
    if len(data.signature) != SIGNATURE_LENGTH:
        raise DepositDataInvalid(f"deposit signature must be {SIGNATURE_LENGTH} bytes")
    if len(data.deposit_data_root) != 32:
        raise DepositDataInvalid("deposit data root must be 32 bytes")
    wc = data.withdrawal_credentials
    if wc[0] not in (ETH1_ADDRESS_WITHDRAWAL_PREFIX, COMPOUNDING_WITHDRAWAL_PREFIX):
        raise DepositDataInvalid(
            f"withdrawal credentials of type 0x{wc[0]:02x}: only 0x01 and 0x02 are accepted"
        )
    if wc[1:12] != bytes(11):
        raise DepositDataInvalid("withdrawal credentials are malformed (bytes 1-11 must be zero)")
    if wc[12:] != vault_address:
        raise DepositDataInvalid(
            "withdrawal credentials point at 0x"
            + wc[12:].hex()
            + ", not at the vault 0x"
            + vault_address.hex()
        )
    gwei = check_amount(amount_wei, wc)
    expected_root = deposit_data_root(data.pubkey, wc, gwei, data.signature)
    if expected_root != data.deposit_data_root:
        raise DepositDataInvalid(
            "deposit data root does not match the deposit data",
            details={"expected": "0x" + expected_root.hex()},
        )
    message = signing_root(deposit_message_root(data.pubkey, wc, gwei), deposit_domain(genesis_fork_version))
    try:
        valid = bool(bls.Verify(data.pubkey, message, data.signature))
    except Exception:  # the binding raises on points it cannot decode
        valid = False
    if not valid:
        raise DepositDataInvalid(
            "BLS signature over the deposit message does not verify for this pubkey and network"
        )
    return gwei


@dataclass(frozen=True)
class GeneratedDeposit:
    """Deposit data made by :func:`generate_deposit_data`, with the key that made it."""

    data: DepositData
    amount_wei: int
    secret_key: bytes


def generate_deposit_data(
    *,
    withdrawal_address: bytes,
    amount_wei: int,
    genesis_fork_version: bytes,
    compounding: bool = False,
    secret_key: bytes | None = None,
) -> GeneratedDeposit:
    """Makes valid deposit data with a fresh (or given) BLS key: for tests and the demo only.

    In production the staking provider generates validator keys and deposit data;
    custos only verifies them.
    """
    if secret_key is None:
        secret_key = (secrets.randbelow(_CURVE_ORDER - 1) + 1).to_bytes(32, "big")
    pubkey = bytes(bls.SkToPk(secret_key))
    wc = withdrawal_credentials_for(withdrawal_address, compounding=compounding)
    gwei = amount_wei // GWEI
    message = signing_root(deposit_message_root(pubkey, wc, gwei), deposit_domain(genesis_fork_version))
    signature = bytes(bls.Sign(secret_key, message))
    root = deposit_data_root(pubkey, wc, gwei, signature)
    return GeneratedDeposit(
        data=DepositData(
            pubkey=pubkey, withdrawal_credentials=wc, signature=signature, deposit_data_root=root
        ),
        amount_wei=amount_wei,
        secret_key=secret_key,
    )
