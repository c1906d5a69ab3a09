"""Pure policy evaluation: (policy, intent, initiator, time, velocity used, chains) -> decision.

No I/O: everything the decision depends on is an argument, so the same inputs
give the same decision in the service, in a simulation and in a test. The first
rule whose ``match`` holds decides; when it allows, every failing ``limit`` is one
reason of a DENY. Policy changes are not intents: the trust root's admins govern
them (``services.policy.governance``), so a ``POLICY_CHANGE`` is always denied here.

What a rule sees of the intent's chain (its validators, payout addresses and the unit
of its amount) comes from the chain's family, through the chain registry the caller
passes (:mod:`services.policy.facts`). An intent on a chain the registry does not know
is denied (rule ``unknown-chain``): its facts are unknown. The policy service, the
signer and ``custos policy simulate`` (through the service) all decide it so.

Actions that move no amount (``CLAIM_REWARDS``, ``VOTE``: their amount is 0) meet amount and
velocity *limits* as 0 does in any unit: 0 passes any max (a min above 0 still refuses), and
they are counted against no velocity limit. A claim names its validator, so validator
allowlists apply to it. A vote names none: a validator allowlist under ``limits`` does not
refuse it, and one under ``match`` does not select it (it is no intent "to" a listed
validator). A policy limits votes by ``action: [VOTE]`` with the ``vault``, ``chain``,
``initiator_groups`` and ``time`` conditions and, above all, by the approvers its ``require``
names: no rule looks at the proposal or the option, which the approvers read and sign.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from services.policy.document import Conditions, Policy, RequireSpec, Rule
from services.policy.domain import ApprovalGroup, Outcome, Requirement, VelocityLimit
from services.policy.errors import PolicyDenies, UnknownChain
from services.policy.evidence import assign_groups
from services.policy.facts import ChainRegistry, Entry, IntentFacts, intent_facts
from services.runtime.intent import AMOUNTLESS, Action, IntentSpec

DEFAULT_RULE = "default"
GOVERNED_RULE = "governed"
GOVERNED_REASON = "policy changes are governed changes of the trust root's admins, not intents"
UNKNOWN_CHAIN_RULE = "unknown-chain"
#: Actions whose target names no validator: a validator allowlist is no limit on them.
NAMES_NO_VALIDATOR = frozenset({Action.VOTE})


class VelocityKey(NamedTuple):
    """One velocity sum the caller provides: what the intent's vault has counted on ``chain``
    within ``window_seconds`` (of ``action`` only, when set). Chains are never added together."""

    chain: str
    window_seconds: int
    action: str | None


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    policy_version: str
    rule_id: str
    reasons: tuple[str, ...] = ()
    requirement: Requirement | None = None
    # The velocity limits the intent was checked against: what the staking side
    # reserves (race-free) when the intent is approved.
    velocity_limits: tuple[VelocityLimit, ...] = field(default=())

    @property
    def allowed(self) -> bool:
        return self.outcome is Outcome.ALLOW


def velocity_key(chain: str, limit_window: int, per_action: bool, action: Action) -> VelocityKey:
    return VelocityKey(chain, limit_window, str(action) if per_action else None)


def velocity_keys(policy: Policy, spec: IntentSpec) -> frozenset[VelocityKey]:
    """The velocity sums the caller must provide to evaluate ``spec`` under ``policy``: each of
    the intent's vault on the intent's chain (none for an action that moves no amount)."""
    if spec.action in AMOUNTLESS:
        return frozenset()
    return frozenset(
        velocity_key(spec.chain, r.limits.velocity.window_seconds, r.limits.velocity.per_action, spec.action)
        for r in policy.rules
        if r.limits.velocity is not None
    )


class _Intent:
    """The facts about one intent that conditions look at, computed once."""

    __slots__ = ("at", "facts", "groups", "initiator", "spec", "velocity_used")

    def __init__(
        self,
        spec: IntentSpec,
        initiator: str,
        groups: frozenset[str],
        at: datetime,
        velocity_used: Mapping[VelocityKey, int],
        facts: IntentFacts,
    ) -> None:
        self.spec = spec
        self.initiator = initiator
        self.groups = groups
        self.at = at
        self.velocity_used = velocity_used
        self.facts = facts

    @property
    def amountless(self) -> bool:
        """Whether the action moves no amount (its amount is 0 in every unit)."""
        return self.spec.action in AMOUNTLESS

    def other_unit(self, denom: str, what: str) -> str | None:
        """Why an amount bound in ``denom`` cannot apply to this intent, or None when it can."""
        if denom == self.facts.denomination:
            return None
        return f"{what} is in {denom}, but chain {self.spec.chain!r} counts in {self.facts.denomination}"


def failures(c: Conditions, x: _Intent, *, first_only: bool, as_limits: bool = False) -> list[str]:
    """Reasons why ``c`` does not hold for ``x`` (empty when it holds).

    ``as_limits``: ``c`` are a matched rule's limits, not its selector. Limits bound what an
    intent does, so those that bound nothing of it pass: an amount bound or a velocity limit
    for an action that moves no amount, a validator allowlist for one that names no validator.
    As a selector the same conditions do not select such an intent by a unit it is not
    counted in, or by a validator it does not name.
    """
    out: list[str] = []
    s = x.spec
    if c.actions is not None and s.action not in c.actions:
        out.append(f"action {s.action} is not one of {', '.join(sorted(c.actions))}")
        if first_only:
            return out
    if c.chains is not None and s.chain not in c.chains:
        out.append(f"chain {s.chain!r} is not allowed")
        if first_only:
            return out
    if c.vaults is not None and s.vault_id not in c.vaults:
        out.append(f"vault {s.vault_id!r} is not allowed")
        if first_only:
            return out
    if c.amount is not None:
        # an amountless action's 0 is 0 in every unit: as a limit, the bound's unit does not matter
        why = None if as_limits and x.amountless else x.other_unit(c.amount.denom, "the amount bound")
        if why is not None:
            out.append(why)
        elif c.amount.min is not None and s.amount < c.amount.min:
            out.append(f"amount {s.amount} is below the minimum of {c.amount.min}")
        elif c.amount.max is not None and s.amount > c.amount.max:
            out.append(f"amount {s.amount} is above the cap of {c.amount.max}")
        if out and first_only:
            return out
    if c.initiator_groups is not None and not (x.groups & c.initiator_groups):
        out.append(
            f"initiator {x.initiator!r} is in none of the groups {', '.join(sorted(c.initiator_groups))}"
        )
        if first_only:
            return out
    if c.validators is not None and not (as_limits and s.action in NAMES_NO_VALIDATOR):
        if not x.facts.validators:
            out.append("the intent names no validator to check against the allowlist")
        for v in sorted(x.facts.validators - x.facts.allowed(Entry.VALIDATOR, c.validators)):
            out.append(f"validator {v} is not on the allowlist")
        if out and first_only:
            return out
    if c.payout_addresses is not None:
        if not x.facts.payout_addresses:
            out.append("the intent names no payout address to check against the allowlist")
        for a in sorted(x.facts.payout_addresses - x.facts.allowed(Entry.PAYOUT, c.payout_addresses)):
            out.append(f"payout address {a} is not on the allowlist")
        if out and first_only:
            return out
    if c.time is not None and not c.time.contains(x.at):
        local = x.at.astimezone(c.time.zone)
        out.append(f"outside the allowed time window ({c.time.describe()}): it is {local:%a %H:%M} there")
        if first_only:
            return out
    if c.velocity is not None and not x.amountless:
        vel = c.velocity
        key = velocity_key(s.chain, vel.window_seconds, vel.per_action, s.action)
        used = x.velocity_used.get(key)
        scope = f"{s.action} from vault {s.vault_id!r}" if vel.per_action else f"vault {s.vault_id!r}"
        scope += f" on {s.chain!r}"
        if (why := x.other_unit(vel.denom, "the velocity limit")) is not None:
            out.append(why)
        elif used is None:
            out.append(f"velocity of {scope} over {vel.window_seconds}s is unknown: refusing")
        elif used + s.amount > vel.max_amount:
            out.append(
                f"velocity: {scope} would reach {used + s.amount} within {vel.window_seconds}s, "
                f"above the limit of {vel.max_amount} ({used} already counted)"
            )
    return out


def resolve(
    spec: RequireSpec,
    *,
    policy_version: str,
    rule_id: str,
    initiator: str,
    directory: Mapping[str, Collection[str]],
) -> Requirement:
    """Turns a rule's groups into approver ids, the initiator removed (four-eyes)."""
    groups = []
    for g in spec.groups:
        members = set(g.approvers)
        for name in g.approver_groups:
            members.update(directory.get(name, ()))
        members.discard(initiator)
        groups.append(ApprovalGroup(g.name, g.threshold, frozenset(members)))
    return Requirement(tuple(groups), spec.expiry_seconds, policy_version, rule_id, spec.fee_cap)


def unmeetable(requirement: Requirement) -> list[str]:
    """Reasons why no set of eligible approvers can ever meet ``requirement``."""
    out = [
        f"group {g.name!r} needs {g.threshold} approvals but has only {len(g.members)} eligible "
        "approvers (the initiator excluded)"
        for g in requirement.groups
        if g.threshold > len(g.members)
    ]
    if not out:
        everyone = sorted(set().union(*(g.members for g in requirement.groups)))
        filled = assign_groups(requirement, everyone)
        short = [g.name for g in requirement.groups if len(filled[g.name]) < g.threshold]
        if short:
            out.append(f"groups {', '.join(short)} cannot all be met by distinct approvers")
    return out


def _allow(
    policy: Policy,
    rule_id: str,
    spec: RequireSpec,
    initiator: str,
    directory: Mapping[str, Collection[str]],
    limits: tuple[VelocityLimit, ...],
) -> Decision:
    requirement = resolve(
        spec, policy_version=policy.version, rule_id=rule_id, initiator=initiator, directory=directory
    )
    problems = unmeetable(requirement)
    if problems:
        return Decision(Outcome.DENY, policy.version, rule_id, tuple(problems))
    return Decision(Outcome.ALLOW, policy.version, rule_id, (), requirement, limits)


def first_match(policy: Policy, x: _Intent) -> Rule | None:
    for rule in policy.rules:
        if unnamed_governance(rule, x):
            continue
        if not failures(rule.match, x, first_only=True):
            return rule
    return None


def unnamed_governance(rule: Rule, x: _Intent) -> bool:
    """A rule that lets an intent through (it requires approvals) selects a CLAIM_REWARDS or a VOTE
    only when its ``action`` list names it. Rules written before these actions existed, without an
    ``action`` list, meant stakes, unstakes and restakes: they must not hand the vault's vote to
    whoever approves a small delegation. A ``deny`` rule still selects them: it only refuses more."""
    return rule.deny is None and rule.match.actions is None and x.amountless


def evaluate(
    policy: Policy,
    spec: IntentSpec,
    initiator: str,
    initiator_groups: Collection[str],
    at: datetime,
    velocity_used: Mapping[VelocityKey, int],
    *,
    chains: ChainRegistry,
    directory: Mapping[str, Collection[str]] | None = None,
) -> Decision:
    """Decides ``spec`` under ``policy``.

    Args:
        initiator_groups: Groups of the initiator, added to those the policy's
            ``initiators`` section gives them.
        at: Evaluation time (timezone-aware), for time windows.
        velocity_used: Amount already counted for the vault on the intent's chain per
            :func:`velocity_keys`; a missing key denies (fail closed).
        chains: The chain registry: the intent's chain gives the facts rules see; an intent
            on a chain it lacks is denied.
        directory: Registry group -> approver ids, to resolve ``approver_groups``.
    """
    if at.tzinfo is None:
        raise ValueError("evaluation time must be timezone-aware")
    directory = directory or {}
    if spec.action is Action.POLICY_CHANGE:
        return Decision(Outcome.DENY, policy.version, GOVERNED_RULE, (GOVERNED_REASON,))
    try:
        facts = intent_facts(chains, spec)
    except UnknownChain as e:
        return Decision(Outcome.DENY, policy.version, UNKNOWN_CHAIN_RULE, (e.message,))
    groups = frozenset(initiator_groups) | policy.initiator_groups_of(initiator)
    x = _Intent(spec, initiator, groups, at, velocity_used, facts)
    rule = first_match(policy, x)
    if rule is None:
        return Decision(Outcome.DENY, policy.version, DEFAULT_RULE, ("no rule matches: the default is deny",))
    if rule.deny is not None:
        return Decision(Outcome.DENY, policy.version, rule.id, (rule.deny,))
    assert rule.require is not None
    reasons = failures(rule.limits, x, first_only=False, as_limits=True)
    if rule.require.fee_cap is not None:
        # the signer bounds the transaction's fee by it: a cap in another unit bounds nothing
        if (why := x.other_unit(rule.require.fee_cap_denom, "the fee cap")) is not None:
            reasons.append(why)
    if reasons:
        return Decision(Outcome.DENY, policy.version, rule.id, tuple(reasons))
    return _allow(policy, rule.id, rule.require, initiator, directory, _velocity_limits(rule, spec))


def _velocity_limits(rule: Rule, spec: IntentSpec) -> tuple[VelocityLimit, ...]:
    """What an approved ``spec`` is counted against: nothing for an action that moves no amount
    (a velocity limit bounds amounts; counting a 0 would only refuse a vote of a vault that a
    lowered limit left above it)."""
    v = rule.limits.velocity
    if v is None or spec.action in AMOUNTLESS:
        return ()
    return (VelocityLimit(v.window_seconds, v.max_amount, str(spec.action) if v.per_action else None),)


def requirement_for(
    policy: Policy,
    spec: IntentSpec,
    initiator: str,
    at: datetime,
    *,
    chains: ChainRegistry,
    initiator_groups: Collection[str] = (),
    directory: Mapping[str, Collection[str]] | None = None,
) -> Requirement:
    """The requirement ``policy`` sets for ``spec``, for checking approvals later on.

    Matches rules as :func:`evaluate` does at time ``at`` (that of the evaluation)
    but does not re-check limits. Raises :class:`PolicyDenies` when the policy
    denies the intent outright.
    """
    directory = directory or {}
    rule, _ = _allowing_rule(policy, spec, initiator, at, initiator_groups, chains)
    assert rule.require is not None
    return resolve(
        rule.require, policy_version=policy.version, rule_id=rule.id, initiator=initiator, directory=directory
    )


def _allowing_rule(
    policy: Policy,
    spec: IntentSpec,
    initiator: str,
    at: datetime,
    initiator_groups: Collection[str],
    chains: ChainRegistry,
) -> tuple[Rule, _Intent]:
    """The rule matching ``spec`` at ``at`` without re-checking limits; PolicyDenies unless it allows."""
    if spec.action is Action.POLICY_CHANGE:
        raise PolicyDenies(
            GOVERNED_REASON, details={"policy_version": policy.version, "rule_id": GOVERNED_RULE}
        )
    try:
        facts = intent_facts(chains, spec)
    except UnknownChain as e:
        raise PolicyDenies(
            e.message, details={"policy_version": policy.version, "rule_id": UNKNOWN_CHAIN_RULE}
        ) from None
    groups = frozenset(initiator_groups) | policy.initiator_groups_of(initiator)
    x = _Intent(spec, initiator, groups, at, {}, facts)
    rule = first_match(policy, x)
    if rule is None or rule.require is None:
        raise PolicyDenies(
            f"policy {policy.version} denies this intent ({rule.id if rule else DEFAULT_RULE})",
            details={"policy_version": policy.version, "rule_id": rule.id if rule else DEFAULT_RULE},
        )
    return rule, x


def velocity_limits_for(
    policy: Policy,
    spec: IntentSpec,
    initiator: str,
    at: datetime,
    *,
    chains: ChainRegistry,
    initiator_groups: Collection[str] = (),
) -> tuple[VelocityLimit, ...]:
    """The velocity limits of the rule ``policy`` matched for ``spec`` at ``at`` (that of the
    evaluation): what an approved intent is counted against, on its vault and chain. Raises
    :class:`PolicyDenies` when the policy denies the intent outright, or its limit is in
    another unit than the intent's chain counts in."""
    if spec.action is Action.POLICY_CHANGE:
        return ()
    rule, x = _allowing_rule(policy, spec, initiator, at, initiator_groups, chains)
    v = rule.limits.velocity
    if v is None or x.amountless:
        return ()
    if (why := x.other_unit(v.denom, "the velocity limit")) is not None:
        raise PolicyDenies(why, details={"policy_version": policy.version, "rule_id": rule.id})
    return _velocity_limits(rule, spec)
