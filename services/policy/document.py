"""The policy document: a YAML file a policy admin reviews in a diff.

A version is immutable and addressed by the hex SHA-256 of its canonical form:
the document is parsed, validated (every error names the field), normalised
(sets sorted, amounts as integers, durations in seconds) and re-encoded with
:func:`services.runtime.intent.canonical_json`. Two documents that differ only
in comments, key order or list order of sets have the same version.

Shape (see ``deploy/policies/example.yaml``)::

    format: custos.policy/v1
    description: ...
    default: deny                      # explicit: when no rule matches, deny
    initiators:                        # initiator groups: group -> identities
      treasury: [alice, bob]
      expiry: 24h
    rules:                             # first match decides
      - id: deny-huge
        match: {action: [STAKE], amount: {min: "1024.000000000000000001 ETH"}}
        deny: above the 1024 ETH cap
      - id: stake
        match: {action: [STAKE], chain: [ethereum-devnet]}
        limits: {velocity: {window: 24h, max: "4096 ETH"}, time: {...}}
        require:
          groups: [{name: ops, threshold: 2, approvers: [a, b, c]}]
          expiry: 24h
          fee_cap: "0.01 ETH"
      - id: atom
        match: {action: [STAKE], chain: [cosmoshub]}
        limits: {amount: {max: "1_000_000_000 uatom"}, validators: [cosmosvaloper1...]}
        require: ...

Actions: ``STAKE``, ``UNSTAKE``, ``RESTAKE``, ``CLAIM_REWARDS`` (withdraw the rewards a
validator owes the vault: its validator is checked by validator allowlists) and ``VOTE`` (a
governance vote with the vault's staked weight). Claims and votes move no amount (0): an
amount or velocity limit never refuses them, though a ``min`` above 0 does. A vote names no
validator: a validator allowlist in ``limits`` does not refuse it, one in ``match`` does not
select it. A policy limits votes by their own rule (``action: [VOTE]``) with its vault,
chain, initiator group and time conditions, and by the approvers it requires: they read the
proposal and the option they sign, which no condition looks at.

Conditions (usable in ``match``, which selects the rule, and in ``limits``, each
failing limit of the matched rule being one reason of a DENY): ``action``,
``chain``, ``vault``, ``initiator_groups``, ``amount`` (min/max, inclusive),
``validators``, ``payout_addresses`` (``withdrawal_addresses``, its former name, is
still accepted), ``time``; ``velocity`` is a limit only (it depends on the amount and
on history, so it never decides which rule applies). Velocity is counted per vault and
chain: amounts of two chains are never added.

Amounts carry their unit: ``"2048 ETH"``, ``"1.5 gwei"``, ``"1_000_000 uatom"`` (a
base denomination as the chain's family names it; ETH and gwei are exact multiples of
wei). A bare integer (or digit string) is **wei**, the base unit of Ethereum chains:
what every amount meant before other families joined, so earlier documents keep their
meaning and their version (an amount in wei is hashed without a unit, as before). An
amount condition in one unit holds only for an intent counted in it: in ``match`` the
rule then does not apply to an intent of another unit; in ``limits`` (amount,
velocity) and for ``fee_cap`` the intent is denied. Rules of different units never
compete (the monotonicity check below treats them as disjoint).

Allowlist entries are kept in the canonical form as written (0x-hex in lower case),
whatever the chain registry: the version is a function of the document alone. The
family of the intent's chain compares them in its own spelling
(:mod:`services.policy.facts`). Proposed to a service that has the chain registry
(``parse_policy(text, chains)``), a rule is also checked against it: each allowlist
entry must be a validator or an address that the family of one of the rule's chains
accepts (of any chain of the registry when the rule names none), and an amount of a
rule naming chains must be in their unit. Chains the registry does not know are not
checked: an intent on them is denied.

Validation also guarantees that raising the amount never lowers the requirement:
two allowing rules that may match the same intent at different amounts must be
ordered so that the one catching larger amounts requires at least as much.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from services.policy import facts
from services.policy.errors import PolicyDocumentInvalid
from services.policy.facts import ChainRegistry, Entry
from services.runtime.intent import MAX_AMOUNT, Action, canonical_json
from services.runtime.yaml_errors import yaml_error_line

FORMAT = "custos.policy/v1"
MAX_DOCUMENT_BYTES = 2 * 1024 * 1024
MAX_EXPIRY_SECONDS = 30 * 86400
MAX_WINDOW_SECONDS = 366 * 86400
#: Rule ids the engine decides under itself ("unknown-chain": the intent's chain is not in the registry).
RESERVED_RULE_IDS = frozenset({"default", "admin", "unknown-chain"})
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: The actions a rule's ``action`` list may name: every intent's but a policy change's.
RULE_ACTIONS = tuple(a.value for a in Action if a is not Action.POLICY_CHANGE)

_RULE_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$")
_AMOUNT = re.compile(r"^[0-9]+(_[0-9]+)*$")
_AMOUNT_IN_UNIT = re.compile(r"^([0-9]+(?:_[0-9]+)*)(?:\.([0-9]+))?\s*([A-Za-z][A-Za-z0-9/:._-]{0,127})$")
_DURATION = re.compile(r"^([0-9]+)([smhd])$")
_CLOCK = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: The unit of an amount written without one: wei, the base unit of Ethereum chains, in which every
#: policy counted before other families joined (so their documents keep their meaning and version).
BARE_DENOM = "wei"
#: Units that are exact multiples of a base denomination (case-insensitive); any other unit is a
#: base denomination itself (``uatom``, ``inj``), compared as written with the chain's.
_SCALED = {"eth": (BARE_DENOM, 10**18), "gwei": (BARE_DENOM, 10**9), "wei": (BARE_DENOM, 1)}


# --- the parsed form ---------------------------------------------------------------


@dataclass(frozen=True)
class Amount:
    """An amount in base units of ``denom`` (``wei``, ``uatom``...)."""

    value: int
    denom: str = BARE_DENOM


@dataclass(frozen=True)
class AmountRange:
    """Inclusive bounds in base units of ``denom``: they hold only for an intent counted in it."""

    min: int | None = None
    max: int | None = None
    denom: str = BARE_DENOM

    @property
    def lo(self) -> int:
        return 0 if self.min is None else self.min

    @property
    def hi(self) -> int:
        return MAX_AMOUNT if self.max is None else self.max


@dataclass(frozen=True)
class Velocity:
    """Total amount per vault and chain (per action when ``per_action``) within a rolling window,
    in base units of ``denom``."""

    window_seconds: int
    max_amount: int
    per_action: bool = False
    denom: str = BARE_DENOM


@dataclass(frozen=True)
class TimeWindow:
    """Allowed local weekdays and time of day [start, end) in ``tz``; end < start wraps midnight."""

    weekdays: frozenset[int]
    start: time
    end: time
    tz: str

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    def contains(self, at: datetime) -> bool:
        local = at.astimezone(self.zone)
        if local.weekday() not in self.weekdays:
            return False
        t = local.time().replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end

    def describe(self) -> str:
        days = ",".join(WEEKDAYS[d] for d in sorted(self.weekdays))
        return f"{days} {self.start:%H:%M}-{self.end:%H:%M} {self.tz}"


@dataclass(frozen=True)
class Conditions:
    """Conditions that all hold; ``None`` means unconstrained."""

    actions: frozenset[Action] | None = None
    chains: frozenset[str] | None = None
    vaults: frozenset[str] | None = None
    initiator_groups: frozenset[str] | None = None
    amount: AmountRange | None = None
    validators: frozenset[str] | None = None
    #: Where the intent may pay out to (``payout_addresses``, formerly ``withdrawal_addresses``).
    payout_addresses: frozenset[str] | None = None
    time: TimeWindow | None = None
    velocity: Velocity | None = None

    def is_empty(self) -> bool:
        return all(getattr(self, f) is None for f in self.__dataclass_fields__)


@dataclass(frozen=True)
class GroupSpec:
    """``threshold`` of the named approvers and of the members of the named registry groups."""

    name: str
    threshold: int
    approvers: frozenset[str] = frozenset()
    approver_groups: frozenset[str] = frozenset()

    @property
    def members_key(self) -> tuple[frozenset[str], frozenset[str]]:
        return (self.approvers, self.approver_groups)


@dataclass(frozen=True)
class RequireSpec:
    groups: tuple[GroupSpec, ...]
    expiry_seconds: int
    fee_cap: int | None = None
    fee_cap_denom: str = BARE_DENOM

    def dominates(self, other: RequireSpec) -> bool:
        """True when meeting ``self`` always meets ``other`` (same members, thresholds at least)."""
        mine, theirs = _merged(self.groups), _merged(other.groups)
        return all(mine.get(k, 0) >= t for k, t in theirs.items())


def _merged(groups: tuple[GroupSpec, ...]) -> dict[tuple[frozenset[str], frozenset[str]], int]:
    # Groups with the same members behave as one group with the summed threshold,
    # since one approver counts toward one group only.
    out: dict[tuple[frozenset[str], frozenset[str]], int] = {}
    for g in groups:
        out[g.members_key] = out.get(g.members_key, 0) + g.threshold
    return out


@dataclass(frozen=True)
class Rule:
    id: str
    description: str
    match: Conditions
    limits: Conditions
    deny: str | None = None
    require: RequireSpec | None = None


@dataclass(frozen=True)
class Policy:
    """A parsed, validated policy version."""

    version: str
    document: str
    description: str
    initiators: Mapping[str, frozenset[str]]
    rules: tuple[Rule, ...]
    canonical: bytes = field(repr=False)

    def initiator_groups_of(self, initiator: str) -> frozenset[str]:
        return frozenset(g for g, members in self.initiators.items() if initiator in members)

    def rule(self, rule_id: str) -> Rule | None:
        for r in self.rules:
            if r.id == rule_id:
                return r
        return None


# --- YAML loading: no aliases, no duplicate keys ---------------------------------


class _Loader(yaml.SafeLoader):
    """Safe YAML that refuses aliases (no expansion bombs) and duplicate keys
    (a reviewer must never read one value while custos uses another)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise PolicyDocumentInvalid(
                f"line {event.start_mark.line + 1}: YAML aliases are not allowed in a policy"
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise PolicyDocumentInvalid(f"line {key_node.start_mark.line + 1}: duplicate key {key!r}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# --- field readers --------------------------------------------------------------------


def _fail(path: str, message: str) -> PolicyDocumentInvalid:
    return PolicyDocumentInvalid(f"{path}: {message}", details={"field": path})


def _mapping(
    value: Any, path: str, allowed: frozenset[str], required: frozenset[str] = frozenset()
) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(path, "must be a mapping")
    for k in value:
        if not isinstance(k, str) or k not in allowed:
            raise _fail(f"{path}.{k}", f"unknown field (allowed: {', '.join(sorted(allowed))})")
    for k in sorted(required):
        if k not in value:
            raise _fail(f"{path}.{k}", "is required")
    return value


def _str(value: Any, path: str, pattern: re.Pattern[str] | None = None, what: str = "") -> str:
    if not isinstance(value, str) or not value:
        raise _fail(path, "must be a non-empty string")
    if pattern is not None and not pattern.match(value):
        raise _fail(path, f"{value!r} is not a valid {what or 'value'}")
    return value


def _text(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise _fail(path, "must be a string")
    if len(value) > 2000:
        raise _fail(path, "is longer than 2000 characters")
    return value


def _str_set(value: Any, path: str, pattern: re.Pattern[str] = _NAME, what: str = "name") -> frozenset[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise _fail(path, "must be a non-empty list of strings")
    out = [_str(v, f"{path}[{i}]", pattern, what) for i, v in enumerate(items)]
    if len(set(out)) != len(out):
        raise _fail(path, "lists a value twice")
    return frozenset(out)


def parse_amount(value: Any, path: str) -> Amount:
    """An amount: an int or a decimal string (``_`` separators allowed) of wei, or a number with
    its unit (``"2048 ETH"``, ``"1.5 gwei"``, ``"1_000_000 uatom"``); exact, never a float."""
    if isinstance(value, bool) or isinstance(value, float):
        raise _fail(path, "must be an integer amount of base units (an int or a decimal string), not a float")
    if isinstance(value, int):
        amount = Amount(value)
    elif isinstance(value, str) and _AMOUNT.match(value):
        amount = Amount(int(value.replace("_", "")))
    elif isinstance(value, str) and len(value) <= 300 and (m := _AMOUNT_IN_UNIT.match(value.strip())):
        whole, fraction, unit = m.group(1).replace("_", ""), m.group(2) or "", m.group(3)
        denom, factor = _SCALED.get(unit.lower(), (unit, 1))
        scaled, rest = divmod(int(fraction or "0") * factor, 10 ** len(fraction))
        if rest:
            raise _fail(path, f"{value!r} is not a whole number of {denom}")
        amount = Amount(int(whole) * factor + scaled, denom)
    else:
        raise _fail(path, f'must be an amount such as "2048 ETH", "1000000 uatom" or wei, got {value!r}')
    if not 0 <= amount.value <= MAX_AMOUNT:
        raise _fail(path, "amount out of range (0 .. 2**256-1)")
    return amount


def parse_duration(value: Any, path: str, maximum: int) -> int:
    """Seconds, given as an int or as ``<n>s|m|h|d``."""
    if isinstance(value, bool) or isinstance(value, float):
        raise _fail(path, "must be a duration such as 3600, 90m, 24h or 7d")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = int(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise _fail(path, f"must be a duration such as 3600, 90m, 24h or 7d, got {value!r}")
    if not 0 < seconds <= maximum:
        raise _fail(path, f"must be between 1 second and {maximum} seconds")
    return seconds


def _clock(value: Any, path: str) -> time:
    if not isinstance(value, str) or not (m := _CLOCK.match(value)):
        raise _fail(path, "must be a time of day HH:MM (24-hour clock, quoted)")
    return time(int(m.group(1)), int(m.group(2)))


def _spelling(value: str) -> str:
    """How an allowlist entry is kept in the canonical form, whatever the registry: 0x-hex in lower
    case (as every version before families was hashed), anything else as written. The family of
    the intent's chain compares the entries in its own spelling (:mod:`services.policy.facts`)."""
    return value.lower() if value.startswith("0x") else value


_CONDITION_FIELDS = frozenset(
    {
        "action",
        "chain",
        "vault",
        "initiator_groups",
        "amount",
        "validators",
        "payout_addresses",
        "withdrawal_addresses",
        "time",
        "velocity",
    }
)
#: The key of the payout allowlist in the canonical form: the one every earlier version was hashed with.
_PAYOUT_KEY = "withdrawal_addresses"


def payout_key(raw: Mapping[str, Any], path: str) -> str | None:
    """Which key names a conditions mapping's payout allowlist (the old one is still accepted)."""
    given = [k for k in ("payout_addresses", _PAYOUT_KEY) if k in raw]
    if len(given) > 1:
        raise _fail(f"{path}.payout_addresses", "give payout_addresses or withdrawal_addresses, not both")
    return given[0] if given else None


def _conditions(value: Any, path: str, *, allow_velocity: bool) -> Conditions:
    if value is None:
        return Conditions()
    raw = _mapping(value, path, _CONDITION_FIELDS)
    if "velocity" in raw and not allow_velocity:
        raise _fail(f"{path}.velocity", "velocity is a limit: put it under 'limits', not 'match'")
    actions = None
    if "action" in raw:
        names = _str_set(raw["action"], f"{path}.action", re.compile(r"^[A-Z_]+$"), "action")
        bad = sorted(n for n in names if n not in RULE_ACTIONS)
        if bad:
            raise _fail(
                f"{path}.action",
                f"unknown action {bad[0]!r} ({', '.join(RULE_ACTIONS[:-1])} or {RULE_ACTIONS[-1]}; "
                "policy changes are governed changes of the trust root's admins)",
            )
        actions = frozenset(Action(n) for n in names)
    amount = None
    if "amount" in raw:
        a = _mapping(raw["amount"], f"{path}.amount", frozenset({"min", "max"}))
        if not a:
            raise _fail(f"{path}.amount", "needs min, max or both")
        lo = parse_amount(a["min"], f"{path}.amount.min") if "min" in a else None
        hi = parse_amount(a["max"], f"{path}.amount.max") if "max" in a else None
        if lo is not None and hi is not None and lo.denom != hi.denom:
            raise _fail(f"{path}.amount", f"min is in {lo.denom} and max in {hi.denom}: give one unit")
        if lo is not None and hi is not None and lo.value > hi.value:
            raise _fail(f"{path}.amount", "min is above max")
        amount = AmountRange(
            lo.value if lo else None, hi.value if hi else None, (lo or hi or Amount(0)).denom
        )
    window = None
    if "time" in raw:
        t = _mapping(
            raw["time"],
            f"{path}.time",
            frozenset({"weekdays", "from", "to", "tz"}),
            frozenset({"from", "to", "tz"}),
        )
        days = frozenset(range(7))
        if "weekdays" in t:
            names = _str_set(t["weekdays"], f"{path}.time.weekdays", re.compile(r"^[a-z]{3}$"), "weekday")
            bad = sorted(n for n in names if n not in WEEKDAYS)
            if bad:
                raise _fail(
                    f"{path}.time.weekdays", f"unknown weekday {bad[0]!r} (use {', '.join(WEEKDAYS)})"
                )
            days = frozenset(WEEKDAYS.index(n) for n in names)
        start, end = _clock(t["from"], f"{path}.time.from"), _clock(t["to"], f"{path}.time.to")
        if start == end:
            raise _fail(f"{path}.time", "from and to are equal (an empty window)")
        tz = _str(t["tz"], f"{path}.time.tz")
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise _fail(f"{path}.time.tz", f"unknown IANA time zone {tz!r}") from None
        window = TimeWindow(days, start, end, tz)
    velocity = None
    if "velocity" in raw:
        v = _mapping(
            raw["velocity"],
            f"{path}.velocity",
            frozenset({"window", "max", "per_action"}),
            frozenset({"window", "max"}),
        )
        per_action = v.get("per_action", False)
        if not isinstance(per_action, bool):
            raise _fail(f"{path}.velocity.per_action", "must be true or false")
        most = parse_amount(v["max"], f"{path}.velocity.max")
        velocity = Velocity(
            parse_duration(v["window"], f"{path}.velocity.window", MAX_WINDOW_SECONDS),
            most.value,
            per_action,
            most.denom,
        )
    payout = payout_key(raw, path)
    return Conditions(
        actions=actions,
        chains=_str_set(raw["chain"], f"{path}.chain") if "chain" in raw else None,
        vaults=_str_set(raw["vault"], f"{path}.vault") if "vault" in raw else None,
        initiator_groups=(
            _str_set(raw["initiator_groups"], f"{path}.initiator_groups")
            if "initiator_groups" in raw
            else None
        ),
        amount=amount,
        validators=(
            frozenset(_spelling(v) for v in _str_set(raw["validators"], f"{path}.validators"))
            if "validators" in raw
            else None
        ),
        payout_addresses=(
            frozenset(_spelling(a) for a in _str_set(raw[payout], f"{path}.{payout}", what="address"))
            if payout is not None
            else None
        ),
        time=window,
        velocity=velocity,
    )


def _require(value: Any, path: str, *, allow_fee_cap: bool = True) -> RequireSpec:
    allowed = {"groups", "expiry"} | ({"fee_cap"} if allow_fee_cap else set())
    raw = _mapping(value, path, frozenset(allowed), frozenset({"groups", "expiry"}))
    groups_raw = raw["groups"]
    if not isinstance(groups_raw, list) or not groups_raw:
        raise _fail(f"{path}.groups", "must be a non-empty list of approval groups")
    groups: list[GroupSpec] = []
    for i, g in enumerate(groups_raw):
        gp = f"{path}.groups[{i}]"
        gr = _mapping(
            g,
            gp,
            frozenset({"name", "threshold", "approvers", "approver_groups"}),
            frozenset({"name", "threshold"}),
        )
        name = _str(gr["name"], f"{gp}.name", _NAME, "group name")
        if any(x.name == name for x in groups):
            raise _fail(f"{gp}.name", f"group {name!r} appears twice")
        threshold = gr["threshold"]
        if isinstance(threshold, bool) or not isinstance(threshold, int) or not 1 <= threshold <= 100:
            raise _fail(f"{gp}.threshold", "must be an integer m between 1 and 100 (m of n)")
        approvers = _str_set(gr["approvers"], f"{gp}.approvers") if "approvers" in gr else frozenset()
        from_groups = (
            _str_set(gr["approver_groups"], f"{gp}.approver_groups")
            if "approver_groups" in gr
            else frozenset()
        )
        if not approvers and not from_groups:
            raise _fail(gp, "names no members: give 'approvers', 'approver_groups' or both")
        if not from_groups and threshold > len(approvers):
            raise _fail(f"{gp}.threshold", f"{threshold} of {len(approvers)} approvers can never be met")
        groups.append(GroupSpec(name, threshold, approvers, from_groups))
    fee_cap = parse_amount(raw["fee_cap"], f"{path}.fee_cap") if "fee_cap" in raw else None
    return RequireSpec(
        tuple(groups),
        parse_duration(raw["expiry"], f"{path}.expiry", MAX_EXPIRY_SECONDS),
        fee_cap.value if fee_cap else None,
        fee_cap.denom if fee_cap else BARE_DENOM,
    )


def named_chains(rule: Rule) -> frozenset[str] | None:
    """The chains a rule names (in ``match``, ``limits`` or both: it allows no other), or None."""
    named = [c.chains for c in (rule.match, rule.limits) if c.chains is not None]
    return frozenset.intersection(*named) if named else None


def _amounts(raw: dict[str, Any], path: str) -> list[tuple[str, Amount]]:
    """Every amount a (valid) rule gives, with its path."""
    out: list[tuple[str, Any]] = []
    for part in ("match", "limits"):
        c = raw.get(part) or {}
        for key in ("min", "max"):
            if key in c.get("amount", {}):
                out.append((f"{path}.{part}.amount.{key}", c["amount"][key]))
        if "max" in c.get("velocity", {}):
            out.append((f"{path}.{part}.velocity.max", c["velocity"]["max"]))
    if "fee_cap" in (raw.get("require") or {}):
        out.append((f"{path}.require.fee_cap", raw["require"]["fee_cap"]))
    return [(where, parse_amount(value, where)) for where, value in out]


def _check_registry(raw: dict[str, Any], rule: Rule, path: str, chains: ChainRegistry) -> None:
    """A rule against the chain registry: its allowlists in a spelling the family of one of its
    chains accepts (any chain of the registry when it names none), its amounts in their unit.
    Chains the registry does not know are not checked (their intents are denied anyway)."""
    named = named_chains(rule)
    candidates = facts.rule_chains(chains, named)
    if not candidates:
        return
    where = ", ".join(c.name for c in candidates)
    for part in ("match", "limits"):
        c = raw.get(part) or {}
        for kind, key in ((Entry.VALIDATOR, "validators"), (Entry.PAYOUT, payout_key(c, f"{path}.{part}"))):
            if key is None or key not in c:
                continue
            for i, text in enumerate([c[key]] if isinstance(c[key], str) else c[key]):
                if not any(facts.normalise(chain, kind, text) for chain in candidates):
                    raise _fail(f"{path}.{part}.{key}[{i}]", f"{text!r} is not a {kind} on {where}")
    units = {chain.name: facts.denomination_of(chain) for chain in candidates}
    for field_path, amount in _amounts(raw, path):
        other = sorted(f"{n} counts {d}" for n, d in units.items() if d != amount.denom)
        if named is not None and other:
            raise _fail(
                field_path,
                f"is in {amount.denom}, but {', '.join(other)}: give it in that unit, or one rule per unit",
            )
        if named is None and amount.denom != BARE_DENOM and amount.denom not in units.values():
            raise _fail(field_path, f"no chain of the registry counts in {amount.denom!r} ({where})")


def _rule(value: Any, path: str, chains: ChainRegistry | None = None) -> Rule:
    raw = _mapping(
        value, path, frozenset({"id", "description", "match", "limits", "deny", "require"}), frozenset({"id"})
    )
    rule_id = _str(raw["id"], f"{path}.id", _RULE_ID, "rule id (lowercase letters, digits, . _ -)")
    if rule_id in RESERVED_RULE_IDS:
        raise _fail(f"{path}.id", f"{rule_id!r} is reserved")
    path = f"rules[{rule_id}]"
    if ("deny" in raw) == ("require" in raw):
        raise _fail(path, "needs exactly one outcome: 'deny: <reason>' or 'require: {...}'")
    match = _conditions(raw.get("match"), f"{path}.match", allow_velocity=False)
    limits = _conditions(raw.get("limits"), f"{path}.limits", allow_velocity=True)
    if "deny" in raw:
        if not limits.is_empty():
            raise _fail(f"{path}.limits", "a deny rule has no limits (put its conditions under 'match')")
        rule = Rule(
            rule_id,
            _text(raw.get("description", ""), f"{path}.description"),
            match,
            limits,
            deny=_str(raw["deny"], f"{path}.deny"),
        )
    else:
        rule = Rule(
            rule_id,
            _text(raw.get("description", ""), f"{path}.description"),
            match,
            limits,
            require=_require(raw["require"], f"{path}.require"),
        )
    if chains is not None:
        _check_registry(raw, rule, path, chains)
    return rule


# --- canonical form -------------------------------------------------------------------


def _plain_conditions(c: Conditions) -> dict[str, Any]:
    """Amounts in wei carry no unit, as before units existed: versions of earlier documents stay."""
    out: dict[str, Any] = {}
    for name, key in (
        ("actions", "actions"),
        ("chains", "chains"),
        ("vaults", "vaults"),
        ("initiator_groups", "initiator_groups"),
        ("validators", "validators"),
        ("payout_addresses", _PAYOUT_KEY),
    ):
        v = getattr(c, name)
        if v is not None:
            out[key] = sorted(str(x) for x in v)
    if c.amount is not None:
        out["amount"] = {k: v for k, v in (("min", c.amount.min), ("max", c.amount.max)) if v is not None}
        if c.amount.denom != BARE_DENOM:
            out["amount"]["denom"] = c.amount.denom
    if c.time is not None:
        out["time"] = {
            "weekdays": [WEEKDAYS[d] for d in sorted(c.time.weekdays)],
            "from": f"{c.time.start:%H:%M}",
            "to": f"{c.time.end:%H:%M}",
            "tz": c.time.tz,
        }
    if c.velocity is not None:
        out["velocity"] = {
            "window_seconds": c.velocity.window_seconds,
            "max": c.velocity.max_amount,
            "per_action": c.velocity.per_action,
        }
        if c.velocity.denom != BARE_DENOM:
            out["velocity"]["denom"] = c.velocity.denom
    return out


def _plain_require(r: RequireSpec) -> dict[str, Any]:
    out: dict[str, Any] = {
        "groups": [
            {
                "name": g.name,
                "threshold": g.threshold,
                "approvers": sorted(g.approvers),
                "approver_groups": sorted(g.approver_groups),
            }
            for g in r.groups
        ],
        "expiry_seconds": r.expiry_seconds,
    }
    if r.fee_cap is not None:
        out["fee_cap"] = r.fee_cap
        if r.fee_cap_denom != BARE_DENOM:
            out["fee_cap_denom"] = r.fee_cap_denom
    return out


def canonical_form(
    description: str, initiators: Mapping[str, frozenset[str]], rules: tuple[Rule, ...]
) -> bytes:
    return canonical_json(
        {
            "format": FORMAT,
            "description": description,
            "default": "deny",
            "initiators": {g: sorted(m) for g, m in sorted(initiators.items())},
            "rules": [
                {
                    "id": r.id,
                    "description": r.description,
                    "match": _plain_conditions(r.match),
                    "limits": _plain_conditions(r.limits),
                    **({"deny": r.deny} if r.deny is not None else {}),
                    **({"require": _plain_require(r.require)} if r.require is not None else {}),
                }
                for r in rules
            ],
        }
    )


# --- monotonicity -----------------------------------------------------------------------


def _may_overlap(a: Conditions, b: Conditions) -> bool:
    """False only when no intent can match both (some selector sets are disjoint, or their amounts
    are in different units). Allowlists compare ignoring case: a family may spell an entry either way."""
    for name in ("actions", "chains", "vaults"):
        x, y = getattr(a, name), getattr(b, name)
        if x is not None and y is not None and not (x & y):
            return False
    for name in ("validators", "payout_addresses"):
        x, y = getattr(a, name), getattr(b, name)
        if x is not None and y is not None and not ({v.lower() for v in x} & {v.lower() for v in y}):
            return False
    return a.amount is None or b.amount is None or a.amount.denom == b.amount.denom


def _check_monotone(rules: tuple[Rule, ...]) -> None:
    full = AmountRange()
    allowing = [r for r in rules if r.require is not None]
    for i, first in enumerate(allowing):
        for later in allowing[i + 1 :]:
            if not _may_overlap(first.match, later.match):
                continue
            a, b = first.match.amount or full, later.match.amount or full
            assert first.require is not None and later.require is not None
            if b.lo < a.lo and not first.require.dominates(later.require):
                raise _fail(
                    f"rules[{later.id}]",
                    f"catches amounts below those of the earlier rule {first.id!r} but requires more "
                    "approvals: raising the amount would lower the requirement (reorder the rules or "
                    "narrow the amount ranges)",
                )
            if b.hi > a.hi and not later.require.dominates(first.require):
                raise _fail(
                    f"rules[{later.id}]",
                    f"catches amounts above those of the earlier rule {first.id!r} but requires fewer "
                    "approvals: raising the amount would lower the requirement",
                )


# --- entry point ----------------------------------------------------------------------------


def parse_policy(text: str, chains: ChainRegistry | None = None) -> Policy:
    """Parses and validates a YAML policy document; raises :class:`PolicyDocumentInvalid`.

    With ``chains`` (the registry of the service a document is proposed to) its rules are also
    checked against the families of their chains; the version never depends on the registry.
    """
    if not isinstance(text, str) or not text.strip():
        raise PolicyDocumentInvalid("document: is empty")
    if len(text.encode()) > MAX_DOCUMENT_BYTES:
        raise PolicyDocumentInvalid(f"document: larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        raw = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as e:
        raise PolicyDocumentInvalid(f"document: not valid YAML: {yaml_error_line(e)}") from None
    if isinstance(raw, dict) and "admin" in raw:
        raise _fail(
            "admin",
            "policy changes are approved by the admins of the trust root (governed changes), "
            "not by the policy: remove this section",
        )
    doc = _mapping(
        raw,
        "document",
        frozenset({"format", "description", "default", "initiators", "rules"}),
        frozenset({"format", "default", "rules"}),
    )
    if doc["format"] != FORMAT:
        raise _fail("format", f"must be {FORMAT!r}")
    if doc["default"] != "deny":
        raise _fail("default", "must be 'deny': when no rule matches, the intent is denied")
    description = _text(doc.get("description", ""), "description")
    initiators: dict[str, frozenset[str]] = {}
    if "initiators" in doc:
        raw_init = doc["initiators"]
        if not isinstance(raw_init, dict):
            raise _fail("initiators", "must be a mapping of group -> list of initiator identities")
        for g, members in raw_init.items():
            name = _str(g, f"initiators.{g}", _NAME, "group name")
            initiators[name] = _str_set(members, f"initiators.{name}")
    if not isinstance(doc["rules"], list):
        raise _fail("rules", "must be a list (it may be empty: then everything is denied)")
    rules: list[Rule] = []
    for i, r in enumerate(doc["rules"]):
        rule = _rule(r, f"rules[{i}]", chains)
        if any(x.id == rule.id for x in rules):
            raise _fail(f"rules[{i}].id", f"rule id {rule.id!r} appears twice")
        rules.append(rule)
    _check_monotone(tuple(rules))
    canonical = canonical_form(description, initiators, tuple(rules))
    return Policy(
        version=hashlib.sha256(canonical).hexdigest(),
        document=text,
        description=description,
        initiators=initiators,
        rules=tuple(rules),
        canonical=canonical,
    )
