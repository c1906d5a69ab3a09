"""The intent and approval domain, shared by every component (workflow-safe).

What an approver signs must be computed identically by the CLI that signs, the
workflow that validates, the policy's evidence check and the signer. It lives
here, once. This module imports only the standard library so Temporal workflows
may import it.

The canonical encoding is JSON with sorted keys and no whitespace; integers
(amounts) are decimal strings, bytes are lowercase hex, and a domain tag names
the structure and its version so a signature for one kind of message can never
be replayed as another.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, NewType

Wei = NewType("Wei", int)
PolicyVersion = NewType("PolicyVersion", str)

MAX_AMOUNT = 2**256 - 1
#: How far a submission time may lie ahead of a verifier's clock (the CLI, the signer).
SUBMISSION_SKEW = timedelta(minutes=5)
#: v3: a target's chain-specific data is its family's ``params`` (v2 nested Ethereum deposit data).
INTENT_DOMAIN = "custos.intent.v3"
APPROVAL_DOMAIN = "custos.approval.v1"


class Action(StrEnum):
    STAKE = "STAKE"
    UNSTAKE = "UNSTAKE"
    RESTAKE = "RESTAKE"
    POLICY_CHANGE = "POLICY_CHANGE"
    #: Withdraw the staking rewards a validator owes the vault (Cosmos x/distribution).
    CLAIM_REWARDS = "CLAIM_REWARDS"
    #: A governance vote with the vault's staked weight (Cosmos x/gov).
    VOTE = "VOTE"


class VoteOption(StrEnum):
    """A governance vote's option (Cosmos ``cosmos.gov.v1.VoteOption``)."""

    YES = "YES"
    ABSTAIN = "ABSTAIN"
    NO = "NO"
    NO_WITH_VETO = "NO_WITH_VETO"


class Decision(StrEnum):
    APPROVE = "APPROVE"
    REJECT = "REJECT"


@dataclass(frozen=True)
class TargetParams:
    """What a chain's family needs of a target beyond its validators, as named byte strings.

    Ethereum's stake carries its deposit data here, a Solana unstake its stake account; the
    family reads, validates and checks them (``services.families``), approvers approve them as
    they are, and nothing else in custos looks inside.
    """

    fields: tuple[tuple[str, bytes], ...] = ()

    def __post_init__(self) -> None:
        names = [n for n, _ in self.fields]
        if names != sorted(set(names)):
            raise ValueError("target params must be sorted by name, each name once")
        for name, value in self.fields:
            if not isinstance(name, str) or not name or not isinstance(value, bytes):
                raise ValueError("target params map non-empty names to bytes")

    @classmethod
    def of(cls, values: Mapping[str, bytes]) -> TargetParams:
        return cls(tuple(sorted(values.items())))

    def get(self, name: str) -> bytes | None:
        return dict(self.fields).get(name)

    def names(self) -> frozenset[str]:
        return frozenset(n for n, _ in self.fields)


@dataclass(frozen=True)
class StakeTarget:
    validator: str
    params: TargetParams | None = None


@dataclass(frozen=True)
class UnstakeTarget:
    validator: str
    params: TargetParams | None = None


@dataclass(frozen=True)
class RestakeTarget:
    source_validator: str
    target_validator: str
    params: TargetParams | None = None


@dataclass(frozen=True)
class PolicyChangeTarget:
    policy_version: str


@dataclass(frozen=True)
class ClaimRewardsTarget:
    """The validator whose rewards for the vault's delegation are withdrawn to the vault."""

    validator: str


#: Proposal ids are a chain's uint64.
MAX_PROPOSAL_ID = 2**64 - 1


@dataclass(frozen=True)
class VoteTarget:
    """A vote on governance proposal ``proposal_id``, cast with the vault's staked weight."""

    proposal_id: int
    option: VoteOption

    def __post_init__(self) -> None:
        if not isinstance(self.proposal_id, int) or isinstance(self.proposal_id, bool):
            raise TypeError("proposal_id must be an int")
        if not 1 <= self.proposal_id <= MAX_PROPOSAL_ID:
            raise ValueError("proposal_id must be between 1 and 2**64-1")
        if not isinstance(self.option, VoteOption):
            raise TypeError("option must be a VoteOption")


Target = StakeTarget | UnstakeTarget | RestakeTarget | PolicyChangeTarget | ClaimRewardsTarget | VoteTarget
#: The target kinds the canonical encoding names (``"kind"``), in the digest approvers sign.
_TARGET_KINDS = (
    StakeTarget,
    UnstakeTarget,
    RestakeTarget,
    PolicyChangeTarget,
    ClaimRewardsTarget,
    VoteTarget,
)
#: Actions that move no amount: their intent's amount is 0.
AMOUNTLESS = frozenset({"CLAIM_REWARDS", "VOTE"})

_TARGET_FOR_ACTION: dict[Action, type] = {
    Action.STAKE: StakeTarget,
    Action.UNSTAKE: UnstakeTarget,
    Action.RESTAKE: RestakeTarget,
    Action.POLICY_CHANGE: PolicyChangeTarget,
    Action.CLAIM_REWARDS: ClaimRewardsTarget,
    Action.VOTE: VoteTarget,
}


@dataclass(frozen=True)
class IntentSpec:
    """Everything an approver approves, apart from the policy version.

    ``amount`` is in the chain's base units (wei, uatom, lamports).
    """

    action: Action
    chain: str
    vault_id: str
    amount: int
    target: Target

    def __post_init__(self) -> None:
        if not isinstance(self.amount, int) or isinstance(self.amount, bool):
            raise TypeError("amount must be an int of base units")
        if not 0 <= self.amount <= MAX_AMOUNT:
            raise ValueError("amount out of range")
        expected = _TARGET_FOR_ACTION[self.action]
        if not isinstance(self.target, expected):
            raise ValueError(f"{self.action} needs a {expected.__name__}")
        if self.action in AMOUNTLESS and self.amount != 0:
            raise ValueError(f"{self.action} moves no amount: its amount is 0")


@dataclass(frozen=True)
class Approval:
    """An approver's signature over (intent digest, policy version, decision, expiry)."""

    approver_id: str
    key_id: str
    decision: Decision
    intent_digest: bytes
    policy_version: str
    expires_at: datetime
    signature: bytes

    def message(self) -> bytes:
        return approval_message(self.intent_digest, self.policy_version, self.decision, self.expires_at)


def _plain(value: Any) -> Any:
    """Turns dataclasses, enums, ints, bytes and datetimes into canonical JSON values."""
    if isinstance(value, bool):
        return value
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime in a canonical encoding")
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, str) or value is None:
        return value
    if isinstance(value, TargetParams):
        return {name: field.hex() for name, field in value.fields}
    if hasattr(value, "__dataclass_fields__"):
        out = {k: _plain(getattr(value, k)) for k in value.__dataclass_fields__}
        if isinstance(value, _TARGET_KINDS):
            out["kind"] = type(value).__name__
        return out
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    raise TypeError(f"cannot encode {type(value).__name__} canonically")


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON bytes for ``value`` (see the module docstring)."""
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(frozen=True)
class IntentBinding:
    """What makes a digest name one intent and no other: its id, who asked for it, and when.

    Two intents with the same spec (two 32 ETH deposits of one vault) get different
    digests, so an approval of one can never be spent on the other; the submission time
    bounds how long approvals of it may count (``submitted_at`` + the policy's window).
    """

    intent_id: str
    initiator: str
    submitted_at: datetime


def submission_time(now: datetime) -> datetime:
    """``now`` to the millisecond: the submission time every component encodes identically
    (database columns, Temporal's JSON and protobuf Timestamps all keep milliseconds)."""
    return now.astimezone(UTC).replace(microsecond=now.microsecond // 1000 * 1000)


def canonical_intent(spec: IntentSpec, policy_version: str, binding: IntentBinding) -> bytes:
    return canonical_json(
        {
            "domain": INTENT_DOMAIN,
            "intent_id": binding.intent_id,
            "initiator": binding.initiator,
            "submitted_at": binding.submitted_at,
            "spec": spec,
            "policy_version": policy_version,
        }
    )


def intent_digest(spec: IntentSpec, policy_version: str, binding: IntentBinding) -> bytes:
    """SHA-256 of the canonical intent: what approvers sign and the signer checks.

    It covers everything the intent does (the spec), the policy version it was
    evaluated under, and which intent it is (:class:`IntentBinding`).
    """
    return hashlib.sha256(canonical_intent(spec, policy_version, binding)).digest()


def approval_message(digest: bytes, policy_version: str, decision: Decision, expires_at: datetime) -> bytes:
    """The exact bytes an approver's key signs."""
    return canonical_json(
        {
            "domain": APPROVAL_DOMAIN,
            "intent_digest": digest,
            "policy_version": policy_version,
            "decision": decision,
            "expires_at": expires_at,
        }
    )


def parse_amount(text: str) -> int:
    """Parses a decimal string of integer base units; raises ValueError otherwise."""
    if not text or not text.isascii() or not text.isdigit():
        raise ValueError(f"amount must be a decimal string of base units, got {text!r}")
    if len(text) > 1 and text[0] == "0":
        raise ValueError(f"amount has leading zeros: {text!r}")
    value = int(text)
    if value > MAX_AMOUNT:
        raise ValueError("amount exceeds 2**256-1")
    return value


def spec_to_plain(spec: IntentSpec) -> dict[str, Any]:
    """The canonical JSON-ready form of a spec (what workflows carry in their input)."""
    out = _plain(spec)
    assert isinstance(out, dict)
    return out


def _b(value: str) -> bytes:
    return bytes.fromhex(value)


def _params(target: dict[str, Any], *known: str) -> TargetParams | None:
    """A plain target's params; in intents recorded before families (``custos.intent.v2``) a
    family's data was a nested object of hex fields under its own name: read as the params."""
    raw = target.get("params")
    legacy = [v for k, v in target.items() if k not in {"kind", "params", *known} and isinstance(v, dict)]
    if raw is None and len(legacy) == 1:
        raw = legacy[0]
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError("target params must be an object of hex strings")
    return TargetParams.of({str(k): _b(str(v)) for k, v in raw.items()})


def spec_from_plain(data: dict[str, Any]) -> IntentSpec:
    """Inverse of :func:`spec_to_plain`; raises ValueError on malformed input."""
    t = dict(data["target"])
    kind = t.pop("kind")
    target: Target
    if kind == "StakeTarget":
        target = StakeTarget(validator=t["validator"], params=_params(t, "validator"))
    elif kind == "UnstakeTarget":
        target = UnstakeTarget(validator=t["validator"], params=_params(t, "validator"))
    elif kind == "RestakeTarget":
        target = RestakeTarget(
            source_validator=t["source_validator"],
            target_validator=t["target_validator"],
            params=_params(t, "source_validator", "target_validator"),
        )
    elif kind == "PolicyChangeTarget":
        target = PolicyChangeTarget(policy_version=t["policy_version"])
    elif kind == "ClaimRewardsTarget":
        target = ClaimRewardsTarget(validator=t["validator"])
    elif kind == "VoteTarget":
        target = VoteTarget(proposal_id=parse_amount(t["proposal_id"]), option=VoteOption(t["option"]))
    else:
        raise ValueError(f"unknown target kind {kind!r}")
    return IntentSpec(
        action=Action(data["action"]),
        chain=data["chain"],
        vault_id=data["vault_id"],
        amount=parse_amount(data["amount"]),
        target=target,
    )
