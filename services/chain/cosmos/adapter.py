"""The Cosmos SDK chain adapter: the I/O half of the Cosmos family, through the node's REST API.

Stake = MsgDelegate, unstake = MsgUndelegate then the chain's unbonding, restake =
MsgBeginRedelegate, and the family's other messages (:mod:`services.families.cosmos`
builds and checks every byte). This module reads what a build needs from the node
(account number and sequence, the node's minimum gas price, gas by simulation), sends
signed bytes once, follows them to inclusion, and turns the node's refusals into typed
errors a person can act on.

Sequences are reserved like Ethereum nonces (``services.chain.repository``): one
transaction per sequence can ever land, and a Cosmos node refuses outright a sequence
that is not the account's next (no queue as on Ethereum). So a signed transaction whose
sequence is still ahead of the account (an earlier one of the vault is not included yet)
is *waiting*, not refused: :class:`SequenceAhead` is retryable and the same bytes go again.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Any

from services.chain.cosmos.rest import RestClient, quote
from services.chain.decoding import decoded_transaction
from services.chain.errors import (
    BroadcastRejected,
    ChainError,
    FeesAboveCap,
    InsufficientFunds,
    IntentInvalid,
    NodeError,
    NodeUnavailable,
)
from services.chain.types import (
    ChainEvent,
    DecodedTransaction,
    SeenTransaction,
    SignedInfo,
    TransactionStatus,
    TxState,
    WaitStatus,
)
from services.families.config import ChainConfig
from services.families.cosmos import tx as cosmos_tx
from services.families.cosmos.family import CosmosFamily, _unsigned_of_tx_raw, build_unsigned
from services.families.errors import FamilyError
from services.runtime.errors import Unavailable
from services.runtime.intent import (
    Action,
    ClaimRewardsTarget,
    IntentSpec,
    RestakeTarget,
    StakeTarget,
    UnstakeTarget,
    VoteTarget,
)

log = logging.getLogger("custos.chain")

#: Simulation undercounts what the node charges at delivery (signature verification and the
#: transaction's size are charged on the real bytes: measured ~162k simulated vs ~164k used for
#: a MsgDelegate on injectived), and it runs on the state at build time while a vault's
#: transactions land in turn: a delegation simulated before the vault's first one to its
#: validator landed also pays that delegation's rewards out when it lands (measured 147k
#: simulated vs 191.3k used on injectived, +30.3%). So the gas limit is the simulation plus this.
GAS_MARGIN_PERCENT = 50
#: The gas limit of the trial transaction that is simulated (a fee is needed: a transaction without
#: one skips the fee deduction and its gas).
SIMULATION_GAS = 400_000
_TX_ID = re.compile(r"^[0-9A-F]{64}$")
_SEQUENCE_MISMATCH = re.compile(r"account sequence mismatch, expected (\d+), got (\d+)")
#: Cosmos SDK error codes (codespace ``sdk``) the broadcast turns into clear errors.
_CODE_UNAUTHORIZED = 4
_CODE_INSUFFICIENT_FUNDS = 5
_CODE_OUT_OF_GAS = 11
_CODE_INSUFFICIENT_FEE = 13
_CODE_TX_IN_MEMPOOL_CACHE = 19
_CODE_MEMPOOL_FULL = 20
_CODE_WRONG_SEQUENCE = 32
#: Events of a transaction worth keeping in the audit trail (the rest are fee and bank noise).
_EVENTS = frozenset(
    {"delegate", "unbond", "redelegate", "withdraw_rewards", "proposal_vote", "complete_unbonding"}
)


class SequenceAhead(ChainError, Unavailable):
    """The transaction's sequence is ahead of the account's: an earlier transaction of the vault is
    not included yet. The same bytes go again later (retryable)."""


class SequenceUsed(BroadcastRejected):
    """The transaction's sequence was used by another transaction: this one can never land."""


class SignatureRejected(BroadcastRejected):
    """The node's signature check failed: wrong chain id, account number, sequence or signature."""


class FeeRejected(BroadcastRejected):
    """The fee is below what the node takes (its minimum gas price times the gas limit)."""


class TransactionRefused(NodeError):
    """The chain refuses what the transaction does (its simulation failed): a redelegation still
    in progress, a delegation too small, an unknown validator or proposal..."""


@dataclass(frozen=True)
class PreparedCosmos:
    """Everything of a transaction but its sequence: the account, the gas and the fee."""

    spec: IntentSpec
    public_key: bytes
    account_number: int
    gas_limit: int
    fee: int


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _node_message(answer: dict[str, Any]) -> str:
    """The reason in a node's error answer, without the SDK's wrapping."""
    text = str(answer.get("message") or answer.get("raw_log") or "no reason given")
    text = re.sub(r"^failed to execute message; message index: \d+: ", "", text)
    return text[:400]


def _ceil(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_CEILING))


def _rfc3339(text: str) -> datetime:
    """A node's timestamp (nanoseconds, ``Z``) as an aware datetime (to the microsecond)."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text.strip())
    if m is None:
        raise NodeUnavailable(f"the node gave a time custos cannot read: {text[:64]!r}")
    frac = (m.group(2) or "")[:6].ljust(6, "0")
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.fromisoformat(f"{m.group(1)}.{frac}{zone}").astimezone(UTC)


class CosmosAdapter:
    """One Cosmos SDK chain of the registry, reached through its node's REST API."""

    def __init__(self, config: ChainConfig, rest: RestClient | None = None) -> None:
        if not config.rest_url and rest is None:
            raise ValueError(f"chain {config.name}: a Cosmos chain needs rest_url (the node's REST API)")
        self.config = config
        self.family = CosmosFamily()
        self.rest = rest or RestClient(config.rest_url, timeout=config.rpc_timeout_seconds)

    # -- spellings -------------------------------------------------------------------------------

    def normalise_address(self, address: str) -> str:
        return self.family.normalise_address(self.config, address)

    def tx_id(self, text: str) -> str:
        """A transaction id in the chain's spelling (64 upper-case hex digits)."""
        tx_id = text.upper()
        if not _TX_ID.match(tx_id):
            raise IntentInvalid("a Cosmos transaction id is 64 hex digits")
        return tx_id

    def plan(self, spec: IntentSpec, vault_address: str) -> None:
        """Checks the intent against the chain (spellings, amounts); raises ``IntentInvalid``."""
        self.family.validate_intent(self.config, spec, vault_address)

    # -- reads -----------------------------------------------------------------------------------

    async def _get(self, path: str, *, missing_ok: bool = False) -> dict[str, Any] | None:
        status, answer = await self.rest.get(path)
        if status == 200:
            return answer
        if missing_ok and status == 404:
            return None
        if status >= 500 and "code" not in answer:
            raise NodeUnavailable(f"node REST {path.split('?')[0]}: HTTP {status}")
        if missing_ok and int(answer.get("code", 0)) == 5:  # gRPC NotFound through the gateway
            return None
        raise NodeError(f"the node refused {path.split('?')[0]}: {_node_message(answer)}")

    async def account(self, address: str) -> tuple[int, int]:
        """(account number, sequence) of ``address``; an account the chain never saw has none."""
        answer = await self._get(f"/cosmos/auth/v1beta1/account_info/{quote(address)}", missing_ok=True)
        if answer is None:
            raise InsufficientFunds(
                f"{address} has no account on {self.config.name} yet: fund it first",
                details={"address": address},
            )
        info = answer.get("info") or {}
        return int(info.get("account_number", 0)), int(info.get("sequence", 0))

    async def balance(self, address: str) -> int:
        answer = await self._get(
            f"/cosmos/bank/v1beta1/spendable_balances/{quote(address)}/by_denom?denom={quote(self.config.denom)}"
        )
        assert answer is not None
        return int((answer.get("balance") or {}).get("amount", 0))

    async def delegation(self, address: str, validator: str) -> int:
        """The vault's delegation to ``validator`` in base units (0 when none)."""
        answer = await self._get(
            f"/cosmos/staking/v1beta1/validators/{quote(validator)}/delegations/{quote(address)}",
            missing_ok=True,
        )
        if answer is None:
            return 0
        return int(((answer.get("delegation_response") or {}).get("balance") or {}).get("amount", 0))

    async def validator_known(self, validator: str) -> bool:
        return (
            await self._get(f"/cosmos/staking/v1beta1/validators/{quote(validator)}", missing_ok=True)
            is not None
        )

    async def min_gas_price(self) -> Decimal:
        """The node's minimum gas price in the chain's denomination (0 when it sets none)."""
        answer = await self._get("/cosmos/base/node/v1beta1/config")
        assert answer is not None
        for coin in str(answer.get("minimum_gas_price", "")).split(","):
            m = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z][a-zA-Z0-9/:._-]*)\s*", coin)
            if m and m.group(2) == self.config.denom:
                try:
                    return Decimal(m.group(1))
                except InvalidOperation:
                    break
        return Decimal(0)

    async def head(self) -> int:
        """The latest block's height (the chain service's health probe asks it)."""
        answer = await self._get("/cosmos/base/tendermint/v1beta1/blocks/latest")
        assert answer is not None
        header = ((answer.get("block") or answer.get("sdk_block") or {}).get("header")) or {}
        try:
            return int(header["height"])
        except (KeyError, ValueError):
            raise NodeUnavailable("the node has no latest block yet") from None

    # -- submission ------------------------------------------------------------------------------

    def display(self, amount: int) -> str:
        """``amount`` base units as people read them: ``2.5 INJ`` (exact, trailing zeros trimmed)."""
        return self.config.amount_text(amount)

    async def check_holds_value(self, spec: IntentSpec, vault_address: str) -> str:
        """Refuses, at submission, an intent the vault cannot carry out now: a delegation of more
        than it holds, an undelegation or redelegation of more than it has delegated there, a
        validator the chain does not know, a vote on a proposal not in its voting period, a claim
        without a delegation. Returns what approvers should see beside the intent (a vote's
        proposal title and the vault's voting weight, a claim's pending rewards). A node that
        cannot be reached does not hold the submission back: the build checks again."""
        try:
            return await self._check_holds_value(spec, vault_address)
        except NodeUnavailable as e:
            log.warning("%s of %s not checked at submission: %s", spec.action, vault_address, e)
            return ""

    async def voting_weight(self, address: str) -> int:
        """The vault's bonded stake over every validator: the weight x/gov gives its vote."""
        answer = await self._get(f"/cosmos/staking/v1beta1/delegations/{quote(address)}?pagination.limit=200")
        assert answer is not None
        return sum(
            int((d.get("balance") or {}).get("amount", 0)) for d in answer.get("delegation_responses") or []
        )

    async def _vote_context(self, target: VoteTarget, vault_address: str) -> str:
        answer = await self._get(f"/cosmos/gov/v1/proposals/{target.proposal_id}", missing_ok=True)
        proposal = (answer or {}).get("proposal")
        if not isinstance(proposal, dict):
            raise IntentInvalid(f"{self.config.name} has no proposal {target.proposal_id}")
        status = str(proposal.get("status", "")).removeprefix("PROPOSAL_STATUS_")
        if status != "VOTING_PERIOD":
            raise IntentInvalid(f"proposal {target.proposal_id} is not open for votes ({status.lower()})")
        title = str(proposal.get("title") or "(untitled)")[:120]
        ends = _rfc3339(str(proposal.get("voting_end_time")))
        weight = await self.voting_weight(vault_address)
        votes = (
            f"the vault votes with {self.display(weight)} bonded"
            if weight
            else "the vault has no bonded stake: its vote carries no weight"
        )
        return f"proposal {target.proposal_id} {title!r}, voting ends {ends:%Y-%m-%d %H:%M:%S} UTC; {votes}"

    async def _claim_context(self, target: ClaimRewardsTarget, vault_address: str) -> str:
        if not await self.delegation(vault_address, target.validator):
            raise IntentInvalid(f"the vault has no delegation to {target.validator}: it has no rewards there")
        answer = await self._get(
            f"/cosmos/distribution/v1beta1/delegators/{quote(vault_address)}/rewards/{quote(target.validator)}",
            missing_ok=True,
        )
        pending = sum(
            _ceil(Decimal(str(c.get("amount", "0"))))
            for c in (answer or {}).get("rewards") or []
            if c.get("denom") == self.config.denom
        )
        return f"rewards pending from {target.validator}: about {self.display(pending)}"

    async def _check_holds_value(self, spec: IntentSpec, vault_address: str) -> str:
        unit = self.config.denom
        target = spec.target
        if isinstance(target, VoteTarget):
            return await self._vote_context(target, vault_address)
        if isinstance(target, ClaimRewardsTarget):
            return await self._claim_context(target, vault_address)
        if isinstance(target, StakeTarget):
            if not await self.validator_known(target.validator):
                raise IntentInvalid(f"{target.validator} is not a validator of {self.config.name}")
            held = await self.balance(vault_address)
            if held < spec.amount:
                raise InsufficientFunds(
                    f"vault {spec.vault_id} ({vault_address}) holds {held} {unit} on {self.config.name};"
                    f" the delegation needs {spec.amount} {unit} plus fees: fund the vault, then submit",
                    details={"balance": str(held), "value": str(spec.amount)},
                )
        elif isinstance(target, UnstakeTarget | RestakeTarget):
            source = target.validator if isinstance(target, UnstakeTarget) else target.source_validator
            if isinstance(target, RestakeTarget) and not await self.validator_known(target.target_validator):
                raise IntentInvalid(f"{target.target_validator} is not a validator of {self.config.name}")
            delegated = await self.delegation(vault_address, source)
            if delegated < spec.amount:
                raise InsufficientFunds(
                    f"vault {spec.vault_id} has {delegated} {unit} delegated to {source};"
                    f" the {spec.action.lower()} moves {spec.amount} {unit}",
                    details={"delegated": str(delegated), "amount": str(spec.amount)},
                )
        return ""

    # -- building --------------------------------------------------------------------------------

    def _unsigned(self, prepared: PreparedCosmos, sequence: int, gas_limit: int, fee: int) -> bytes:
        try:
            return build_unsigned(
                self.config,
                prepared.spec,
                public_key=prepared.public_key,
                account_number=prepared.account_number,
                sequence=sequence,
                gas_limit=gas_limit,
                fee_amount=fee,
            )
        except FamilyError as e:
            raise IntentInvalid(e.message) from None

    async def pending_nonce(self, address: str) -> int:
        """The account's sequence: the next transaction it may send."""
        return (await self.account(address))[1]

    async def prepare(
        self, spec: IntentSpec, vault_address: str, public_key: bytes = b"", step: str = ""
    ) -> PreparedCosmos:
        """The account number, the gas (by simulation, plus a margin) and the fee (the node's minimum
        gas price), checked within the chain's cap and affordable; no sequence reserved yet.

        Raises what the chain would refuse (a simulation that fails says why), before anything is
        reserved or signed.
        """
        self.plan(spec, vault_address)
        if not public_key:
            raise IntentInvalid("a Cosmos transaction names its signer's public key: the vault key is needed")
        try:
            key_address = self.family.address(self.config, public_key)
        except FamilyError as e:
            raise IntentInvalid(f"the vault key is not a secp256k1 key: {e.message}") from None
        if key_address != vault_address:
            raise IntentInvalid(f"the vault key's address is {key_address}, not {vault_address}")
        account_number, sequence = await self.account(vault_address)
        price = await self.min_gas_price()
        trial = PreparedCosmos(spec, public_key, account_number, SIMULATION_GAS, 0)
        trial_fee = min(_ceil(price * SIMULATION_GAS), self.config.max_fee_wei)
        used = await self.simulate(trial, sequence, trial_fee)
        gas = used * (100 + GAS_MARGIN_PERCENT) // 100
        fee = _ceil(price * gas)
        if fee > self.config.max_fee_wei:
            raise FeesAboveCap(
                f"the transaction needs {gas} gas at {price} {self.config.denom}: a fee of {fee}"
                f" {self.config.denom}, above the chain's cap {self.config.max_fee_wei}",
                details={"fee": str(fee), "cap": str(self.config.max_fee_wei)},
            )
        cost = fee + (spec.amount if spec.action is Action.STAKE else 0)
        held = await self.balance(vault_address)
        if held < cost:
            raise InsufficientFunds(
                f"vault {vault_address} holds {held} {self.config.denom}; the transaction needs {cost}"
                " (what it delegates and its fee)",
                details={"balance": str(held), "cost": str(cost)},
            )
        return PreparedCosmos(spec, public_key, account_number, gas, fee)

    async def simulate(self, prepared: PreparedCosmos, sequence: int, fee: int) -> int:
        """The gas the transaction uses, by the node's simulation (a zero signature stands in: the
        node does not verify signatures when simulating). A sequence the node moved past since it
        was read is retried once with the node's."""
        for _ in range(2):
            unsigned = self._unsigned(prepared, sequence, prepared.gas_limit, fee)
            raw = cosmos_tx.parse(unsigned).tx_raw(bytes(64))
            status, answer = await self.rest.post("/cosmos/tx/v1beta1/simulate", {"tx_bytes": _b64(raw)})
            if status == 200 and "gas_info" in answer:
                return int(answer["gas_info"].get("gas_used", 0))
            message = _node_message(answer)
            m = _SEQUENCE_MISMATCH.search(message)
            if m is not None:
                sequence = int(m.group(1))
                continue
            if status >= 500 and "code" not in answer:
                raise NodeUnavailable(f"simulation: HTTP {status}")
            raise TransactionRefused(
                f"{self.config.name} refuses the {prepared.spec.action.lower()}: {message}",
                details={"code": str(answer.get("code", ""))},
            )
        raise NodeUnavailable("the account's sequence kept moving while simulating")

    def assemble(self, prepared: PreparedCosmos, nonce: int) -> tuple[bytes, DecodedTransaction]:
        unsigned = self._unsigned(prepared, nonce, prepared.gas_limit, prepared.fee)
        sender = self.family.address(self.config, prepared.public_key)
        return unsigned, self.decode(unsigned, sender=sender)

    # -- decoding --------------------------------------------------------------------------------

    def decode(self, unsigned_tx: bytes, *, sender: str | None = None) -> DecodedTransaction:
        return decoded_transaction(self.config, self.family, unsigned_tx, sender=sender)

    def inspect_signed(self, signed_tx: bytes) -> SignedInfo:
        """Sender, sequence and id of a ``TxRaw`` custos assembled (anything else is refused)."""
        try:
            tx = _unsigned_of_tx_raw(signed_tx, str(self.config.chain_id), 0)
        except FamilyError as e:
            raise IntentInvalid(f"not a signed transaction custos makes: {e.message}") from None
        sender = self.family.address(self.config, tx.public_key)
        return SignedInfo(
            tx_hash=hashlib.sha256(signed_tx).hexdigest().upper(), sender=sender, nonce=tx.sequence
        )

    # -- broadcast and status --------------------------------------------------------------------

    async def _tx(self, tx_hash: str) -> dict[str, Any] | None:
        answer = await self._get(f"/cosmos/tx/v1beta1/txs/{quote(tx_hash)}", missing_ok=True)
        if answer is None or "tx_response" not in answer:
            return None
        return dict(answer["tx_response"])

    async def broadcast(self, signed_tx: bytes, tx_hash: str) -> bool:
        """Sends the ``TxRaw``; True when the chain already has it (included, or in the mempool)."""
        if await self._tx(tx_hash) is not None:
            return True
        status, answer = await self.rest.post(
            "/cosmos/tx/v1beta1/txs", {"tx_bytes": _b64(signed_tx), "mode": "BROADCAST_MODE_SYNC"}
        )
        response = answer.get("tx_response")
        if not isinstance(response, dict):
            # Some nodes (Injective's) answer a CheckTx refusal as an error of the gateway whose
            # message carries the CheckTx result: read it as the tx_response it stands for.
            response = _check_tx_of(str(answer.get("message", "")))
        if response is None:
            if status >= 500 or "code" not in answer:
                raise NodeUnavailable(f"broadcast: HTTP {status}: {_node_message(answer)}")
            raise BroadcastRejected(f"{self.config.name} refused the transaction: {_node_message(answer)}")
        code, codespace = int(response.get("code", 0)), str(response.get("codespace", ""))
        if code == 0:
            if str(response.get("txhash", "")).upper() != tx_hash:
                raise BroadcastRejected(f"node reports hash {response.get('txhash')}, expected {tx_hash}")
            return False
        log_text = str(response.get("raw_log", ""))[:400]
        if codespace == "sdk":
            if code == _CODE_TX_IN_MEMPOOL_CACHE:
                return True
            if code == _CODE_MEMPOOL_FULL:
                raise NodeUnavailable(f"{self.config.name}'s mempool is full: {log_text}")
            if code == _CODE_WRONG_SEQUENCE:
                return await self._sequence_refused(tx_hash, log_text)
            if code == _CODE_UNAUTHORIZED:
                raise SignatureRejected(
                    f"{self.config.name} refused the signature (chain id, account number, sequence or"
                    f" signature not the chain's): {log_text}"
                )
            if code == _CODE_INSUFFICIENT_FEE:
                raise FeeRejected(f"{self.config.name} refused the fee as too low: {log_text}")
            if code == _CODE_INSUFFICIENT_FUNDS:
                raise InsufficientFunds(
                    f"the vault cannot pay the transaction on {self.config.name}: {log_text}"
                )
            if code == _CODE_OUT_OF_GAS:
                raise BroadcastRejected(f"{self.config.name} refused the transaction: out of gas: {log_text}")
        raise BroadcastRejected(
            f"{self.config.name} refused the transaction (code {code} {codespace}): {log_text}",
            details={"code": str(code), "codespace": codespace},
        )

    async def _sequence_refused(self, tx_hash: str, log_text: str) -> bool:
        m = _SEQUENCE_MISMATCH.search(log_text)
        if m is not None and int(m.group(2)) > int(m.group(1)):
            raise SequenceAhead(
                f"sequence {m.group(2)} is ahead of the account's {m.group(1)}: an earlier transaction of"
                " the vault is not included yet; this one waits its turn",
            )
        if await self._tx(tx_hash) is not None:  # ours, included meanwhile
            return True
        expected = f" (the account is at {m.group(1)})" if m else ""
        raise SequenceUsed(
            f"the transaction's sequence{' ' + m.group(2) if m else ''} was already used{expected}:"
            " another transaction of the account took it, so this one can never land",
        )

    async def status(self, tx_hash: str) -> TransactionStatus:
        required = self.config.confirmations
        response = await self._tx(tx_hash)
        if response is None:
            return TransactionStatus(state=TxState.NOT_FOUND, confirmations_required=required)
        height = int(response.get("height", 0))
        head = await self.head()
        confirmations = max(0, head - height + 1)
        code = int(response.get("code", 0))
        if code != 0:
            return TransactionStatus(
                state=TxState.FAILED,
                confirmations=confirmations,
                confirmations_required=required,
                block_number=height,
                failure_reason=(
                    f"code {code} {response.get('codespace', '')}: {str(response.get('raw_log', ''))[:300]}"
                ),
            )
        return TransactionStatus(
            state=TxState.CONFIRMED if confirmations >= required else TxState.PENDING,
            confirmations=confirmations,
            confirmations_required=required,
            block_number=height,
            events=tuple(_events(response.get("events") or [])),
        )

    # -- account history, for reconciliation (see services.chain.reconcile) -----------------------

    def account_address(self, algorithm: str, public_key: bytes) -> str | None:
        """A secp256k1 vault key's account on this chain (None for a key of another algorithm)."""
        if algorithm != "SECP256K1":
            return None
        try:
            return self.family.address(self.config, public_key)
        except FamilyError:
            return None

    async def confirmed_nonce(self, address: str) -> int:
        """The account's sequence in the latest block: every sequence below it is used."""
        try:
            return (await self.account(address))[1]
        except InsufficientFunds:  # no account yet: nothing used
            return 0

    async def mined_block(self, tx_hash: str) -> int | None:
        response = await self._tx(self.tx_id(tx_hash))
        return int(response.get("height", 0)) if response is not None else None

    async def transaction_at(self, address: str, nonce: int, latest: int) -> SeenTransaction | None:
        """The transaction ``address`` signed with sequence ``nonce`` (the node's tx index), if any."""
        query = quote(f"tx.acc_seq='{address}/{nonce}'")
        answer = await self._get(f"/cosmos/tx/v1beta1/txs?query={query}&pagination.limit=10")
        for response in (answer or {}).get("tx_responses") or []:
            if _signer_sequence(response, address) == nonce and int(response.get("height", 0)) <= latest:
                return SeenTransaction(
                    tx_hash=str(response.get("txhash", "")).upper(),
                    block_number=int(response.get("height", 0)),
                    to_address="",
                    value=0,
                )
        return None

    # -- waits -----------------------------------------------------------------------------------

    async def wait_status(self, step: str, tx_hash: str, vault_address: str) -> WaitStatus:
        """Where the chain is with the wait after the transaction ``tx_hash`` (an undelegation):
        its completion time, read from the transaction's own ``unbond`` event, and whether the
        funds are back: the chain's unbonding entry for it is gone (x/staking pays it out to the
        vault's spendable balance at the end of the block that completes it)."""
        if step != "unbonding":
            raise IntentInvalid(f"the Cosmos family has no wait {step!r}")
        response = await self._tx(self.tx_id(tx_hash))
        if response is None:
            raise NodeError(f"the undelegation {tx_hash} is not on {self.config.name}")
        unbond = next((e for e in _events(response.get("events") or []) if e.name == "unbond"), None)
        if unbond is None or "completion_time" not in unbond.fields:
            raise NodeError(f"the transaction {tx_hash} started no unbonding")
        # (the event's time is to the second; the chain's entry has it to the nanosecond)
        until = _rfc3339(unbond.fields["completion_time"])
        validator = unbond.fields.get("validator", "")
        height = int(response.get("height", 0))
        answer = await self._get(
            f"/cosmos/staking/v1beta1/validators/{quote(validator)}/delegations/"
            f"{quote(vault_address)}/unbonding_delegation",
            missing_ok=True,
        )
        entries = ((answer or {}).get("unbond") or {}).get("entries") or []
        pending = [e for e in entries if int(e.get("creation_height", 0)) == height]
        coin = unbond.fields.get("amount", "")
        amount = (
            self.display(int(coin.removesuffix(self.config.denom)))
            if coin.removesuffix(self.config.denom).isdigit()
            else coin
        )
        if pending:
            until = max(_rfc3339(str(e.get("completion_time"))) for e in pending)
            return WaitStatus(
                done=False,
                until=until,
                detail=f"unbonding {amount} from {validator} until {until:%Y-%m-%d %H:%M:%S} UTC",
            )
        return WaitStatus(
            done=True,
            until=until,
            detail=f"unbonding of {amount} from {validator} complete: back in the vault",
        )


_CHECK_TX_ERROR = re.compile(
    r"is invalid: code=(\d+), data=.*?, log='(.*)', codespace='([^']*)'\s*$", re.DOTALL
)


def _check_tx_of(message: str) -> dict[str, Any] | None:
    """The CheckTx result in a gateway error's message, as a ``tx_response``; None if none is there."""
    m = _CHECK_TX_ERROR.search(message)
    if m is None:
        return None
    return {"code": int(m.group(1)), "raw_log": m.group(2), "codespace": m.group(3)}


def _signer_sequence(response: dict[str, Any], address: str) -> int | None:
    """The sequence ``address`` signed a transaction with, from its ``tx.acc_seq`` event."""
    for event in response.get("events") or []:
        if event.get("type") != "tx":
            continue
        for a in event.get("attributes") or []:
            value = str(a.get("value", ""))
            if a.get("key") == "acc_seq" and value.startswith(address + "/"):
                tail = value.removeprefix(address + "/")
                return int(tail) if tail.isdigit() else None
    return None


def _events(raw: list[dict[str, Any]]) -> list[ChainEvent]:
    """The staking, distribution and governance events of a transaction, in order, for the trail."""
    out: list[ChainEvent] = []
    for index, event in enumerate(raw):
        name = str(event.get("type", ""))
        if name not in _EVENTS:
            continue
        fields = {
            str(a.get("key", "")): str(a.get("value", ""))
            for a in event.get("attributes") or []
            if a.get("key") not in (None, "msg_index")
        }
        out.append(ChainEvent(name=name, contract="", log_index=index, fields=fields))
    return out
