"""Builders shared by the policy tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import yaml

from services.families.config import ChainConfig, ChainFamily
from services.families.cosmos.addresses import encode
from services.families.ethereum.deposit import DepositData, deposit_params
from services.policy.document import FORMAT, Policy, parse_policy
from services.runtime.intent import Action, IntentSpec, RestakeTarget, StakeTarget, UnstakeTarget

ETH = 10**18
#: Ethereum validators: BLS public keys (48 bytes), in the spelling intents carry.
VAL_A, VAL_B = "0x" + "aa" * 48, "0x" + "bb" * 48


def eth_chain(name: str) -> ChainConfig:
    return ChainConfig(name=name, chain_id=31337, rpc_url="http://127.0.0.1:9")


COSMOS = ChainConfig(
    name="cosmoshub",
    family=ChainFamily.COSMOS,
    chain_id="cosmoshub-4",
    rpc_url="http://127.0.0.1:9",
    denom="uatom",
    bech32_prefix="cosmos",
    max_fee_wei=10**6,
)
#: The chain registry the tests evaluate against: Ethereum chains and one Cosmos chain.
CHAINS: dict[str, ChainConfig] = {
    c.name: c for c in (eth_chain("ethereum-devnet"), eth_chain("c1"), eth_chain("c2"), COSMOS)
}
#: Cosmos validator operators and an account (canonical lower-case bech32).
VALOPER_1 = encode("cosmosvaloper", bytes(range(20)))
VALOPER_2 = encode("cosmosvaloper", bytes(range(1, 21)))
ACCOUNT_1 = encode("cosmos", bytes(range(20)))
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
    validator: str = VAL_A,
    withdrawal: bytes | None = None,
) -> IntentSpec:
    params = None
    if withdrawal is not None:
        params = deposit_params(
            DepositData(
                pubkey=b"\x01" * 48,
                withdrawal_credentials=withdrawal,
                signature=b"\x02" * 96,
                deposit_data_root=b"\x03" * 32,
            )
        )
    return IntentSpec(Action.STAKE, chain, vault, amount, StakeTarget(validator, params))


def unstake(validator: str = VAL_A, vault: str = "v1") -> IntentSpec:
    return IntentSpec(Action.UNSTAKE, "ethereum-devnet", vault, 0, UnstakeTarget(validator))


def restake(src: str = VAL_A, dst: str = VAL_B, vault: str = "v1", amount: int = ETH) -> IntentSpec:
    return IntentSpec(Action.RESTAKE, "ethereum-devnet", vault, amount, RestakeTarget(src, dst))


def delegate(amount: int = 1_000_000, *, validator: str = VALOPER_1, vault: str = "v1") -> IntentSpec:
    """A Cosmos stake (MsgDelegate), in uatom."""
    return IntentSpec(Action.STAKE, COSMOS.name, vault, amount, StakeTarget(validator))
