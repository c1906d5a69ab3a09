"""The devnet's JSON-RPC methods: a cluster's params and answers, over :class:`.chain.DevnetChain`.

Exactly the methods a custos adapter on solana-py's ``AsyncClient`` calls, plus ``custos_advanceEpoch`` and
``custos_advanceSlots`` (ours, named so) for tests and the demo. Errors carry Solana's codes; the mapping
from the devnet's typed errors to them is :func:`error_object`, in one place.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from typing import Any

import solders
from solders.hash import Hash
from solders.pubkey import Pubkey
from solders.signature import Signature

from services.chain.solana.chain import Commitment, DevnetChain, Landed, Simulation
from services.chain.solana.errors import (
    FaucetRequestInvalid,
    MinContextSlotNotReached,
    PreflightFailed,
    RpcMethodUnknown,
    RpcParamsInvalid,
    SignatureVerificationFailed,
)
from services.chain.solana.wire import (
    account_json,
    decode_bytes,
    decode_transaction,
    status_json,
    transaction_json,
)
from services.runtime.errors import CustosError

log = logging.getLogger(__name__)

#: What getVersion reports: this is not an Agave node, and says so.
SOLANA_CORE_VERSION = f"custos-litesvm-devnet (solders {solders.__version__})"
API_VERSION = "2.2.0"
MAX_MULTIPLE_ACCOUNTS = 100
MAX_SIGNATURE_STATUSES = 256

INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
PREFLIGHT_FAILURE = -32002
SIGNATURE_VERIFICATION_FAILURE = -32003
MIN_CONTEXT_SLOT_NOT_REACHED = -32016

Params = list[Any]


class RpcMethods:
    """One handler per method; :meth:`call` runs one and raises the devnet's typed errors."""

    def __init__(self, chain: DevnetChain) -> None:
        self.chain = chain
        self._handlers: dict[str, Callable[[Params], Any]] = {
            "getLatestBlockhash": self.get_latest_blockhash,
            "isBlockhashValid": self.is_blockhash_valid,
            "getBalance": self.get_balance,
            "getAccountInfo": self.get_account_info,
            "getMultipleAccounts": self.get_multiple_accounts,
            "sendTransaction": self.send_transaction,
            "simulateTransaction": self.simulate_transaction,
            "getSignatureStatuses": self.get_signature_statuses,
            "getTransaction": self.get_transaction,
            "getEpochInfo": lambda p: chain.epoch_info(_commitment(_config(p, 0))),
            "getSlot": lambda p: self._slot(_config(p, 0)),
            "getBlockHeight": lambda p: self._slot(_config(p, 0)),
            "getMinimumBalanceForRentExemption": self.get_minimum_balance_for_rent_exemption,
            "getFeeForMessage": self.get_fee_for_message,
            "getStakeMinimumDelegation": self.get_stake_minimum_delegation,
            "getVoteAccounts": self.get_vote_accounts,
            "getGenesisHash": lambda p: str(chain.genesis_hash),
            "getHealth": lambda p: "ok",
            "getVersion": lambda p: {"solana-core": SOLANA_CORE_VERSION, "feature-set": 0},
            "requestAirdrop": self.request_airdrop,
            "custos_advanceEpoch": self.advance_epoch,
            "custos_advanceSlots": self.advance_slots,
        }

    def call(self, method: str, params: Any) -> Any:
        handler = self._handlers.get(method)
        if handler is None:
            raise RpcMethodUnknown("Method not found")
        if params is None:
            params = []
        if not isinstance(params, list):
            raise RpcParamsInvalid("Invalid params: expected an array")
        return handler(params)

    def _context(self, slot: int) -> dict[str, Any]:
        return {"slot": slot, "apiVersion": API_VERSION}

    def _slot(self, config: dict[str, Any]) -> int:
        return self.chain.slot(_commitment(config), _min_context_slot(config))

    def get_latest_blockhash(self, params: Params) -> Any:
        config = _config(params, 0)
        slot, blockhash, last_valid = self.chain.latest_blockhash(
            _commitment(config), _min_context_slot(config)
        )
        return {
            "context": self._context(slot),
            "value": {"blockhash": str(blockhash), "lastValidBlockHeight": last_valid},
        }

    def is_blockhash_valid(self, params: Params) -> Any:
        try:
            blockhash = Hash.from_string(_required(params, 0, str))
        except ValueError as e:
            raise RpcParamsInvalid(f"Invalid param: {e}") from e
        slot, valid = self.chain.is_blockhash_valid(blockhash)
        return {"context": self._context(slot), "value": valid}

    def get_balance(self, params: Params) -> Any:
        config = _config(params, 1)
        slot, (account,) = self.chain.accounts(
            [_pubkey(_required(params, 0, str))], _commitment(config), _min_context_slot(config)
        )
        return {"context": self._context(slot), "value": account.lamports if account else 0}

    def get_account_info(self, params: Params) -> Any:
        config = _config(params, 1)
        return self._accounts([_required(params, 0, str)], config, single=True)

    def get_multiple_accounts(self, params: Params) -> Any:
        keys = _required(params, 0, list)
        if len(keys) > MAX_MULTIPLE_ACCOUNTS:
            raise RpcParamsInvalid(f"Too many inputs provided; max {MAX_MULTIPLE_ACCOUNTS}")
        return self._accounts(keys, _config(params, 1), single=False)

    def _accounts(self, keys: list[Any], config: dict[str, Any], *, single: bool) -> Any:
        encoding = config.get("encoding") or "binary"
        pubkeys = [_pubkey(k) for k in keys]
        slot, accounts = self.chain.accounts(pubkeys, _commitment(config), _min_context_slot(config))
        values = [None if a is None else account_json(a, encoding, config.get("dataSlice")) for a in accounts]
        return {"context": self._context(slot), "value": values[0] if single else values}

    def send_transaction(self, params: Params) -> Any:
        config = _config(params, 1)
        tx = decode_transaction(_required(params, 0, str), config.get("encoding") or "base58")
        _min_context_slot_reached(self.chain, config)
        return str(self.chain.send(tx, preflight=not config.get("skipPreflight", False)))

    def simulate_transaction(self, params: Params) -> Any:
        config = _config(params, 1)
        tx = decode_transaction(_required(params, 0, str), config.get("encoding") or "base58")
        _min_context_slot_reached(self.chain, config)
        slot, found = self.chain.simulate(
            tx,
            sig_verify=bool(config.get("sigVerify", False)),
            replace_blockhash=bool(config.get("replaceRecentBlockhash", False)),
            commitment=_commitment(config),
        )
        wanted = config.get("accounts") or {}
        return {"context": self._context(slot), "value": simulation_json(found, wanted)}

    def get_signature_statuses(self, params: Params) -> Any:
        signatures = [_signature(s) for s in _required(params, 0, list)]
        if len(signatures) > MAX_SIGNATURE_STATUSES:
            raise RpcParamsInvalid(f"Too many inputs provided; max {MAX_SIGNATURE_STATUSES}")
        config = _config(params, 1)
        slot, found = self.chain.statuses(signatures, bool(config.get("searchTransactionHistory", False)))
        values = [
            None
            if item is None
            else {
                "slot": item[0].slot,
                "confirmations": None if item[1] is Commitment.FINALIZED else item[2],
                "err": item[0].err,
                "status": status_json(item[0].err),
                "confirmationStatus": item[1].value,
            }
            for item in found
        ]
        return {"context": self._context(slot), "value": values}

    def get_transaction(self, params: Params) -> Any:
        signature = _signature(_required(params, 0, str))
        config = _config(params, 1)
        commitment = _commitment(config)
        if commitment is Commitment.PROCESSED:
            raise RpcParamsInvalid("Method does not support commitment below `confirmed`")
        record = self.chain.transaction(signature, commitment)
        if record is None:
            return None
        return landed_json(
            record, config.get("encoding") or "json", config.get("maxSupportedTransactionVersion")
        )

    def get_minimum_balance_for_rent_exemption(self, params: Params) -> Any:
        size = _required(params, 0, int)
        if size < 0:
            raise RpcParamsInvalid("Invalid params: data length must not be negative")
        return self.chain.minimum_balance_for_rent_exemption(size)

    def get_fee_for_message(self, params: Params) -> Any:
        config = _config(params, 1)
        raw = decode_bytes(_required(params, 0, str), "base64")
        slot, fee = self.chain.fee_for_message(raw, _commitment(config))
        return {"context": self._context(slot), "value": fee}

    def get_stake_minimum_delegation(self, params: Params) -> Any:
        slot = self._slot(_config(params, 0))
        return {"context": self._context(slot), "value": self.chain.stake_minimum_delegation}

    def get_vote_accounts(self, params: Params) -> Any:
        config = _config(params, 0)
        only = config.get("votePubkey")
        slot, stakes = self.chain.vote_account_stakes(_commitment(config))
        current = [
            {
                "votePubkey": str(v.vote),
                "nodePubkey": str(v.node),
                "activatedStake": stakes.get(v.vote, 0),
                "epochVoteAccount": True,
                "commission": v.commission,
                # The devnet's validators count as voting on every slot: nothing else votes here.
                "lastVote": slot,
                "epochCredits": [],
                "rootSlot": max(0, slot - 32),
            }
            for v in self.chain.vote_accounts
            if only is None or str(v.vote) == only
        ]
        return {"current": current, "delinquent": []}

    def request_airdrop(self, params: Params) -> Any:
        to = _pubkey(_required(params, 0, str))
        lamports = _required(params, 1, int)
        return str(self.chain.airdrop(to, lamports))

    def advance_epoch(self, params: Params) -> Any:
        epoch, slot = self.chain.advance_epoch()
        return {"epoch": epoch, "slot": slot}

    def advance_slots(self, params: Params) -> Any:
        return {"slot": self.chain.advance_slots(_required(params, 0, int))}


def simulation_json(found: Simulation, wanted_accounts: dict[str, Any]) -> dict[str, Any]:
    """simulateTransaction's ``value`` (also a failed preflight's ``data``)."""
    accounts = None
    addresses = wanted_accounts.get("addresses")
    if addresses is not None:
        encoding = wanted_accounts.get("encoding") or "base64"
        post = found.post_accounts or {}
        accounts = []
        for address in addresses:
            account = post.get(_pubkey(address))
            accounts.append(
                None if account is None or account.lamports == 0 else account_json(account, encoding, None)
            )
    return {
        "err": found.err,
        "logs": found.logs,
        "accounts": accounts,
        "unitsConsumed": found.units_consumed,
        "returnData": None
        if found.return_data is None
        else {
            "programId": str(found.return_data[0]),
            "data": [base64.b64encode(found.return_data[1]).decode(), "base64"],
        },
        "innerInstructions": None,
        "replacementBlockhash": None
        if found.replacement is None
        else {"blockhash": str(found.replacement[0]), "lastValidBlockHeight": found.replacement[1]},
    }


def landed_json(record: Landed, encoding: str, max_version: Any) -> dict[str, Any]:
    """getTransaction's answer: slot, blockTime, the transaction and its status meta."""
    legacy = not hasattr(record.transaction.message, "address_table_lookups")
    if not legacy and max_version is None:
        raise RpcParamsInvalid(
            "Transaction version (0) is not supported by the requesting client. Please try the request again"
            ' with the following configuration parameter: "maxSupportedTransactionVersion": 0'
        )
    out: dict[str, Any] = {
        "slot": record.slot,
        "blockTime": record.block_time,
        "transaction": transaction_json(record.transaction, encoding),
        "meta": {
            "err": record.err,
            "status": status_json(record.err),
            "fee": record.fee,
            "preBalances": record.pre_balances,
            "postBalances": record.post_balances,
            "innerInstructions": [],
            "logMessages": record.logs,
            "preTokenBalances": [],
            "postTokenBalances": [],
            "rewards": [],
            "loadedAddresses": {"writable": [], "readonly": []},
            "computeUnitsConsumed": record.units_consumed,
        },
    }
    if max_version is not None:
        out["version"] = "legacy" if legacy else 0
    return out


def error_object(error: Exception) -> dict[str, Any]:
    """The JSON-RPC error object for ``error``: the devnet's one mapping to Solana's codes."""
    if isinstance(error, PreflightFailed):
        data = {"accounts": None, "innerInstructions": None, "replacementBlockhash": None, "returnData": None}
        data.update(error.simulation)
        return {"code": PREFLIGHT_FAILURE, "message": error.message, "data": data}
    if isinstance(error, SignatureVerificationFailed):
        return {"code": SIGNATURE_VERIFICATION_FAILURE, "message": error.message}
    if isinstance(error, MinContextSlotNotReached):
        return {"code": MIN_CONTEXT_SLOT_NOT_REACHED, "message": error.message, "data": error.details}
    if isinstance(error, RpcMethodUnknown):
        return {"code": METHOD_NOT_FOUND, "message": error.message}
    if isinstance(error, RpcParamsInvalid | FaucetRequestInvalid):
        return {"code": INVALID_PARAMS, "message": error.message}
    if isinstance(error, CustosError):
        return {"code": INTERNAL_ERROR, "message": error.message}
    log.exception("devnet RPC call failed", exc_info=error)
    return {"code": INTERNAL_ERROR, "message": "Internal error"}


def _required(params: Params, index: int, kind: type) -> Any:
    if len(params) <= index:
        raise RpcParamsInvalid(f"Invalid params: parameter {index} is missing")
    value = params[index]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RpcParamsInvalid(f"Invalid params: parameter {index} must be {kind.__name__}")
    return value


def _config(params: Params, index: int) -> dict[str, Any]:
    if len(params) <= index or params[index] is None:
        return {}
    if not isinstance(params[index], dict):
        raise RpcParamsInvalid(f"Invalid params: parameter {index} must be a configuration object")
    return dict(params[index])


def _commitment(config: dict[str, Any]) -> Commitment:
    value = config.get("commitment") or Commitment.FINALIZED.value
    try:
        return Commitment(value)
    except ValueError as e:
        raise RpcParamsInvalid(f"Invalid params: unknown commitment {value!r}") from e


def _min_context_slot(config: dict[str, Any]) -> int | None:
    value = config.get("minContextSlot")
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise RpcParamsInvalid("Invalid params: minContextSlot must be an integer")
    return value


def _min_context_slot_reached(chain: DevnetChain, config: dict[str, Any]) -> None:
    commitment = _commitment({"commitment": config.get("preflightCommitment") or config.get("commitment")})
    chain.slot(commitment, _min_context_slot(config))


def _pubkey(value: Any) -> Pubkey:
    try:
        return Pubkey.from_string(value)
    except (ValueError, TypeError) as e:
        raise RpcParamsInvalid(f"Invalid param: {value!r} is not a base58 public key") from e


def _signature(value: Any) -> Signature:
    try:
        return Signature.from_string(value)
    except (ValueError, TypeError) as e:
        raise RpcParamsInvalid(f"Invalid param: {value!r} is not a base58 signature") from e
