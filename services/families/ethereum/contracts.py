"""The beacon deposit contract and the EIP-7002 / EIP-7251 system contracts: calldata and logs."""

from __future__ import annotations

from dataclasses import dataclass

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

from services.families.errors import TransactionInvalid

WITHDRAWAL_REQUEST_CONTRACT = "0x00000961ef480eb55e80d19ad83579a64c007002"  # EIP-7002
CONSOLIDATION_REQUEST_CONTRACT = "0x0000bbddc7ce488642fb579f8b00f3a590007251"  # EIP-7251

DEPOSIT_SELECTOR = keccak(text="deposit(bytes,bytes,bytes,bytes32)")[:4]
GET_DEPOSIT_ROOT_SELECTOR = keccak(text="get_deposit_root()")[:4]
GET_DEPOSIT_COUNT_SELECTOR = keccak(text="get_deposit_count()")[:4]
DEPOSIT_EVENT_TOPIC = keccak(text="DepositEvent(bytes,bytes,bytes,bytes,bytes)")
_DEPOSIT_ARGS = ["bytes", "bytes", "bytes", "bytes32"]

WITHDRAWAL_REQUEST_LENGTH = 48 + 8
CONSOLIDATION_REQUEST_LENGTH = 48 + 48
WITHDRAWAL_LOG_LENGTH = 20 + 48 + 8
CONSOLIDATION_LOG_LENGTH = 20 + 48 + 48


@dataclass(frozen=True)
class DepositCall:
    pubkey: bytes
    withdrawal_credentials: bytes
    signature: bytes
    deposit_data_root: bytes


def deposit_calldata(call: DepositCall) -> bytes:
    return DEPOSIT_SELECTOR + abi_encode(
        _DEPOSIT_ARGS,
        [call.pubkey, call.withdrawal_credentials, call.signature, call.deposit_data_root],
    )


def decode_deposit_calldata(data: bytes) -> DepositCall:
    """Strict: the selector, the ABI layout and the field sizes must be exactly what custos builds."""
    if data[:4] != DEPOSIT_SELECTOR:
        raise TransactionInvalid("call to the deposit contract is not deposit(bytes,bytes,bytes,bytes32)")
    try:
        pubkey, wc, signature, root = abi_decode(_DEPOSIT_ARGS, data[4:])
    except Exception as e:
        raise TransactionInvalid(f"deposit calldata does not decode: {e}") from None
    call = DepositCall(pubkey, wc, signature, root)
    if (len(pubkey), len(wc), len(signature)) != (48, 32, 96):
        raise TransactionInvalid("deposit calldata has fields of the wrong size")
    if deposit_calldata(call) != data:
        raise TransactionInvalid("deposit calldata is not canonically encoded")
    return call


def withdrawal_request_calldata(pubkey: bytes, amount_gwei: int) -> bytes:
    """EIP-7002 request: validator pubkey || amount (uint64 gwei, big-endian; 0 = full exit)."""
    return pubkey + amount_gwei.to_bytes(8, "big")


def consolidation_request_calldata(source_pubkey: bytes, target_pubkey: bytes) -> bytes:
    """EIP-7251 request: source pubkey || target pubkey."""
    return source_pubkey + target_pubkey


def deposit_event_fields(data: bytes) -> dict[str, str]:
    """Decodes a DepositEvent's data (amount and index are little-endian uint64)."""
    pubkey, wc, amount, signature, index = abi_decode(["bytes"] * 5, data)
    return {
        "pubkey": "0x" + pubkey.hex(),
        "withdrawal_credentials": "0x" + wc.hex(),
        "amount_gwei": str(int.from_bytes(amount, "little")),
        "signature": "0x" + signature.hex(),
        "index": str(int.from_bytes(index, "little")),
    }


def withdrawal_request_log_fields(data: bytes) -> dict[str, str]:
    if len(data) != WITHDRAWAL_LOG_LENGTH:
        raise ValueError("not an EIP-7002 request log")
    return {
        "source_address": to_checksum_address(data[:20]),
        "validator_pubkey": "0x" + data[20:68].hex(),
        "amount_gwei": str(int.from_bytes(data[68:76], "big")),
    }


def consolidation_request_log_fields(data: bytes) -> dict[str, str]:
    if len(data) != CONSOLIDATION_LOG_LENGTH:
        raise ValueError("not an EIP-7251 request log")
    return {
        "source_address": to_checksum_address(data[:20]),
        "source_pubkey": "0x" + data[20:68].hex(),
        "target_pubkey": "0x" + data[68:116].hex(),
    }
