"""Builders shared by the policy tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import yaml

from services.policy.document import FORMAT, Policy, parse_policy
from services.runtime.intent import Action, DepositData, IntentSpec, RestakeTarget, StakeTarget, UnstakeTarget

ETH = 10**18
# A Wednesday, 10:00 UTC (11:00 in Zurich).
WED_10_UTC = datetime(2025, 1, 8, 10, 0, tzinfo=UTC)

OPS = {"name": "ops", "threshold": 2, "approvers": ["o1", "o2", "o3"]}


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def doc(rules: list[dict[str, Any]], **extra: Any) -> str:
    body: dict[str, Any] = {"format": FORMAT, "default": "deny", "rules": rules}
    body.update(extra)
    return yaml.dump(body, Dumper=_NoAliases, sort_keys=False)


def policy(rules: list[dict[str, Any]], **extra: Any) -> Policy:
    return parse_policy(doc(rules, **extra))


def allow(
    rule_id: str = "r",
    match: dict[str, Any] | None = None,
    limits: dict[str, Any] | None = None,
    groups: list[dict[str, Any]] | None = None,
    expiry: str = "1h",
) -> dict[str, Any]:
    rule: dict[str, Any] = {"id": rule_id, "require": {"groups": groups or [OPS], "expiry": expiry}}
    if match:
        rule["match"] = match
    if limits:
        rule["limits"] = limits
    return rule


def stake(
    amount: int = 32 * ETH,
    *,
    vault: str = "v1",
    chain: str = "ethereum-devnet",
    validator: str = "0xAA",
    withdrawal: bytes | None = None,
) -> IntentSpec:
    deposit = None
    if withdrawal is not None:
        deposit = DepositData(
            pubkey=b"\x01" * 48,
            withdrawal_credentials=withdrawal,
            signature=b"\x02" * 96,
            deposit_data_root=b"\x03" * 32,
        )
    return IntentSpec(Action.STAKE, chain, vault, amount, StakeTarget(validator, deposit))


def unstake(validator: str = "0xAA", vault: str = "v1") -> IntentSpec:
    return IntentSpec(Action.UNSTAKE, "ethereum-devnet", vault, 0, UnstakeTarget(validator))


def restake(src: str = "0xAA", dst: str = "0xBB", vault: str = "v1", amount: int = ETH) -> IntentSpec:
    return IntentSpec(Action.RESTAKE, "ethereum-devnet", vault, amount, RestakeTarget(src, dst))
