"""A cluster's JSON shapes for what LiteSVM holds: accounts, transactions, transaction errors.

The JSON forms of transaction errors come from solders (the types solana-py parses answers with), so
``data.err`` and ``meta.err`` read exactly as a cluster writes them; the one-line reasons are Agave's.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import base58
from solders.account import Account
from solders.rpc.responses import RpcSimulateTransactionResult
from solders.transaction import VersionedTransaction
from solders.transaction_status import TransactionErrorType

from services.chain.solana.errors import RpcParamsInvalid

#: A cluster refuses base58 account data past this size (it is slow to encode).
MAX_BASE58_BYTES = 128

_TX_ERRORS = {
    "AccountInUse": "Account in use",
    "AccountLoadedTwice": "Account loaded twice",
    "AccountNotFound": "Attempt to debit an account but found no record of a prior credit.",
    "ProgramAccountNotFound": "Attempt to load a program that does not exist",
    "InsufficientFundsForFee": "Insufficient funds for fee",
    "InvalidAccountForFee": "This account may not be used to pay transaction fees",
    "AlreadyProcessed": "This transaction has already been processed",
    "BlockhashNotFound": "Blockhash not found",
    "SignatureFailure": "Transaction did not pass signature verification",
    "SanitizeFailure": "Transaction failed to sanitize accounts offsets correctly",
}
_INSTRUCTION_ERRORS = {
    "InsufficientFunds": "insufficient funds for instruction",
    "InvalidArgument": "invalid program argument",
    "InvalidInstructionData": "invalid instruction data",
    "InvalidAccountData": "invalid account data for instruction",
    "MissingRequiredSignature": "missing required signature for instruction",
    "AccountAlreadyInitialized": "instruction requires an uninitialized account",
    "UninitializedAccount": "instruction requires an initialized account",
    "IncorrectProgramId": "incorrect program id for instruction",
    "InvalidAccountOwner": "Invalid account owner",
    "AccountNotRentExempt": "An account does not have enough lamports to be rent-exempt",
}


def err_json(error: TransactionErrorType | None) -> Any:
    """A transaction error as a cluster writes it: ``"BlockhashNotFound"``, ``{"InstructionError": [..]}``.

    solders only serializes these inside a result type, so one is made around it.
    """
    if error is None:
        return None
    return json.loads(RpcSimulateTransactionResult(err=error).to_json())["err"]


def describe_err(err: Any) -> str:
    """Agave's one-line reason for a transaction error in its JSON form (the variant name when unlisted)."""
    if isinstance(err, str):
        return _TX_ERRORS.get(err, err)
    if isinstance(err, dict) and "InstructionError" in err:
        index, inner = err["InstructionError"]
        if isinstance(inner, dict) and "Custom" in inner:
            reason = f"custom program error: {inner['Custom']:#x}"
        else:
            reason = _INSTRUCTION_ERRORS.get(str(inner), str(inner))
        return f"Error processing Instruction {index}: {reason}"
    if isinstance(err, dict) and "InsufficientFundsForRent" in err:
        index = err["InsufficientFundsForRent"]["account_index"]
        return f"Transaction results in an account ({index}) with insufficient funds for rent"
    return json.dumps(err)


def status_json(err: Any) -> dict[str, Any]:
    """The deprecated ``status`` field clusters still send next to ``err``."""
    return {"Ok": None} if err is None else {"Err": err}


def decode_transaction(data: Any, encoding: str) -> VersionedTransaction:
    """A wire transaction (``base64``, or ``base58``, sendTransaction's historical default)."""
    if not isinstance(data, str):
        raise RpcParamsInvalid("invalid transaction: expected an encoded string")
    raw = _decode(data, encoding)
    try:
        tx = VersionedTransaction.from_bytes(raw)
    except ValueError as e:
        raise RpcParamsInvalid(
            f"failed to deserialize solana_transaction::versioned::VersionedTransaction: {e}"
        ) from e
    try:
        tx.sanitize()
    except Exception as e:  # solders raises its own SanitizeError, not a ValueError
        raise RpcParamsInvalid(f"invalid transaction: {_TX_ERRORS['SanitizeFailure']}") from e
    if len(tx.signatures) != tx.message.header.num_required_signatures:
        raise RpcParamsInvalid("invalid transaction: the signature count differs from the message's")
    return tx


def decode_bytes(data: Any, encoding: str) -> bytes:
    """Encoded bytes sent as a parameter (a message for getFeeForMessage)."""
    if not isinstance(data, str):
        raise RpcParamsInvalid("invalid params: expected an encoded string")
    return _decode(data, encoding)


def _decode(data: str, encoding: str) -> bytes:
    try:
        if encoding == "base64":
            return base64.b64decode(data, validate=True)
        if encoding == "base58":
            return base58.b58decode(data)
    except (binascii.Error, ValueError) as e:
        raise RpcParamsInvalid(f"invalid {encoding} encoding: {e}") from e
    raise RpcParamsInvalid(f"unsupported encoding: {encoding}. Supported encodings: base58, base64")


def account_json(account: Account, encoding: str, data_slice: dict[str, Any] | None) -> dict[str, Any]:
    """An account as getAccountInfo's ``value``; ``jsonParsed`` is not served (no program parsers here)."""
    data = bytes(account.data)
    if data_slice:
        offset, length = int(data_slice.get("offset", 0)), int(data_slice.get("length", 0))
        data = data[offset : offset + length]
    if encoding == "base64":
        encoded: Any = [base64.b64encode(data).decode(), "base64"]
    elif encoding in ("base58", "binary"):
        if len(data) > MAX_BASE58_BYTES:
            raise RpcParamsInvalid(
                f"Encoded binary (base 58) data should be less than {MAX_BASE58_BYTES} bytes,"
                " please use Base64 encoding."
            )
        text = base58.b58encode(data).decode()
        encoded = text if encoding == "binary" else [text, "base58"]  # "binary": the legacy bare string
    else:
        raise RpcParamsInvalid(f"encoding {encoding} is not served by the custos LiteSVM devnet: use base64")
    return {
        "lamports": account.lamports,
        "owner": str(account.owner),
        "data": encoded,
        "executable": account.executable,
        "rentEpoch": account.rent_epoch,
        "space": len(account.data),
    }


def transaction_json(tx: VersionedTransaction, encoding: str) -> Any:
    """getTransaction's ``transaction``: ``[data, encoding]`` when binary, else the ``json`` object."""
    if encoding in ("base64", "base58"):
        raw = bytes(tx)
        text = base64.b64encode(raw).decode() if encoding == "base64" else base58.b58encode(raw).decode()
        return [text, encoding]
    if encoding != "json":
        raise RpcParamsInvalid(
            f"encoding {encoding} is not served by the custos LiteSVM devnet: use json or base64"
        )
    message = tx.message
    header = message.header
    out: dict[str, Any] = {
        "accountKeys": [str(k) for k in message.account_keys],
        "header": {
            "numRequiredSignatures": header.num_required_signatures,
            "numReadonlySignedAccounts": header.num_readonly_signed_accounts,
            "numReadonlyUnsignedAccounts": header.num_readonly_unsigned_accounts,
        },
        "instructions": [
            {
                "programIdIndex": ix.program_id_index,
                "accounts": list(bytes(ix.accounts)),
                "data": base58.b58encode(bytes(ix.data)).decode(),
                "stackHeight": None,
            }
            for ix in message.instructions
        ],
        "recentBlockhash": str(message.recent_blockhash),
    }
    lookups = getattr(message, "address_table_lookups", None)
    if lookups is not None:
        out["addressTableLookups"] = [json.loads(lookup.to_json()) for lookup in lookups]
    return {"signatures": [str(s) for s in tx.signatures], "message": out}
