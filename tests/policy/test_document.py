"""The policy document: every bad field is named, and the version is the canonical hash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from services.policy.document import parse_policy
from services.policy.errors import PolicyDocumentInvalid
from tests.policy.helpers import OPS, allow, doc

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "policies" / "example.yaml"


def test_example_policy_parses() -> None:
    p = parse_policy(EXAMPLE.read_text())
    assert [r.id for r in p.rules] == ["deny-above-1024-eth", "eth-large", "eth-standard"]
    assert len(p.version) == 64


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
        "bad address",
        doc([allow(limits={"withdrawal_addresses": ["0x12"]})]),
        "rules[r].limits.withdrawal_addresses[0]",
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
