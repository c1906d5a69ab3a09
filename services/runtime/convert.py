"""Conversions between the shared protobuf messages and the domain types.

Servicers call these at the edge; bad input becomes ``InvalidArgument`` with a
reason a person can act on, never a stack trace. Numbers and times are bounded
here, before anything computes with them or hands them to the database.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from services.pb.custos.common.v1 import common_pb2 as pb
from services.runtime.errors import InvalidArgument
from services.runtime.intent import (
    Action,
    Approval,
    ClaimRewardsTarget,
    Decision,
    IntentSpec,
    PolicyChangeTarget,
    RestakeTarget,
    StakeTarget,
    Target,
    TargetParams,
    UnstakeTarget,
    VoteOption,
    VoteTarget,
    parse_amount,
)

_ACTION_FROM_PB = {
    pb.ACTION_STAKE: Action.STAKE,
    pb.ACTION_UNSTAKE: Action.UNSTAKE,
    pb.ACTION_RESTAKE: Action.RESTAKE,
    pb.ACTION_POLICY_CHANGE: Action.POLICY_CHANGE,
    pb.ACTION_CLAIM_REWARDS: Action.CLAIM_REWARDS,
    pb.ACTION_VOTE: Action.VOTE,
}
_ACTION_TO_PB = {v: k for k, v in _ACTION_FROM_PB.items()}
_DECISION_FROM_PB = {pb.DECISION_APPROVE: Decision.APPROVE, pb.DECISION_REJECT: Decision.REJECT}
_DECISION_TO_PB = {v: k for k, v in _DECISION_FROM_PB.items()}

_MAX_ID = 128

#: The largest integer SQLite's INTEGER and PostgreSQL's BIGINT hold (a uint64 field goes past it).
MAX_INT64 = 2**63 - 1
#: The largest PostgreSQL INTEGER: the bound of a value stored in one.
MAX_INT32 = 2**31 - 1
#: google.protobuf.Timestamp's range, 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z: Python's datetime's.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ts_to_datetime(ts: Timestamp, field: str) -> datetime:
    """The UTC time of ``ts`` (to the microsecond, as protobuf's ``ToDatetime``).

    Raises InvalidArgument naming ``field`` outside the Timestamp range, where no
    ``datetime`` exists.
    """
    if not (_MIN_SECONDS <= ts.seconds <= _MAX_SECONDS and 0 <= ts.nanos <= 999_999_999):
        raise InvalidArgument(
            f"{field} must be a time from 0001-01-01 to 9999-12-31 UTC "
            f"(got {ts.seconds} seconds and {ts.nanos} nanoseconds from 1970)"
        )
    return _EPOCH + timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)


def optional_datetime(message: Any, name: str, field: str) -> datetime | None:
    """:func:`ts_to_datetime` of ``message``'s Timestamp field ``name``; None when it is unset."""
    return ts_to_datetime(getattr(message, name), field) if message.HasField(name) else None


def bounded_int(value: int, field: str, *, minimum: int = 0, maximum: int = MAX_INT64) -> int:
    """``value`` if ``minimum <= value <= maximum``, else InvalidArgument naming ``field``.

    Every integer field of a request that becomes a sequence, a page size, an id or a
    database value passes here: a uint64 or int64 holds more than the database does.
    """
    if not minimum <= value <= maximum:
        raise InvalidArgument(f"{field} must be between {minimum} and {maximum} (got {value})")
    return value


def datetime_to_ts(value: datetime | None) -> Timestamp:
    ts = Timestamp()
    if value is not None:
        ts.FromDatetime(value.astimezone(UTC))
    return ts


def action_from_pb(value: int) -> Action:
    try:
        return _ACTION_FROM_PB[value]  # type: ignore[index]
    except KeyError:
        raise InvalidArgument(
            "action is required (STAKE, UNSTAKE, RESTAKE, CLAIM_REWARDS, VOTE or POLICY_CHANGE)"
        ) from None


def action_to_pb(action: Action) -> pb.Action.ValueType:
    return _ACTION_TO_PB[action]


def decision_from_pb(value: int) -> Decision:
    try:
        return _DECISION_FROM_PB[value]  # type: ignore[index]
    except KeyError:
        raise InvalidArgument("decision must be APPROVE or REJECT") from None


def decision_to_pb(decision: Decision) -> pb.Decision.ValueType:
    return _DECISION_TO_PB[decision]


def require_id(value: str, field: str) -> str:
    """Validates an identifier field: 1..128 printable ASCII characters, no spaces."""
    if not value:
        raise InvalidArgument(f"{field} is required")
    if len(value) > _MAX_ID or not value.isascii() or not value.isprintable() or " " in value:
        raise InvalidArgument(f"{field} must be 1-{_MAX_ID} printable ASCII characters without spaces")
    return value


def _target_from_pb(spec: pb.IntentSpec, action: Action) -> Target:
    kind = spec.WhichOneof("target")
    expected = {
        Action.STAKE: "stake",
        Action.UNSTAKE: "unstake",
        Action.RESTAKE: "restake",
        Action.POLICY_CHANGE: "policy_change",
        Action.CLAIM_REWARDS: "claim_rewards",
        Action.VOTE: "vote",
    }[action]
    if kind != expected:
        raise InvalidArgument(f"a {action} intent needs the '{expected}' target, got {kind or 'none'}")
    if kind == "stake":
        return StakeTarget(validator=spec.stake.validator, params=_params_from_pb(spec.stake, "stake"))
    if kind == "unstake":
        return UnstakeTarget(
            validator=require_id(spec.unstake.validator, "unstake.validator"),
            params=_params_from_pb(spec.unstake, "unstake"),
        )
    if kind == "restake":
        return RestakeTarget(
            source_validator=require_id(spec.restake.source_validator, "restake.source_validator"),
            target_validator=require_id(spec.restake.target_validator, "restake.target_validator"),
            params=_params_from_pb(spec.restake, "restake"),
        )
    if kind == "claim_rewards":
        return ClaimRewardsTarget(
            validator=require_id(spec.claim_rewards.validator, "claim_rewards.validator")
        )
    if kind == "vote":
        option = _VOTE_OPTION_FROM_PB.get(spec.vote.option)
        if option is None:
            raise InvalidArgument("vote.option must be YES, ABSTAIN, NO or NO_WITH_VETO")
        if spec.vote.proposal_id == 0:
            raise InvalidArgument("vote.proposal_id is required")
        return VoteTarget(proposal_id=spec.vote.proposal_id, option=option)
    return PolicyChangeTarget(
        policy_version=require_id(spec.policy_change.policy_version, "policy_change.policy_version")
    )


_VOTE_OPTION_FROM_PB = {
    pb.VOTE_OPTION_YES: VoteOption.YES,
    pb.VOTE_OPTION_ABSTAIN: VoteOption.ABSTAIN,
    pb.VOTE_OPTION_NO: VoteOption.NO,
    pb.VOTE_OPTION_NO_WITH_VETO: VoteOption.NO_WITH_VETO,
}
_VOTE_OPTION_TO_PB = {v: k for k, v in _VOTE_OPTION_FROM_PB.items()}


#: Bounds on a target's params: a family needs a few short fields (Ethereum's largest is 96 bytes).
MAX_PARAMS = 16
MAX_PARAM_BYTES = 1024
_PARAM_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def _params_from_pb(target: Any, field: str) -> TargetParams | None:
    if not target.HasField("params"):
        return None
    fields = dict(target.params.fields)
    if len(fields) > MAX_PARAMS:
        raise InvalidArgument(f"{field}.params has more than {MAX_PARAMS} fields")
    for name, value in fields.items():
        if not _PARAM_NAME.match(name):
            raise InvalidArgument(f"{field}.params: {name[:64]!r} is not a param name (lowercase, digits, _)")
        if len(value) > MAX_PARAM_BYTES:
            raise InvalidArgument(f"{field}.params.{name} is longer than {MAX_PARAM_BYTES} bytes")
    return TargetParams.of(fields)


def _fill_params(out: Any, params: TargetParams | None) -> None:
    if params is not None:
        out.params.SetInParent()
        for name, value in params.fields:
            out.params.fields[name] = value


def spec_from_pb(spec: pb.IntentSpec) -> IntentSpec:
    """Validates the chain-independent shape of an intent and returns its domain form."""
    action = action_from_pb(spec.action)
    try:
        amount = parse_amount(spec.amount)
    except ValueError as e:
        raise InvalidArgument(str(e)) from None
    chain = (
        spec.chain if action is Action.POLICY_CHANGE and not spec.chain else require_id(spec.chain, "chain")
    )
    vault = (
        spec.vault_id
        if action is Action.POLICY_CHANGE and not spec.vault_id
        else require_id(spec.vault_id, "vault_id")
    )
    target = _target_from_pb(spec, action)
    try:
        return IntentSpec(action=action, chain=chain, vault_id=vault, amount=amount, target=target)
    except ValueError as e:
        raise InvalidArgument(str(e)) from None


def fill_target(out: Any, t: Target) -> None:
    """Sets the ``target`` oneof of ``out`` (an IntentSpec or a DecodedTransaction) from ``t``."""
    if isinstance(t, StakeTarget):
        out.stake.validator = t.validator
        _fill_params(out.stake, t.params)
    elif isinstance(t, UnstakeTarget):
        out.unstake.validator = t.validator
        _fill_params(out.unstake, t.params)
    elif isinstance(t, RestakeTarget):
        out.restake.source_validator = t.source_validator
        out.restake.target_validator = t.target_validator
        _fill_params(out.restake, t.params)
    elif isinstance(t, ClaimRewardsTarget):
        out.claim_rewards.validator = t.validator
    elif isinstance(t, VoteTarget):
        out.vote.proposal_id = t.proposal_id
        out.vote.option = _VOTE_OPTION_TO_PB[t.option]
    else:
        out.policy_change.policy_version = t.policy_version


def spec_to_pb(spec: IntentSpec) -> pb.IntentSpec:
    out = pb.IntentSpec(
        action=action_to_pb(spec.action), chain=spec.chain, vault_id=spec.vault_id, amount=str(spec.amount)
    )
    fill_target(out, spec.target)
    return out


def approval_from_pb(a: pb.Approval) -> Approval:
    if len(a.intent_digest) != 32:
        raise InvalidArgument("approval.intent_digest must be 32 bytes")
    if not a.signature:
        raise InvalidArgument("approval.signature is required")
    if not a.HasField("expires_at"):
        raise InvalidArgument("approval.expires_at is required")
    return Approval(
        approver_id=require_id(a.approver_id, "approval.approver_id"),
        key_id=require_id(a.key_id, "approval.key_id"),
        decision=decision_from_pb(a.decision),
        intent_digest=a.intent_digest,
        policy_version=require_id(a.policy_version, "approval.policy_version"),
        expires_at=ts_to_datetime(a.expires_at, "approval.expires_at"),
        signature=a.signature,
    )


def approval_to_pb(a: Approval) -> pb.Approval:
    return pb.Approval(
        approver_id=a.approver_id,
        key_id=a.key_id,
        decision=decision_to_pb(a.decision),
        intent_digest=a.intent_digest,
        policy_version=a.policy_version,
        expires_at=datetime_to_ts(a.expires_at),
        signature=a.signature,
    )
