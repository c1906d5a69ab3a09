"""The policy document: every bad field is named, and the version is the canonical hash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from services.families.cosmos.addresses import encode
from services.policy.document import parse_policy
from services.policy.errors import PolicyDocumentInvalid
from tests.policy.helpers import CHAINS, OPS, VALOPER_1, allow, doc

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "policies" / "example.yaml"
#: The example's version since it names the people ``custos dev up --seed`` creates (writing amounts
#: with their unit, "64 ETH", did not change it before).
EXAMPLE_VERSION = "9d31d8884bc32aee3399d52642e6ea290f73b4a751242ad835c1b21cb19d600f"


def test_example_policy_parses() -> None:
    p = parse_policy(EXAMPLE.read_text(), CHAINS)
    assert [r.id for r in p.rules] == ["deny-above-1024-eth", "eth-large", "eth-standard"]
    assert p.version == EXAMPLE_VERSION


def test_example_policy_names_people_the_seeded_stack_has() -> None:
    """Every initiator, approver and approver group of the example exists after ``dev up --seed``."""
    from services.cli.devstack import DEMO_PEOPLE
    from services.cli.scenario import REGISTRY

    p = parse_policy(EXAMPLE.read_text(), CHAINS)
    initiators = {n for members in p.initiators.values() for n in members}
    assert initiators and initiators <= {n for n, roles in DEMO_PEOPLE.items() if "initiator" in roles}
    groups = [g for r in p.rules if r.require is not None for g in r.require.groups]
    named = {n for g in groups for n in g.approvers}
    assert named <= set(REGISTRY)
    seeded_groups = {g for gs in REGISTRY.values() for g in gs}
    assert {n for g in groups for n in g.approver_groups} <= seeded_groups
    assert all(g.approvers or g.approver_groups for g in groups)


def test_version_ignores_comments_key_order_and_set_order() -> None:
    a = doc([allow(match={"action": ["STAKE", "UNSTAKE"], "chain": ["a", "b"]})])
    body = yaml.safe_load(a)
    body["rules"][0]["match"] = {"chain": ["b", "a"], "action": ["UNSTAKE", "STAKE"]}
    b = "# a comment\n" + yaml.safe_dump(dict(reversed(list(body.items()))))
    assert parse_policy(a).version == parse_policy(b).version


def test_version_changes_with_meaning() -> None:
    a = parse_policy(doc([allow(match={"amount": {"max": 10}})]))
    b = parse_policy(doc([allow(match={"amount": {"max": 11}})]))
    assert a.version != b.version


def test_amounts_as_strings_with_separators_or_ints_are_equal() -> None:
    a = parse_policy(doc([allow(match={"amount": {"max": "64_000_000_000_000_000_000"}})]))
    b = parse_policy(doc([allow(match={"amount": {"max": 64 * 10**18}})]))
    assert a.version == b.version


def _rules(*rules: dict[str, Any]) -> list[dict[str, Any]]:
    return list(rules)


BAD: list[tuple[str, str, str]] = [
    ("float amount", doc([allow(match={"amount": {"max": 1.5}})]), "rules[r].match.amount.max"),
    ("amount text", doc([allow(match={"amount": {"max": "lots"}})]), "rules[r].match.amount.max"),
    ("min above max", doc([allow(match={"amount": {"min": 5, "max": 1}})]), "rules[r].match.amount"),
    ("unknown field", doc([allow(match={"amout": {"max": 1}})]), "rules[r].match.amout"),
    ("unknown action", doc([allow(match={"action": ["YOLO"]})]), "rules[r].match.action"),
    ("policy change in rules", doc([allow(match={"action": ["POLICY_CHANGE"]})]), "rules[r].match.action"),
    (
        "velocity in match",
        doc([allow(match={"velocity": {"window": "1h", "max": 1}})]),
        "rules[r].match.velocity",
    ),
    (
        "bad window",
        doc([allow(limits={"velocity": {"window": "1y", "max": 1}})]),
        "rules[r].limits.velocity.window",
    ),
    (
        "bad tz",
        doc([allow(match={"time": {"from": "08:00", "to": "18:00", "tz": "Mars/Olympus"}})]),
        "rules[r].match.time.tz",
    ),
    (
        "bad clock",
        doc([allow(match={"time": {"from": "8am", "to": "18:00", "tz": "UTC"}})]),
        "rules[r].match.time.from",
    ),
    (
        "bad weekday",
        doc([allow(match={"time": {"weekdays": ["fun"], "from": "08:00", "to": "18:00", "tz": "UTC"}})]),
        "rules[r].match.time.weekdays",
    ),
    (
        "amount in two units",
        doc([allow(match={"amount": {"min": 1, "max": "5 uatom"}})]),
        "rules[r].match.amount",
    ),
    ("finer than wei", doc([allow(match={"amount": {"max": "1.5 wei"}})]), "rules[r].match.amount.max"),
    (
        "both payout keys",
        doc([allow(limits={"withdrawal_addresses": ["a"], "payout_addresses": ["a"]})]),
        "rules[r].limits.payout_addresses",
    ),
    (
        "two outcomes",
        doc([{"id": "r", "deny": "no", "require": {"groups": [OPS], "expiry": 60}}]),
        "rules[r]",
    ),
    ("no outcome", doc([{"id": "r"}]), "rules[r]"),
    ("deny with limits", doc([{"id": "r", "deny": "no", "limits": {"chain": ["x"]}}]), "rules[r].limits"),
    (
        "threshold too high",
        doc([allow(groups=[{"name": "g", "threshold": 4, "approvers": ["a", "b", "c"]}])]),
        "rules[r].require.groups[0].threshold",
    ),
    ("no members", doc([allow(groups=[{"name": "g", "threshold": 1}])]), "rules[r].require.groups[0]"),
    ("duplicate rule id", doc([allow("a"), allow("a")]), "rules[1].id"),
    ("reserved id", doc([allow("default")]), "rules[0].id"),
    ("bad expiry", doc([allow(expiry="forever")]), "rules[r].require.expiry"),
    ("default allow", doc([]).replace("default: deny", "default: allow"), "default"),
    ("wrong format", doc([]).replace("custos.policy/v1", "v2"), "format"),
    (
        "an admin section",
        yaml.safe_dump({"format": "custos.policy/v1", "default": "deny", "admin": {}, "rules": []}),
        "admin",
    ),
]


@pytest.mark.parametrize(("case", "text", "field"), BAD, ids=[b[0] for b in BAD])
def test_invalid_documents_name_the_field(case: str, text: str, field: str) -> None:
    with pytest.raises(PolicyDocumentInvalid) as e:
        parse_policy(text)
    assert str(e.value).startswith(field + ":"), str(e.value)


ETH_RULE = {"chain": ["ethereum-devnet"]}
COSMOS_RULE = {"chain": ["cosmoshub"]}
#: Refused only against the chain registry (what the policy service checks at ProposePolicy).
BAD_FOR_THE_REGISTRY: list[tuple[str, str, str]] = [
    (
        "bad address",
        doc([allow(match=ETH_RULE, limits={"withdrawal_addresses": ["0x12"]})]),
        "rules[r].limits.withdrawal_addresses[0]",
    ),
    (
        "malformed valoper",
        doc([allow(match=COSMOS_RULE, limits={"validators": [VALOPER_1, VALOPER_1[:-1] + "x"]})]),
        "rules[r].limits.validators[1]",
    ),
    (
        "valoper of another prefix",
        doc(
            [
                allow(
                    match=COSMOS_RULE,
                    limits={"validators": [encode("osmovaloper", bytes(20))]},
                )
            ]
        ),
        "rules[r].limits.validators[0]",
    ),
    (
        "an Ethereum validator on a Cosmos rule",
        doc([allow(match=COSMOS_RULE, limits={"validators": ["0x" + "aa" * 48]})]),
        "rules[r].limits.validators[0]",
    ),
    (
        "no family of the registry spells it so",
        doc([allow(limits={"validators": ["not-a-validator"]})]),
        "rules[r].limits.validators[0]",
    ),
    (
        "wei on a Cosmos rule",
        doc([allow(match={**COSMOS_RULE, "amount": {"max": 100}})]),
        "rules[r].match.amount.max",
    ),
    (
        "uatom on an Ethereum rule",
        doc([allow(match=ETH_RULE, limits={"velocity": {"window": "1d", "max": "5 uatom"}})]),
        "rules[r].limits.velocity.max",
    ),
    (
        "a unit no chain counts in",
        doc([allow(match={"amount": {"max": "5 uatm"}})]),
        "rules[r].match.amount.max",
    ),
]


@pytest.mark.parametrize(
    ("case", "text", "field"), BAD_FOR_THE_REGISTRY, ids=[b[0] for b in BAD_FOR_THE_REGISTRY]
)
def test_rules_are_checked_against_the_families_of_their_chains(case: str, text: str, field: str) -> None:
    with pytest.raises(PolicyDocumentInvalid) as e:
        parse_policy(text, CHAINS)
    assert str(e.value).startswith(field + ":"), str(e.value)
    parse_policy(text)  # the version does not depend on a registry: a stored document still loads


def test_a_cosmos_validator_allowlist_accepts_a_valoper_at_load() -> None:
    text = doc([allow(match=COSMOS_RULE, limits={"validators": [VALOPER_1, VALOPER_1.upper()]})])
    rule = parse_policy(text, CHAINS).rules[0]
    assert rule.limits.validators == {
        VALOPER_1,
        VALOPER_1.upper(),
    }  # as written: compared as the family spells
    # a rule without chains takes an entry some chain of the registry accepts, of either family
    parse_policy(doc([allow(limits={"validators": [VALOPER_1, "0x" + "AA" * 48]})]), CHAINS)
    # chains the registry does not know are not checked
    parse_policy(
        doc([allow(match={"chain": ["solana-devnet"]}, limits={"validators": ["anything"]})]), CHAINS
    )


def test_amounts_in_wei_keep_the_version_of_bare_amounts_other_units_change_it() -> None:
    def version(amount: object) -> str:
        return parse_policy(doc([allow(match={"amount": {"max": amount}})])).version

    assert version(100) == version("100 wei") == version("100 WEI") == version("0.0000000000000001 ETH")
    assert version(64 * 10**18) == version("64 ETH") == version("64_000_000_000 gwei")
    assert version("100 uatom") != version(100)
    p = parse_policy(doc([allow(match={"amount": {"max": "100 uatom"}})]))
    assert p.rules[0].match.amount is not None and p.rules[0].match.amount.denom == "uatom"
    assert b'"denom":"uatom"' in p.canonical


def test_payout_addresses_is_withdrawal_addresses_by_its_new_name() -> None:
    address = "0x" + "ab" * 20
    old = parse_policy(doc([allow(limits={"withdrawal_addresses": [address.upper().replace("0X", "0x")]})]))
    new = parse_policy(doc([allow(limits={"payout_addresses": [address]})]))
    assert old.version == new.version
    assert new.rules[0].limits.payout_addresses == {address}


def test_rules_in_different_units_never_compete() -> None:
    """The monotonicity check: an ETH tier and a uatom tier cannot match the same intent."""
    strict = {"name": "g", "threshold": 2, "approvers": ["a", "b"]}
    lenient = {"name": "g", "threshold": 1, "approvers": ["a", "b"]}
    parse_policy(
        doc(
            [
                allow("eth", match={"amount": {"min": "1 ETH"}}, groups=[lenient]),
                allow("atom", match={"amount": {"min": "1 uatom"}}, groups=[strict]),
            ]
        )
    )


def test_duplicate_keys_and_aliases_are_refused() -> None:
    with pytest.raises(PolicyDocumentInvalid, match="duplicate key 'default'"):
        parse_policy(doc([]) + "default: deny\n")
    with pytest.raises(PolicyDocumentInvalid, match="aliases"):
        parse_policy(doc([]).replace("rules: []", "x: &a [1]\nrules: *a"))


def test_non_monotone_order_is_refused() -> None:
    small_first_lenient = [
        allow(
            "big",
            match={"amount": {"min": 100}},
            groups=[{"name": "g", "threshold": 1, "approvers": ["a", "b"]}],
        ),
        allow("any", groups=[{"name": "g", "threshold": 2, "approvers": ["a", "b"]}]),
    ]
    with pytest.raises(PolicyDocumentInvalid, match="raising the amount would lower the requirement"):
        parse_policy(doc(small_first_lenient))
    # Disjoint selectors (different chains) never compete: accepted.
    small_first_lenient[0]["match"]["chain"] = ["a"]
    small_first_lenient[1]["match"] = {"chain": ["b"]}
    parse_policy(doc(small_first_lenient))
