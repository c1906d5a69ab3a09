"""Evaluation: one table per rule kind, and the properties the issue asks for."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.policy.document import GroupSpec, Policy, RequireSpec
from services.policy.domain import Outcome
from services.policy.engine import Decision, VelocityKey, evaluate, requirement_for, velocity_keys
from services.policy.errors import PolicyDenies, PolicyDocumentInvalid
from services.runtime.intent import Action, IntentSpec, PolicyChangeTarget
from tests.policy.helpers import (
    CHAINS,
    ETH,
    VAL_A,
    VAL_B,
    VALOPER_1,
    VALOPER_2,
    WED_10_UTC,
    allow,
    delegate,
    policy,
    restake,
    stake,
    unstake,
)

ADDR = "0x" + "ab" * 20
WC_OK = b"\x01" + b"\x00" * 11 + bytes.fromhex("ab" * 20)
WC_OTHER = b"\x01" + b"\x00" * 11 + bytes.fromhex("cd" * 20)
WC_BLS = b"\x00" + b"\x11" * 31


def run(
    p: Policy,
    spec: IntentSpec,
    *,
    initiator: str = "alice",
    groups: tuple[str, ...] = (),
    at: datetime = WED_10_UTC,
    used: int = 0,
) -> Decision:
    return evaluate(p, spec, initiator, groups, at, {k: used for k in velocity_keys(p, spec)}, chains=CHAINS)


# (case, match conditions, intent, extra kwargs, matches?)
MATCH_TABLE: list[tuple[str, dict[str, Any], IntentSpec, dict[str, Any], bool]] = [
    ("action in", {"action": ["STAKE"]}, stake(), {}, True),
    ("action out", {"action": ["STAKE"]}, unstake(), {}, False),
    ("chain in", {"chain": ["ethereum-devnet"]}, stake(), {}, True),
    ("chain out", {"chain": ["cosmos"]}, stake(), {}, False),
    ("vault in", {"vault": ["v1", "v2"]}, stake(vault="v2"), {}, True),
    ("vault out", {"vault": ["v1"]}, stake(vault="v9"), {}, False),
    ("initiator group from policy", {"initiator_groups": ["desk"]}, stake(), {}, True),
    (
        "initiator group given",
        {"initiator_groups": ["ops"]},
        stake(),
        {"initiator": "bob", "groups": ("ops",)},
        True,
    ),
    ("initiator group out", {"initiator_groups": ["desk"]}, stake(), {"initiator": "mallory"}, False),
    ("amount within", {"amount": {"min": 1, "max": 32 * ETH}}, stake(32 * ETH), {}, True),
    ("amount above max", {"amount": {"max": 32 * ETH - 1}}, stake(32 * ETH), {}, False),
    ("amount below min", {"amount": {"min": 33 * ETH}}, stake(32 * ETH), {}, False),
    (
        "validator in (case-insensitive hex)",
        {"validators": [VAL_A.upper().replace("0X", "0x")]},
        stake(validator=VAL_A),
        {},
        True,
    ),
    ("validator out", {"validators": [VAL_B]}, stake(validator=VAL_A), {}, False),
    ("malformed validator never matches", {"validators": ["0xaa"]}, stake(validator="0xaa"), {}, False),
    ("restake both validators in", {"validators": [VAL_A, VAL_B]}, restake(), {}, True),
    ("restake one validator out", {"validators": [VAL_A]}, restake(), {}, False),
    (
        "withdrawal address in",
        {"withdrawal_addresses": [ADDR.upper().replace("0X", "0x")]},
        stake(withdrawal=WC_OK),
        {},
        True,
    ),
    ("withdrawal address out", {"withdrawal_addresses": [ADDR]}, stake(withdrawal=WC_OTHER), {}, False),
    (
        "BLS credentials have no address",
        {"withdrawal_addresses": [ADDR]},
        stake(withdrawal=WC_BLS),
        {},
        False,
    ),
    ("no deposit data", {"withdrawal_addresses": [ADDR]}, stake(), {}, False),
    (
        "time window in",
        {"time": {"weekdays": ["wed"], "from": "09:00", "to": "12:00", "tz": "Europe/Zurich"}},
        stake(),
        {},
        True,
    ),
    (
        "time window zone matters",
        {"time": {"from": "10:30", "to": "12:00", "tz": "Europe/Zurich"}},
        stake(),
        {},
        True,
    ),
    ("time window out (UTC)", {"time": {"from": "10:30", "to": "12:00", "tz": "UTC"}}, stake(), {}, False),
    (
        "weekday out",
        {"time": {"weekdays": ["sat", "sun"], "from": "00:00", "to": "23:59", "tz": "UTC"}},
        stake(),
        {},
        False,
    ),
    (
        "overnight window",
        {"time": {"from": "22:00", "to": "11:00", "tz": "Europe/Zurich"}},
        stake(),
        {},
        False,
    ),
    (
        "overnight window in",
        {"time": {"from": "22:00", "to": "12:00", "tz": "Europe/Zurich"}},
        stake(),
        {},
        True,
    ),
]


@pytest.mark.parametrize(
    ("case", "match", "spec", "kw", "matches"), MATCH_TABLE, ids=[m[0] for m in MATCH_TABLE]
)
def test_match_conditions(
    case: str, match: dict[str, Any], spec: IntentSpec, kw: dict[str, Any], matches: bool
) -> None:
    p = policy([allow("r", match=match)], initiators={"desk": ["alice"]})
    d = run(p, spec, **kw)
    assert (d.rule_id, d.outcome) == (("r", Outcome.ALLOW) if matches else ("default", Outcome.DENY))
    # The same condition as a limit: allowed, or denied with a reason (never the default).
    p2 = policy([allow("r", limits=match)], initiators={"desk": ["alice"]})
    d2 = run(p2, spec, **kw)
    assert d2.rule_id == "r"
    assert d2.outcome is (Outcome.ALLOW if matches else Outcome.DENY)
    assert bool(d2.reasons) is not matches


VELOCITY = {"window": "24h", "max": 100 * ETH}


@pytest.mark.parametrize(
    ("used", "amount", "per_action", "allowed"),
    [
        (0, 100 * ETH, False, True),
        (68 * ETH, 32 * ETH, False, True),
        (69 * ETH, 32 * ETH, False, False),
        (0, 101 * ETH, True, False),
    ],
)
def test_velocity_limit(used: int, amount: int, per_action: bool, allowed: bool) -> None:
    p = policy([allow("r", limits={"velocity": {**VELOCITY, "per_action": per_action}})])
    spec = stake(amount)
    keys = velocity_keys(p, spec)
    assert keys == {VelocityKey("ethereum-devnet", 86400, "STAKE" if per_action else None)}
    d = run(p, spec, used=used)
    assert d.allowed is allowed
    if allowed:
        assert d.velocity_limits[0].max_amount == 100 * ETH
    else:
        assert "velocity" in d.reasons[0]


def test_unknown_velocity_fails_closed() -> None:
    p = policy([allow("r", limits={"velocity": VELOCITY})])
    d = evaluate(p, stake(), "alice", (), WED_10_UTC, {}, chains=CHAINS)
    assert d.outcome is Outcome.DENY and "unknown" in d.reasons[0]


def test_deny_lists_every_failing_limit() -> None:
    p = policy([allow("r", limits={"chain": ["cosmos"], "amount": {"max": 1}, "validators": [VAL_B]})])
    d = run(p, stake())
    assert d.outcome is Outcome.DENY and len(d.reasons) == 3 and d.rule_id == "r"


def test_deny_rule_reason_and_rule_id() -> None:
    p = policy([{"id": "no-cosmos", "match": {"chain": ["ethereum-devnet"]}, "deny": "frozen"}, allow("r")])
    d = run(p, stake())
    assert (d.outcome, d.reasons, d.rule_id, d.policy_version) == (
        Outcome.DENY,
        ("frozen",),
        "no-cosmos",
        p.version,
    )


def test_requirement_shape_and_four_eyes() -> None:
    groups = [
        {"name": "ops", "threshold": 2, "approvers": ["alice", "o2", "o3"]},
        {"name": "risk", "threshold": 1, "approver_groups": ["risk"]},
    ]
    p = policy([allow("r", groups=groups, expiry="2h")])
    d = evaluate(p, stake(), "alice", (), WED_10_UTC, {}, chains=CHAINS, directory={"risk": ["r1", "alice"]})
    assert d.requirement is not None
    assert [(g.name, g.threshold, g.members) for g in d.requirement.groups] == [
        ("ops", 2, frozenset({"o2", "o3"})),
        ("risk", 1, frozenset({"r1"})),
    ]
    assert d.requirement.expiry_seconds == 7200 and d.requirement.rule_id == "r"
    # With alice out, ops is 2 of 2; if o3 initiates, ops has {alice, o2}: still 2.
    # An initiator who leaves a group unmeetable gets a DENY saying so.
    p2 = policy([allow("r", groups=[{"name": "ops", "threshold": 2, "approvers": ["alice", "o2"]}])])
    d2 = run(p2, stake(), initiator="alice")
    assert d2.outcome is Outcome.DENY and "initiator excluded" in d2.reasons[0]


def test_groups_needing_more_distinct_people_than_exist_deny() -> None:
    groups = [
        {"name": "a", "threshold": 1, "approvers": ["x"]},
        {"name": "b", "threshold": 1, "approvers": ["x"]},
    ]
    d = run(policy([allow("r", groups=groups)]), stake())
    assert d.outcome is Outcome.DENY and "distinct" in d.reasons[0]


def test_a_policy_change_is_never_an_intent_a_rule_allows() -> None:
    """Policy changes are governed changes of the trust root's admins: no rule can allow one."""
    p = policy([allow("anything")])
    spec = IntentSpec(Action.POLICY_CHANGE, "", "", 0, PolicyChangeTarget("f" * 64))
    admins = {"policy-admins": ["adm1", "adm2", "adm3"]}
    d = evaluate(p, spec, "adm1", (), WED_10_UTC, {}, chains=CHAINS, directory=admins)
    assert d.outcome is Outcome.DENY and d.rule_id == "governed"
    with pytest.raises(PolicyDenies):
        requirement_for(p, spec, "adm1", WED_10_UTC, chains=CHAINS)


def test_requirement_for_ignores_limits_but_not_denies() -> None:
    p = policy(
        [
            {"id": "d", "match": {"amount": {"min": 100}}, "deny": "too much"},
            allow("r", limits={"velocity": VELOCITY}),
        ]
    )
    assert requirement_for(p, stake(5), "alice", WED_10_UTC, chains=CHAINS).rule_id == "r"
    with pytest.raises(PolicyDenies):
        requirement_for(p, stake(500), "alice", WED_10_UTC, chains=CHAINS)


# --- properties -----------------------------------------------------------------------------

GROUP_NAMES = ("a", "b")
MEMBERS = {"a": ["a1", "a2", "a3"], "b": ["b1", "b2", "b3"]}


def _dominates(hi: Decision, lo: Decision) -> bool:
    assert hi.requirement is not None and lo.requirement is not None
    spec = lambda d: RequireSpec(  # noqa: E731
        tuple(GroupSpec(g.name, g.threshold, g.members) for g in d.requirement.groups), 1
    )
    return spec(hi).dominates(spec(lo))


rule_st = st.fixed_dictionaries(
    {
        "lo": st.integers(0, 200),
        "span": st.integers(0, 200),
        "open_lo": st.booleans(),
        "open_hi": st.booleans(),
        "chain": st.sampled_from([None, "c1", "c2"]),
        "deny": st.integers(0, 3).map(lambda n: n == 0),
        "th": st.tuples(st.integers(0, 3), st.integers(0, 3)).filter(lambda t: any(t)),
    }
)


@st.composite
def tiered_st(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Allowing tiers on adjacent amount ranges with random thresholds, in random order."""
    cuts = sorted(draw(st.sets(st.integers(1, 400), min_size=1, max_size=4)))
    bounds = list(zip([0, *cuts], [c - 1 for c in cuts] + [None], strict=True))
    tiers = []
    for lo, hi in bounds:
        tiers.append(
            {
                "lo": lo,
                "span": 0 if hi is None else hi - lo,
                "open_lo": lo == 0,
                "open_hi": hi is None,
                "chain": draw(st.sampled_from([None, "c1"])),
                "deny": False,
                "th": draw(st.tuples(st.integers(0, 3), st.integers(0, 3)).filter(lambda t: any(t))),
            }
        )
    return draw(st.permutations(tiers))


def _build(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, r in enumerate(rules):
        match: dict[str, Any] = {}
        amount = {}
        if not r["open_lo"]:
            amount["min"] = r["lo"]
        if not r["open_hi"]:
            amount["max"] = r["lo"] + r["span"]
        if amount:
            match["amount"] = amount
        if r["chain"]:
            match["chain"] = [r["chain"]]
        if r["deny"]:
            out.append({"id": f"r{i}", "match": match, "deny": f"deny {i}"})
        else:
            groups = [
                {"name": g, "threshold": t, "approvers": MEMBERS[g]}
                for g, t in zip(GROUP_NAMES, r["th"], strict=True)
                if t
            ]
            out.append(allow(f"r{i}", match=match, groups=groups))
    return out


def _boundaries(p: Policy) -> list[int]:
    """Amounts on and next to every rule's range edges: where requirements change."""
    points = {0, 450}
    for r in p.rules:
        if r.match.amount is not None:
            for edge in (r.match.amount.lo, min(r.match.amount.hi, 10**6)):
                points.update({max(edge - 1, 0), edge, edge + 1})
    return sorted(points)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(st.lists(rule_st, min_size=1, max_size=5), tiered_st()),
    st.data(),
    st.sampled_from(["c1", "c2"]),
)
def test_raising_the_amount_never_lowers_the_requirement(
    rules: list[dict[str, Any]], data: st.DataObject, chain: str
) -> None:
    try:
        p = policy(_build(rules))
    except PolicyDocumentInvalid:
        return  # validation refused an order where raising the amount could lower the requirement
    points = _boundaries(p)
    lo, hi = sorted((data.draw(st.sampled_from(points)), data.draw(st.sampled_from(points))))
    d_lo, d_hi = run(p, stake(lo, chain=chain)), run(p, stake(hi, chain=chain))
    if d_lo.allowed and d_hi.allowed:
        assert _dominates(d_hi, d_lo), (d_lo.rule_id, d_hi.rule_id)


@settings(max_examples=300, deadline=None)
@given(st.lists(rule_st, min_size=1, max_size=6), st.integers(0, 450), st.sampled_from(["c1", "c2"]))
def test_a_deny_rule_is_never_bypassed_by_a_later_allow(
    rules: list[dict[str, Any]], amount: int, chain: str
) -> None:
    built = _build(rules)
    try:
        p = policy(built)
    except PolicyDocumentInvalid:
        # Validation only orders allowing rules; drop allow rules until it passes.
        built = [r for r in built if "deny" in r] or built[:0]
        p = policy(built)
    d = run(p, stake(amount, chain=chain))
    for index, rule in enumerate(p.rules):
        lo_ok = rule.match.amount is None or rule.match.amount.lo <= amount <= rule.match.amount.hi
        chain_ok = rule.match.chains is None or chain in rule.match.chains
        if rule.deny is not None and lo_ok and chain_ok:
            # The deny applies unless an earlier rule already decided.
            decided_at = (
                next(i for i, r in enumerate(p.rules) if r.id == d.rule_id) if d.rule_id != "default" else 99
            )
            assert d.outcome is Outcome.DENY or decided_at < index
            break


def test_monotone_tiers_are_accepted_and_tiered() -> None:
    # The shape of the example policy: big amounts first, stricter.
    p = policy(
        [
            allow(
                "big",
                match={"amount": {"min": 101}},
                groups=[
                    {"name": "a", "threshold": 2, "approvers": MEMBERS["a"]},
                    {"name": "b", "threshold": 1, "approvers": MEMBERS["b"]},
                ],
            ),
            allow("small", groups=[{"name": "a", "threshold": 2, "approvers": MEMBERS["a"]}]),
        ]
    )
    assert run(p, stake(100)).rule_id == "small" and run(p, stake(101)).rule_id == "big"
    assert _dominates(run(p, stake(101)), run(p, stake(100)))


def test_time_window_uses_local_time_around_dst() -> None:
    p = policy([allow("r", match={"time": {"from": "09:00", "to": "17:00", "tz": "America/New_York"}})])
    winter = WED_10_UTC.replace(hour=14)  # 09:00 EST
    summer = winter.replace(month=7, day=9)  # 10:00 EDT
    assert run(p, stake(), at=winter).allowed and run(p, stake(), at=summer).allowed
    assert not run(p, stake(), at=winter - timedelta(minutes=1)).allowed


# --- chain families: facts, units, the registry ----------------------------------------------


def test_an_intent_on_a_chain_outside_the_registry_is_denied() -> None:
    p = policy([allow("r")])
    d = evaluate(p, stake(chain="ethereum-mainnet"), "alice", (), WED_10_UTC, {}, chains=CHAINS)
    assert (d.outcome, d.rule_id) == (Outcome.DENY, "unknown-chain")
    assert "not in the chain registry" in d.reasons[0]
    with pytest.raises(PolicyDenies, match="not in the chain registry"):
        requirement_for(p, stake(chain="ethereum-mainnet"), "alice", WED_10_UTC, chains=CHAINS)


def test_a_cosmos_validator_allowlist_compares_in_the_familys_spelling() -> None:
    p = policy([allow("r", match={"chain": ["cosmoshub"], "validators": [VALOPER_1.upper()]})])
    assert run(p, delegate(validator=VALOPER_1)).rule_id == "r"
    assert run(p, delegate(validator=VALOPER_2)).rule_id == "default"


def test_a_rule_in_eth_does_not_apply_to_a_cosmos_intent() -> None:
    """In ``match`` an amount in wei does not hold for uatom; in ``limits`` it denies."""
    p = policy([allow("eth", match={"amount": {"max": "64 ETH"}})])
    assert run(p, stake(32 * ETH)).rule_id == "eth"
    assert run(p, delegate(1_000_000)).rule_id == "default"
    limited = policy([allow("any", limits={"amount": {"max": "64 ETH"}})])
    d = run(limited, delegate(1_000_000))
    assert d.outcome is Outcome.DENY and d.rule_id == "any"
    assert "in wei, but chain 'cosmoshub' counts in uatom" in d.reasons[0]
    in_atom = policy([allow("atom", match={"amount": {"max": "2_000_000 uatom"}})])
    assert run(in_atom, delegate(1_000_000)).rule_id == "atom"
    assert run(in_atom, stake(1_000_000)).rule_id == "default"  # 1e6 wei is not 1e6 uatom


def test_a_velocity_limit_or_fee_cap_in_another_unit_denies() -> None:
    velocity = policy([allow("v", limits={"velocity": {"window": "1d", "max": "4096 ETH"}})])
    d = run(velocity, delegate())
    assert d.outcome is Outcome.DENY and "the velocity limit is in wei" in d.reasons[0]
    rule = allow("f")
    rule["require"]["fee_cap"] = "0.01 ETH"
    d = run(policy([rule]), delegate())
    assert d.outcome is Outcome.DENY and "the fee cap is in wei" in d.reasons[0]
    assert run(policy([rule]), stake()).allowed


def test_velocity_keys_name_the_intents_chain() -> None:
    p = policy([allow("r", limits={"velocity": {"window": "1d", "max": "2_000_000 uatom"}})])
    assert velocity_keys(p, delegate()) == {VelocityKey("cosmoshub", 86400, None)}
    # the sum the caller gives is that vault's on cosmoshub only: what it counted in wei on an
    # Ethereum chain is another key, never added in
    used = {VelocityKey("cosmoshub", 86400, None): 1_500_000, VelocityKey("ethereum-devnet", 86400, None): 0}
    d = evaluate(p, delegate(600_000), "alice", (), WED_10_UTC, used, chains=CHAINS)
    assert d.outcome is Outcome.DENY and "on 'cosmoshub'" in d.reasons[0]
    assert evaluate(p, delegate(500_000), "alice", (), WED_10_UTC, used, chains=CHAINS).allowed


def test_the_payout_address_from_deposit_data_is_still_enforced_on_ethereum() -> None:
    checksummed = "0xaBaBaBaBaBaBaBaBaBaBaBaBaBaBaBaBaBaBaBaB"  # any case: the family's spelling decides
    p = policy([allow("r", limits={"payout_addresses": [checksummed]})])
    assert run(p, stake(withdrawal=WC_OK)).allowed
    d = run(p, stake(withdrawal=WC_OTHER))
    assert d.outcome is Outcome.DENY and d.reasons[0].lower().startswith("payout address 0x" + "cd" * 20)
    assert not run(p, stake(withdrawal=WC_BLS)).allowed  # BLS credentials pay out nowhere it can check
    assert not run(p, delegate()).allowed  # a delegation names no payout address
