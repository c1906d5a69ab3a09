"""The Solana chain adapter: the I/O half of the Solana family, through a cluster's JSON-RPC (solana-py).

Stake = one transaction creating the intent's stake account (derived from the vault and the
intent's seed) and delegating it; unstake = deactivate, a cooldown epoch, withdraw everything
to the vault; restake = deactivate, a cooldown epoch, delegate to the other vote account.
:mod:`services.families.solana` builds and checks every byte; this module reads what a build
needs (a recent blockhash, the stake account's state and balance), refuses before anything is
signed what the chain would refuse (by the stake account's state, then by simulation), sends
signed bytes once, follows them and turns the node's answers into typed errors.

Solana has no account nonce: nothing is reserved (``uses_nonces`` is False). The signer's ledger
holds one signature per (key, chain, replay key of the step), the family's replay key; the one
replacement it allows is the same message under a newer blockhash, for a transaction whose
blockhash expired before it landed (:class:`BlockhashExpired`). The same code runs against the
LiteSVM devnet (``services.chain.solana.devnet``) and a real cluster's RPC URL.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import base58
from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.core import RPCException
from solana.rpc.jsonrpc import JsonRpcRequest, SolanaJsonRpcError
from solana.rpc.models import TxOpts
from solders.message import Message as WireMessage
from solders.pubkey import Pubkey as WirePubkey
from solders.rpc.errors import (
    MinContextSlotNotReachedMessage,
    NodeUnhealthyMessage,
    RpcCustomErrorFieldless,
    SendTransactionPreflightFailureMessage,
)
from solders.signature import Signature
from solders.transaction import VersionedTransaction
from solders.transaction_status import TransactionConfirmationStatus
from solders.transaction_status import TransactionStatus as WireStatus

from services.chain.decoding import decoded_transaction
from services.chain.errors import (
    BlockhashExpired,
    BroadcastRejected,
    ChainError,
    FeesAboveCap,
    InsufficientFunds,
    IntentInvalid,
    NodeError,
    NodeUnavailable,
)
from services.chain.types import DecodedTransaction, SignedInfo, TransactionStatus, TxState, WaitStatus
from services.families.base import StepKind
from services.families.config import ChainConfig
from services.families.errors import FamilyError, FeeAboveCap
from services.families.solana import keys
from services.families.solana.family import (
    LAMPORTS_PER_SIGNATURE,
    SEED,
    STAKE_ACCOUNT,
    SolanaFamily,
    build_unsigned,
    stake_account,
)
from services.families.solana.instructions import STAKE_ACCOUNT_RENT_EXEMPT
from services.families.solana.keys import STAKE_PROGRAM, b58
from services.families.solana.message import SIGNATURE_LENGTH, parse_message, parse_transaction, transaction
from services.runtime.errors import FailedPrecondition, Unavailable
from services.runtime.intent import IntentSpec, RestakeTarget, StakeTarget, UnstakeTarget

log = logging.getLogger("custos.chain")

U64_MAX = 2**64 - 1
#: StakeStateV2 tags: Initialized (authorities, no delegation) and Stake (delegated).
_TAG_INITIALIZED = 1
_TAG_DELEGATED = 2
#: Where a stake account's fields are (bincode StakeStateV2): Meta{rent reserve u64, staker,
#: withdrawer, lockup} from 4, then Delegation{voter, stake u64, activation u64, deactivation u64}.
_STAKER_OFFSET = 12
_WITHDRAWER_OFFSET = 44
_VOTER_OFFSET = 124
_DELEGATION_END = 180
#: A finalized (rooted) transaction counts as this many confirmations (its status gives none).
FINALIZED_CONFIRMATIONS = 32
_T = TypeVar("_T")


class StakeNotInactive(ChainError, Unavailable):
    """The stake account is still cooling down: it can be withdrawn or delegated again once its
    deactivation epoch has passed. Retryable: the same step builds after the epoch boundary."""


class StakeAccountExists(ChainError, FailedPrecondition):
    """A STAKE's stake account (the vault's, with the intent's seed) already exists: another seed."""


class StakeAccountMissing(ChainError, FailedPrecondition):
    """The intent's stake account does not exist (never staked, or already withdrawn)."""


class StakeDelegatedElsewhere(ChainError, FailedPrecondition):
    """The stake account is delegated to another vote account than the intent names."""


class StakeStateInvalid(ChainError, FailedPrecondition):
    """The stake account cannot take this step now (already deactivated, not deactivated yet, not
    a stake account the vault controls)."""


class TransactionRefused(NodeError):
    """The chain refuses what the transaction does (its simulation failed); the program says why."""


class SignatureRejected(BroadcastRejected):
    """The node's signature check failed: the signature is not the fee payer's over this message."""


class PreflightRefused(BroadcastRejected):
    """The node's preflight simulation refused the signed transaction (the program says why)."""


@dataclass(frozen=True)
class PreparedSolana:
    """A step's unsigned message, built on a recent blockhash and checked against the chain."""

    unsigned: bytes
    sender: str


@dataclass(frozen=True)
class StakeAccount:
    """A stake account as the Stake program stores it (what the steps depend on)."""

    address: str
    lamports: int
    tag: int
    staker: str
    withdrawer: str
    #: The vote account it is (or was, once deactivated) delegated to; "" when never delegated.
    voter: str
    activation: int
    deactivation: int

    @property
    def deactivated(self) -> bool:
        return self.tag == _TAG_DELEGATED and self.deactivation != U64_MAX

    def cooldown_text(self, epoch: int) -> str:
        """``deactivated in epoch 3, inactive from epoch 4 (now 3)``."""
        d = self.deactivation
        since = "since" if d < epoch else "from"
        return f"deactivated in epoch {d}, inactive {since} epoch {d + 1} (now {epoch})"


def read_stake_account(address: str, lamports: int, owner: bytes, data: bytes) -> StakeAccount:
    """The fields of a stake account's data; raises ``StakeStateInvalid`` for any other account."""
    tag = struct.unpack_from("<I", data, 0)[0] if len(data) >= 4 else -1
    if owner != STAKE_PROGRAM or tag not in (_TAG_INITIALIZED, _TAG_DELEGATED) or len(data) < _DELEGATION_END:
        raise StakeStateInvalid(f"{address} is not an initialized stake account")
    voter, activation, deactivation = "", U64_MAX, U64_MAX
    if tag == _TAG_DELEGATED:
        voter = b58(data[_VOTER_OFFSET : _VOTER_OFFSET + 32])
        activation, deactivation = struct.unpack_from("<QQ", data, _VOTER_OFFSET + 40)
    return StakeAccount(
        address=address,
        lamports=lamports,
        tag=tag,
        staker=b58(data[_STAKER_OFFSET : _STAKER_OFFSET + 32]),
        withdrawer=b58(data[_WITHDRAWER_OFFSET : _WITHDRAWER_OFFSET + 32]),
        voter=voter,
        activation=activation,
        deactivation=deactivation,
    )


def _seed(spec: IntentSpec) -> bytes:
    params = getattr(spec.target, "params", None)
    seed = params.get(SEED) if params is not None else None
    if seed is None:
        raise IntentInvalid("a Solana target carries its stake account's seed in params['seed']")
    return seed


def _source_vote(spec: IntentSpec) -> str:
    """The vote account the intent says its stake account is delegated to now."""
    target = spec.target
    if isinstance(target, StakeTarget | UnstakeTarget):
        return target.validator
    if isinstance(target, RestakeTarget):
        return target.source_validator
    raise IntentInvalid(f"{spec.action} is not supported on Solana")


def _err_json(value: Any) -> Any:
    """A solders result's ``err`` in the JSON form a cluster writes (``"BlockhashNotFound"``...)."""
    return json.loads(value.to_json()).get("err")


#: The custom errors of the programs custos's steps call (their error enums, by number).
_CUSTOM_ERRORS: dict[bytes, tuple[str, ...]] = {
    keys.SYSTEM_PROGRAM: ("AccountAlreadyInUse", "ResultWithNegativeLamports"),
    STAKE_PROGRAM: (
        "NoCreditsToRedeem",
        "LockupInForce",
        "AlreadyDeactivated",
        "TooSoonToRedelegate",
        "InsufficientStake",
        "MergeTransientStake",
        "MergeMismatch",
        "CustodianMissing",
        "CustodianSignatureMissing",
        "InsufficientReferenceVotes",
        "VoteAddressMismatch",
        "MinimumDelinquentEpochsForDeactivationNotMet",
        "InsufficientDelegation",
        "RedelegateTransientOrInactiveStake",
        "RedelegateToSameVoteAccount",
        "RedelegatedStakeMustFullyActivateBeforeDeactivationIsPermitted",
        "EpochRewardsActive",
    ),
}


def _err_text(err: Any, programs: tuple[bytes, ...] = ()) -> str:
    """A transaction error in a few words: ``instruction 2 (Stake program): InsufficientDelegation
    (custom error 0xc)``; ``programs`` are the message's instructions' programs, when known."""
    if not (isinstance(err, dict) and "InstructionError" in err):
        return err if isinstance(err, str) else json.dumps(err)
    index, inner = err["InstructionError"]
    program = programs[index] if isinstance(index, int) and 0 <= index < len(programs) else b""
    if isinstance(inner, dict) and "Custom" in inner:
        code = int(inner["Custom"])
        names = _CUSTOM_ERRORS.get(program, ())
        inner = f"{names[code]} (custom error {code:#x})" if code < len(names) else f"custom error {code:#x}"
    where = f" ({keys.KNOWN.get(keys.Pubkey(program), b58(program))})" if program else ""
    return f"instruction {index}{where}: {inner}"


def _reason(logs: list[str] | None, err: Any, programs: tuple[bytes, ...] = ()) -> str:
    """The failing program's own message (its ``failed:`` log line) and the error, named."""
    named = _err_text(err, programs)
    for line in reversed(logs or []):
        if " failed: " in line:
            said = line.split(" failed: ", 1)[1]
            return (named if said.startswith("custom program error") else f"{said} ({named})")[:400]
    return named[:400]


def _programs(unsigned: bytes) -> tuple[bytes, ...]:
    return tuple(i.program for i in parse_message(unsigned).resolved())


def _programs_of_signed(signed_tx: bytes) -> tuple[bytes, ...]:
    """The programs of a wire transaction's instructions (none when it cannot be read)."""
    try:
        return _programs(parse_transaction(signed_tx)[2])
    except (FamilyError, ValueError):
        return ()


def _rpc_text(error: Any) -> str:
    return str(getattr(error, "message", None) or error)[:300]


class SolanaAdapter:
    """One Solana cluster of the registry, reached through its JSON-RPC URL."""

    #: Solana has no account nonce: ChainService reserves nothing and keeps no nonce bookkeeping.
    uses_nonces = False

    def __init__(self, config: ChainConfig) -> None:
        if not config.rpc_url.startswith(("http://", "https://")):
            raise ValueError(f"chain {config.name}: a Solana chain's rpc_url is http:// or https://")
        self.config = config
        self.family = SolanaFamily()

    @asynccontextmanager
    async def _client(self) -> AsyncIterator[AsyncClient]:
        """One client per operation: nothing outlives the event loop that made it."""
        async with AsyncClient(
            self.config.rpc_url, commitment=Confirmed, timeout=self.config.rpc_timeout_seconds
        ) as client:
            yield client

    async def _rpc(self, method: str, call: Awaitable[_T]) -> _T:
        """Awaits one RPC call; no answer is ``NodeUnavailable``, an error answer ``NodeError``."""
        try:
            return await call
        except SolanaRpcException as e:
            cause = type(e.__cause__).__name__ if e.__cause__ else "no answer"
            raise NodeUnavailable(
                f"{self.config.name}'s RPC node did not answer {method} ({cause})"
            ) from None
        except (RPCException, SolanaJsonRpcError) as e:
            raise NodeError(
                f"{self.config.name}'s RPC node refused {method}: {_rpc_text(e.args[0])}"
            ) from None
        except ValueError as e:
            raise NodeUnavailable(
                f"{self.config.name}'s RPC node answered {method} unreadably: {e}"
            ) from None

    # -- spellings -------------------------------------------------------------------------------

    def normalise_address(self, address: str) -> str:
        return self.family.normalise_address(self.config, address)

    def tx_id(self, text: str) -> str:
        """A transaction id: the base58 of its 64-byte signature (canonical)."""
        try:
            raw = base58.b58decode(text)
        except (ValueError, TypeError):
            raw = b""
        if len(raw) != SIGNATURE_LENGTH or b58(raw) != text:
            raise IntentInvalid("a Solana transaction id is the base58 of its 64-byte signature")
        return text

    def plan(self, spec: IntentSpec, vault_address: str) -> None:
        """Checks the intent against the chain's family (seed, vote accounts, amounts)."""
        self.family.validate_intent(self.config, spec, vault_address)

    def _stake_address(self, spec: IntentSpec, vault_address: str) -> str:
        return b58(stake_account(keys.parse(vault_address, "vault"), _seed(spec)))

    # -- reads -----------------------------------------------------------------------------------

    async def _stake_account(self, client: AsyncClient, address: str) -> StakeAccount | None:
        answer = await self._rpc("getAccountInfo", client.get_account_info(WirePubkey.from_string(address)))
        account = answer.value
        if account is None:
            return None
        return read_stake_account(address, account.lamports, bytes(account.owner), bytes(account.data))

    async def _balance(self, client: AsyncClient, address: str) -> int:
        return (await self._rpc("getBalance", client.get_balance(WirePubkey.from_string(address)))).value

    async def _epoch(self, client: AsyncClient) -> int:
        return (await self._rpc("getEpochInfo", client.get_epoch_info())).value.epoch

    async def _vote_commission(self, client: AsyncClient, vote: str) -> int:
        """The vote account's commission; ``IntentInvalid`` when the cluster has no such validator."""
        answer = await self._rpc(
            "getVoteAccounts", client.get_vote_accounts(vote_pubkey=WirePubkey.from_string(vote))
        )
        found = [a for a in [*answer.value.current, *answer.value.delinquent] if str(a.vote_pubkey) == vote]
        if not found:
            raise IntentInvalid(f"{vote} is not a vote account of {self.config.name}")
        return int(found[0].commission)

    async def _minimum_delegation(self, client: AsyncClient) -> int:
        """getStakeMinimumDelegation (solana-py has no helper for it)."""
        request = JsonRpcRequest(method="getStakeMinimumDelegation", params=[{"commitment": "confirmed"}])
        answer = await self._rpc("getStakeMinimumDelegation", client.send_rpc_request(request, dict))
        return int(answer["value"])

    async def _signature_status(self, client: AsyncClient, tx_hash: str) -> WireStatus | None:
        answer = await self._rpc(
            "getSignatureStatuses",
            client.get_signature_statuses([Signature.from_string(tx_hash)], search_transaction_history=True),
        )
        return answer.value[0]

    async def head(self) -> int:
        """The cluster's confirmed slot (the chain service's health probe asks it)."""
        async with self._client() as client:
            return (await self._rpc("getSlot", client.get_slot())).value

    async def pending_nonce(self, address: str) -> int:
        """Solana has no account nonce; ChainService never asks (``uses_nonces`` is False)."""
        return 0

    # -- submission ------------------------------------------------------------------------------

    async def check_holds_value(self, spec: IntentSpec, vault_address: str) -> str:
        """Refuses, at submission, what the chain cannot carry out now: a stake the vault cannot
        fund, below the minimum delegation or with a seed already used; an unstake or restake of a
        stake account that does not exist, is delegated elsewhere or is already deactivated; a vote
        account the cluster does not know. Returns the stake account's line for approvers. A node
        that cannot be reached does not hold the submission back: the build checks again."""
        try:
            return await self._check_holds_value(spec, vault_address)
        except NodeUnavailable as e:
            log.warning("%s of %s not checked at submission: %s", spec.action, vault_address, e)
            return ""

    async def _check_holds_value(self, spec: IntentSpec, vault_address: str) -> str:
        self.plan(spec, vault_address)
        stake = self._stake_address(spec, vault_address)
        target = spec.target
        async with self._client() as client:
            if isinstance(target, StakeTarget):
                return await self._stake_context(client, spec, target, stake, vault_address)
            account = self._check_delegated(
                spec, stake, vault_address, await self._stake_account(client, stake)
            )
            if account.deactivated:
                raise StakeStateInvalid(
                    f"stake account {stake} is already deactivated (in epoch {account.deactivation}): only"
                    " the intent that deactivated it can finish it"
                )
            line = (
                f"stake account {stake} holds {self.config.amount_text(account.lamports)}, delegated to vote"
                f" account {account.voter} since epoch {account.activation}"
            )
            if isinstance(target, RestakeTarget):
                commission = await self._vote_commission(client, target.target_validator)
                after = f"moves to vote account {target.target_validator} (commission {commission}%)"
            else:
                after = "returns to the vault"
            return f"{line}; {after} after a cooldown epoch"

    async def _stake_context(
        self, client: AsyncClient, spec: IntentSpec, target: StakeTarget, stake: str, vault_address: str
    ) -> str:
        commission = await self._vote_commission(client, target.validator)
        if await self._stake_account(client, stake) is not None:
            raise StakeAccountExists(self._exists_message(spec, stake))
        minimum = await self._minimum_delegation(client)
        delegated = spec.amount - STAKE_ACCOUNT_RENT_EXEMPT
        if delegated < minimum:
            raise IntentInvalid(
                f"the stake delegates {self.config.amount_text(delegated)} (the amount less the stake"
                f" account's rent-exempt reserve); {self.config.name}'s minimum delegation is"
                f" {self.config.amount_text(minimum)}"
            )
        held = await self._balance(client, vault_address)
        if held < spec.amount + LAMPORTS_PER_SIGNATURE:
            raise InsufficientFunds(
                f"vault {spec.vault_id} ({vault_address}) holds {self.config.amount_text(held)} on"
                f" {self.config.name}; the stake needs {self.config.amount_text(spec.amount)} plus its fee:"
                " fund the vault, then submit",
                details={"balance": str(held), "value": str(spec.amount)},
            )
        return (
            f"new stake account {stake} (seed {_seed(spec).decode('ascii')!r}) with"
            f" {self.config.amount_text(spec.amount)}, delegated to vote account {target.validator}"
            f" (commission {commission}%)"
        )

    def _exists_message(self, spec: IntentSpec, stake: str) -> str:
        return (
            f"stake account {stake} (seed {_seed(spec).decode('ascii')!r}) already exists on"
            f" {self.config.name}: a stake needs a seed the vault has not used"
        )

    def _check_delegated(
        self, spec: IntentSpec, stake: str, vault: str, account: StakeAccount | None
    ) -> StakeAccount:
        """The stake account exists, the vault controls it, and it is (or was, until its
        deactivation) delegated to the vote account the intent names: the family cannot check this
        on a deactivation or a withdrawal, whose instructions name the stake account alone."""
        if account is None:
            raise StakeAccountMissing(
                f"stake account {stake} (seed {_seed(spec).decode('ascii')!r}) does not exist on"
                f" {self.config.name}: nothing to {spec.action.lower()}"
            )
        if (account.staker, account.withdrawer) != (vault, vault):
            raise StakeStateInvalid(f"stake account {stake}'s authorities are not the vault {vault}")
        vote = _source_vote(spec)
        if account.voter != vote:
            where = f"delegated to vote account {account.voter}" if account.voter else "not delegated"
            raise StakeDelegatedElsewhere(
                f"stake account {stake} is {where}; the intent names vote account {vote}",
                details={"stake_account": stake, "voter": account.voter, "intent_vote_account": vote},
            )
        return account

    async def prepare(
        self, spec: IntentSpec, vault_address: str, public_key: bytes = b"", step: str = ""
    ) -> PreparedSolana:
        """Step ``step`` of the intent on a recent blockhash, checked against the stake account's
        state, priced within the chain's cap, affordable and simulated. Raises what the chain would
        refuse, before anything is signed; a stake account still cooling down raises the retryable
        :class:`StakeNotInactive`."""
        self.plan(spec, vault_address)
        self._check_key(vault_address, public_key)
        signed_steps = {s.name for s in self.family.steps(spec.action) if s.kind is StepKind.SIGN}
        if step not in signed_steps:
            raise IntentInvalid(
                f"{step!r} is not a signed step of a Solana {spec.action.lower()}"
                f" ({', '.join(sorted(signed_steps))})"
            )
        stake = self._stake_address(spec, vault_address)
        async with self._client() as client:
            account = await self._stake_account(client, stake)
            self._check_step(spec, step, stake, vault_address, account, await self._epoch(client))
            withdraw = account.lamports if account is not None and step == "withdraw" else 0
            blockhash = (await self._rpc("getLatestBlockhash", client.get_latest_blockhash())).value.blockhash
            unsigned = self._build(spec, step, public_key, bytes(blockhash), withdraw)
            await self._check_fee_and_funds(client, spec, step, unsigned, vault_address)
            await self._simulate(client, spec, step, unsigned, account)
        return PreparedSolana(unsigned=unsigned, sender=vault_address)

    def _check_key(self, vault_address: str, public_key: bytes) -> None:
        if not public_key:
            raise IntentInvalid("a Solana transaction names its fee payer: the vault key is needed")
        try:
            key_address = self.family.address(self.config, public_key)
        except FamilyError as e:
            raise IntentInvalid(f"the vault key is not an Ed25519 key: {e.message}") from None
        if key_address != vault_address:
            raise IntentInvalid(f"the vault key's address is {key_address}, not {vault_address}")

    def _check_step(
        self,
        spec: IntentSpec,
        step: str,
        stake: str,
        vault_address: str,
        account: StakeAccount | None,
        epoch: int,
    ) -> None:
        """What the stake account must be for ``step``: absent (stake); delegated to the intent's
        vote account and not deactivated (deactivate); deactivated and cooled down (withdraw,
        redelegate)."""
        if step == "stake":
            if account is not None:
                raise StakeAccountExists(self._exists_message(spec, stake))
            return
        account = self._check_delegated(spec, stake, vault_address, account)
        if step == "deactivate":
            if account.deactivated:
                raise StakeStateInvalid(
                    f"stake account {stake} is already deactivated (in epoch {account.deactivation})"
                )
            return
        if not account.deactivated:
            raise StakeStateInvalid(
                f"stake account {stake} is still delegated to {account.voter}: it is deactivated first"
            )
        if account.deactivation >= epoch:
            raise StakeNotInactive(
                f"stake account {stake} is cooling down: {account.cooldown_text(epoch)}; the {step} builds"
                " once that epoch begins",
                details={"stake_account": stake, "inactive_from_epoch": str(account.deactivation + 1)},
            )

    def _build(
        self, spec: IntentSpec, step: str, public_key: bytes, blockhash: bytes, withdraw: int
    ) -> bytes:
        try:
            return build_unsigned(
                self.config,
                spec,
                step,
                public_key=public_key,
                recent_blockhash=blockhash,
                withdraw_lamports=withdraw,
            )
        except FeeAboveCap as e:  # the family's ceiling (5000 lamports a signature) above the cap
            raise FeesAboveCap(e.message, details=e.details) from None
        except FamilyError as e:
            raise IntentInvalid(e.message) from None

    async def _check_fee_and_funds(
        self, client: AsyncClient, spec: IntentSpec, step: str, unsigned: bytes, vault_address: str
    ) -> None:
        """The cluster's fee for the message (getFeeForMessage) within the cap, and the vault able
        to pay it with what the step funds (a stake's amount)."""
        # solana-py types the message as MessageV0 but sends its bytes: custos's are legacy messages.
        message: Any = WireMessage.from_bytes(unsigned)
        fee = (await self._rpc("getFeeForMessage", client.get_fee_for_message(message))).value
        if fee is None:
            raise NodeUnavailable(f"the blockhash expired on {self.config.name} while building: build again")
        if fee > self.config.max_fee_wei:
            raise FeesAboveCap(
                f"the {step} costs a fee of {self.config.amount_text(fee)}, above {self.config.name}'s cap"
                f" {self.config.amount_text(self.config.max_fee_wei)}",
                details={"fee": str(fee), "cap": str(self.config.max_fee_wei)},
            )
        cost = fee + (spec.amount if step == "stake" else 0)
        held = await self._balance(client, vault_address)
        if held < cost:
            raise InsufficientFunds(
                f"vault {vault_address} holds {self.config.amount_text(held)} on {self.config.name}; the"
                f" {step} needs {self.config.amount_text(cost)} (what it funds and its fee)",
                details={"balance": str(held), "cost": str(cost)},
            )

    async def _simulate(
        self, client: AsyncClient, spec: IntentSpec, step: str, unsigned: bytes, account: StakeAccount | None
    ) -> None:
        """Simulates the message (a zero signature stands in: sigVerify is off) and turns a refusal
        into a typed error with the program's own message."""
        trial = VersionedTransaction.from_bytes(transaction([bytes(SIGNATURE_LENGTH)], unsigned))
        answer = await self._rpc(
            "simulateTransaction", client.simulate_transaction(trial, sig_verify=False, commitment=Confirmed)
        )
        result = answer.value
        if result.err is None:
            return
        err = _err_json(result)
        if err == "BlockhashNotFound":
            raise NodeUnavailable(f"the blockhash expired on {self.config.name} while building: build again")
        if err in ("InsufficientFundsForFee", "AccountNotFound"):
            raise InsufficientFunds(f"the vault cannot pay the {step}'s fee on {self.config.name}")
        insufficient = err == {"InstructionError": [0, "InsufficientFunds"]}
        if step == "withdraw" and insufficient and account is not None and account.deactivated:
            # The devnet cools down in one epoch; a cluster may take longer when much stake leaves at
            # once (the stake history's rate limit): the Stake program still counts some stake.
            raise StakeNotInactive(
                f"stake account {account.address} is still cooling down (the Stake program counts stake"
                f" in it: {_reason(result.logs, err)}); the withdrawal builds once it is inactive"
            )
        raise TransactionRefused(
            f"{self.config.name} refuses the {spec.action.lower()} ({step}):"
            f" {_reason(result.logs, err, _programs(unsigned))}",
            details={"err": json.dumps(err)},
        )

    def assemble(self, prepared: PreparedSolana, nonce: int) -> tuple[bytes, DecodedTransaction]:
        """The prepared message (``nonce`` is unused: the step's replay key is the family's)."""
        return prepared.unsigned, self.decode(prepared.unsigned, sender=prepared.sender)

    # -- decoding --------------------------------------------------------------------------------

    def decode(self, unsigned_tx: bytes, *, sender: str | None = None) -> DecodedTransaction:
        return decoded_transaction(self.config, self.family, unsigned_tx, sender=sender)

    def inspect_signed(self, signed_tx: bytes) -> SignedInfo:
        """Id (base58 of the signature), fee payer and the step's replay key of a transaction custos
        assembled (anything else is refused)."""
        try:
            signatures, message, message_bytes = parse_transaction(signed_tx)
            decoded = self.family.decode(self.config, message_bytes)
        except (FamilyError, ValueError) as e:
            reason = e.message if isinstance(e, FamilyError) else str(e)
            raise IntentInvalid(f"not a signed transaction custos makes: {reason}") from None
        return SignedInfo(tx_hash=b58(signatures[0]), sender=b58(message.fee_payer), nonce=decoded.replay_key)

    # -- broadcast and status --------------------------------------------------------------------

    async def broadcast(self, signed_tx: bytes, tx_hash: str) -> bool:
        """Sends the transaction with preflight; True when the cluster already has it (a status, or
        ``AlreadyProcessed``). A signature that does not verify is :class:`SignatureRejected`, a
        blockhash the cluster no longer knows :class:`BlockhashExpired`."""
        async with self._client() as client:
            if await self._signature_status(client, tx_hash) is not None:
                return True
            opts = TxOpts(skip_preflight=False, preflight_commitment=Confirmed, skip_confirmation=True)
            try:
                sent = await client.send_raw_transaction(signed_tx, opts)
            except RPCException as e:
                return self._send_refused(e.args[0], _programs_of_signed(signed_tx))
            except SolanaRpcException:
                raise NodeUnavailable(
                    f"{self.config.name}'s RPC node did not answer sendTransaction"
                ) from None
        if str(sent.value) != tx_hash:
            raise BroadcastRejected(f"the node reports signature {sent.value}, expected {tx_hash}")
        return False

    def _send_refused(self, error: Any, programs: tuple[bytes, ...]) -> bool:
        """What sendTransaction's error answer means (True: the cluster already processed it)."""
        name = self.config.name
        if error == RpcCustomErrorFieldless.TransactionSignatureVerificationFailure:
            raise SignatureRejected(
                f"{name} refused the signature: it is not the fee payer's over this transaction"
            )
        if isinstance(error, NodeUnhealthyMessage | MinContextSlotNotReachedMessage):
            raise NodeUnavailable(f"{name}'s RPC node cannot take transactions now: {_rpc_text(error)}")
        if not isinstance(error, SendTransactionPreflightFailureMessage):
            raise BroadcastRejected(f"{name} refused the transaction: {_rpc_text(error)}")
        err = _err_json(error.data)
        if err == "AlreadyProcessed":
            return True
        if err == "BlockhashNotFound":
            raise BlockhashExpired(
                f"the transaction's blockhash expired before it landed on {name}: it can never land;"
                " the step is rebuilt with a new blockhash"
            )
        if err == "SignatureFailure":
            raise SignatureRejected(f"{name} refused the signature: {_err_text(err)}")
        raise PreflightRefused(
            f"{name} refused the transaction: {_reason(error.data.logs, err, programs)}",
            details={"err": json.dumps(err)},
        )

    async def status(self, tx_hash: str) -> TransactionStatus:
        """CONFIRMED once the cluster confirmed it (finalized, or confirmed with the chain's
        confirmations); FAILED once a confirmed transaction carries an error; NOT_FOUND when the
        cluster has no status for the signature."""
        required = self.config.confirmations
        async with self._client() as client:
            found = await self._signature_status(client, tx_hash)
            if found is None:
                return TransactionStatus(state=TxState.NOT_FOUND, confirmations_required=required)
            level = found.confirmation_status
            depth = found.confirmations  # blocks since its own; None once rooted
            finalized = level == TransactionConfirmationStatus.Finalized or depth is None
            confirmations = max(required, FINALIZED_CONFIRMATIONS) if depth is None else depth + 1
            settled = finalized or level == TransactionConfirmationStatus.Confirmed
            base = TransactionStatus(
                state=TxState.PENDING,
                confirmations=confirmations,
                confirmations_required=required,
                block_number=found.slot,
            )
            if not settled:
                return base
            if found.err is not None:
                reason = await self._failure_reason(client, tx_hash, _err_json(found))
                return replace(base, state=TxState.FAILED, failure_reason=reason)
        if finalized or confirmations >= required:
            return replace(base, state=TxState.CONFIRMED)
        return base

    async def _failure_reason(self, client: AsyncClient, tx_hash: str, err: Any) -> str:
        """The failed program's message from the transaction's logs (the error alone without them)."""
        answer = await self._rpc(
            "getTransaction", client.get_transaction(Signature.from_string(tx_hash), "base64", Confirmed, 0)
        )
        if answer.value is None:
            return _err_text(err)
        meta = answer.value.transaction.meta
        programs = _programs_of_signed(bytes(answer.value.transaction.transaction))
        return _reason(meta.log_messages if meta is not None else None, err, programs)

    # -- waits -----------------------------------------------------------------------------------

    async def wait_status(self, step: str, tx_hash: str, vault_address: str) -> WaitStatus:
        """Where the cooldown after the deactivation ``tx_hash`` is: its stake account is read from
        that transaction; the wait is over once the account is inactive (its deactivation epoch
        has passed). Epochs, not times: ``until`` is None."""
        if step != "cooldown":
            raise IntentInvalid(f"the Solana family has no wait {step!r}")
        async with self._client() as client:
            answer = await self._rpc(
                "getTransaction",
                client.get_transaction(Signature.from_string(self.tx_id(tx_hash)), "base64", Confirmed, 0),
            )
            if answer.value is None:
                raise NodeError(f"the deactivation {tx_hash} is not on {self.config.name}")
            meta = answer.value.transaction.meta
            if meta is not None and meta.err is not None:
                raise NodeError(f"the deactivation {tx_hash} failed on {self.config.name}: {_err_json(meta)}")
            stake = self._deactivated_stake(bytes(answer.value.transaction.transaction), vault_address)
            account = await self._stake_account(client, stake)
            epoch = await self._epoch(client)
        return _cooldown(stake, account, epoch)

    def _deactivated_stake(self, signed_tx: bytes, vault_address: str) -> str:
        """The stake account a deactivation of the vault's names."""
        try:
            _, message, message_bytes = parse_transaction(signed_tx)
            decoded = self.family.decode(self.config, message_bytes)
        except (FamilyError, ValueError):
            raise NodeError("the transaction is not a deactivation custos makes") from None
        params = getattr(decoded.target, "params", None)
        stake = params.get(STAKE_ACCOUNT) if params is not None else None
        if decoded.step != "deactivate" or stake is None or b58(message.fee_payer) != vault_address:
            raise NodeError(f"the transaction is not a deactivation of vault {vault_address}")
        return b58(stake)


def _cooldown(stake: str, account: StakeAccount | None, epoch: int) -> WaitStatus:
    if account is None:
        return WaitStatus(done=True, until=None, detail=f"stake account {stake} is closed: withdrawn")
    if not account.deactivated:
        return WaitStatus(
            done=True, until=None, detail=f"stake account {stake} is delegated again (to {account.voter})"
        )
    if account.deactivation < epoch:
        return WaitStatus(done=True, until=None, detail=f"cooled down: {account.cooldown_text(epoch)}")
    return WaitStatus(done=False, until=None, detail=f"cooling down: {account.cooldown_text(epoch)}")
