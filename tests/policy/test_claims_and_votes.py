"""CLAIM_REWARDS and VOTE under policy: rules name them, a claim's validator is checked, a vote
names none, and neither moves an amount."""

from __future__ import annotations

from typing import Any

import pytest

from services.policy.document import parse_policy
from services.policy.domain import Outcome
from services.policy.engine import (
    Decision,
    VelocityKey,
    evaluate,
    requirement_for,
    velocity_keys,
    velocity_limits_for,
)
from services.policy.errors import PolicyDocumentInvalid
from services.policy.facts import intent_facts
from services.runtime.intent import Action, ClaimRewardsTarget, IntentSpec, VoteOption, VoteTarget
from tests.policy.helpers import (
    CHAINS,
    COSMOS,
    ETH,
    VALOPER_1,
    VALOPER_2,
    WED_10_UTC,
    allow,
    delegate,
    doc,
    policy,
    stake,
)

#: Every action a rule may name: a rule that lets claims or votes through must name them.
EVERY = ["STAKE", "UNSTAKE", "RESTAKE", "CLAIM_REWARDS", "VOTE"]


def claim(validator: str = VALOPER_1, *, vault: str = "v1", chain: str = COSMOS.name) -> IntentSpec:
    return IntentSpec(Action.CLAIM_REWARDS, chain, vault, 0, ClaimRewardsTarget(validator))


def vote(proposal: int = 3, option: VoteOption = VoteOption.YES, *, vault: str = "v1") -> IntentSpec:
    return IntentSpec(Action.VOTE, COSMOS.name, vault, 0, VoteTarget(proposal, option))


def run(p: Any, spec: IntentSpec, *, used: int | None = 0) -> Decision:
    velocity = {} if used is None else {k: used for k in velocity_keys(p, spec)}
    return evaluate(p, spec, "alice", (), WED_10_UTC, velocity, chains=CHAINS)


def test_rules_may_name_claims_and_votes() -> None:
    gov = {"name": "gov", "threshold": 1, "approvers": ["g"]}
    p = policy(
        [
            allow("claims", match={"action": ["CLAIM_REWARDS"]}),
            allow("votes", match={"action": ["VOTE"]}, groups=[gov]),
        ]
    )
    assert run(p, claim()).rule_id == "claims" and run(p, claim()).allowed
    decided = run(p, vote())
    assert decided.allowed and decided.rule_id == "votes"
    assert decided.requirement is not None and decided.requirement.groups[0].members == {"g"}
    assert run(p, delegate()).rule_id == "default"  # a STAKE is neither


def test_an_unknown_action_is_refused_naming_every_action_a_rule_may_name() -> None:
    with pytest.raises(PolicyDocumentInvalid) as e:
        parse_policy(doc([allow(match={"action": ["CLAIM"]})]))
    assert "unknown action 'CLAIM' (STAKE, UNSTAKE, RESTAKE, CLAIM_REWARDS or VOTE;" in str(e.value)
    with pytest.raises(PolicyDocumentInvalid, match="governed changes"):
        parse_policy(doc([allow(match={"action": ["POLICY_CHANGE"]})]))


def test_a_claims_validator_is_a_validator_fact_even_where_the_family_reports_none() -> None:
    """The Cosmos family predates claims (its facts name no validator for one): the policy reads
    the claim's validator from the intent, in the family's spelling."""
    facts = intent_facts(CHAINS, claim(VALOPER_1.upper()))
    assert facts.validators == {VALOPER_1}
    assert intent_facts(CHAINS, vote()).validators == frozenset()


@pytest.mark.parametrize("where", ["match", "limits"])
def test_a_validator_allowlist_applies_to_a_claim(where: str) -> None:
    conditions: dict[str, Any] = {"action": ["CLAIM_REWARDS"], "validators": [VALOPER_1]}
    claims = {"action": ["CLAIM_REWARDS"]}
    p = policy(
        [allow("r", conditions if where == "match" else claims, conditions if where == "limits" else None)]
    )
    assert run(p, claim(VALOPER_1)).allowed
    refused = run(p, claim(VALOPER_2))
    assert not refused.allowed
    if where == "limits":
        assert refused.reasons == (f"validator {VALOPER_2} is not on the allowlist",)


def test_a_validator_allowlist_never_refuses_a_vote_nor_selects_one() -> None:
    limited = policy([allow("r", match={"action": EVERY}, limits={"validators": [VALOPER_1]})])
    assert run(limited, vote()).allowed
    assert not run(limited, delegate(validator=VALOPER_2)).allowed  # the allowlist still limits stakes
    # as a selector it selects intents to a listed validator: a vote is none of them, and falls to
    # the next rule (here a stricter one), never to the lenient one
    lenient = {"name": "ops", "threshold": 1, "approvers": ["o1"]}
    strict = {"name": "ops", "threshold": 2, "approvers": ["o1", "o2"]}
    tiers = policy(
        [
            allow("trusted", match={"action": EVERY, "validators": [VALOPER_1]}, groups=[lenient]),
            allow("rest", match={"action": EVERY}, groups=[strict]),
        ]
    )
    assert run(tiers, claim(VALOPER_1)).rule_id == "trusted"
    assert run(tiers, vote()).rule_id == "rest"


def test_an_amount_limit_passes_an_amountless_action_in_any_unit() -> None:
    """0 is below any max, whatever unit the max is in; a min above 0 still refuses."""
    for bound in ("64 ETH", "1 uatom", 0):
        p = policy([allow("r", match={"action": EVERY}, limits={"amount": {"max": bound}})])
        assert run(p, claim()).allowed and run(p, vote()).allowed, bound
    assert not run(policy([allow("r", limits={"amount": {"max": "64 ETH"}})]), delegate()).allowed
    floor = run(policy([allow("r", match={"action": EVERY}, limits={"amount": {"min": "1 uatom"}})]), vote())
    assert floor.reasons == ("amount 0 is below the minimum of 1",)


def test_in_match_an_amount_bound_selects_an_amountless_action_only_in_its_unit() -> None:
    eth = allow("eth", match={"action": EVERY, "amount": {"max": "64 ETH"}})
    p = policy([eth, allow("any", match={"action": ["VOTE"]})])
    assert run(p, vote()).rule_id == "any"  # 0 uatom is not counted in wei
    atom = policy([allow("atom", match={"action": EVERY, "amount": {"max": "5 uatom"}})])
    assert run(atom, vote()).rule_id == "atom"


def test_velocity_never_counts_or_refuses_an_amountless_action() -> None:
    every = {"action": EVERY}
    in_atom = policy([allow("r", every, limits={"velocity": {"window": "1d", "max": "1_000 uatom"}})])
    in_wei = policy([allow("r", every, limits={"velocity": {"window": "1d", "max": "1 ETH"}})])
    for p in (in_atom, in_wei):
        assert velocity_keys(p, claim()) == frozenset() and velocity_keys(p, vote()) == frozenset()
        # no sum given: a stake would be refused as unknown, a claim moves nothing
        assert run(p, claim(), used=None).allowed and run(p, vote(), used=None).allowed
        assert velocity_limits_for(p, vote(), "alice", WED_10_UTC, chains=CHAINS) == ()
        assert run(p, claim()).velocity_limits == ()
    # a vault already past a lowered limit may still vote; it may not delegate more
    used = {VelocityKey(COSMOS.name, 86400, None): 5_000}
    assert evaluate(in_atom, vote(), "alice", (), WED_10_UTC, used, chains=CHAINS).allowed
    assert not evaluate(in_atom, delegate(1), "alice", (), WED_10_UTC, used, chains=CHAINS).allowed


def test_a_fee_cap_in_another_unit_still_denies_a_claim() -> None:
    """Claims and votes pay network fees: a cap that bounds nothing on their chain is no cap."""
    rule = allow("f", match={"action": EVERY})
    rule["require"]["fee_cap"] = "0.01 ETH"
    d = run(policy([rule]), claim())
    assert d.outcome is Outcome.DENY and "the fee cap is in wei" in d.reasons[0]


def test_claims_and_votes_on_an_ethereum_chain_are_judged_by_the_rules_alike() -> None:
    """The policy judges; the Ethereum family refuses them at submission (tests/families)."""
    p = policy([allow("r", match={"action": ["CLAIM_REWARDS"], "chain": ["ethereum-devnet"]})])
    eth_claim = claim("0x" + "aa" * 48, chain="ethereum-devnet")
    assert run(p, eth_claim).allowed
    assert requirement_for(p, eth_claim, "alice", WED_10_UTC, chains=CHAINS).rule_id == "r"
    assert run(p, stake(32 * ETH)).rule_id == "default"


def test_a_rule_without_an_action_list_lets_no_claim_or_vote_through_but_a_deny_rule_stops_them() -> None:
    """Rules written before claims and votes existed meant stakes: one that lets intents through
    selects a claim or a vote only when its action list names it (else one approver of small
    delegations would cast the vault's vote); a deny rule without one still refuses them."""
    lenient = {"name": "ops", "threshold": 1, "approvers": ["o1"]}
    p = policy([allow("small-stakes", groups=[lenient]), allow("votes", match={"action": ["VOTE"]})])
    assert run(p, delegate()).rule_id == "small-stakes"
    assert run(p, vote()).rule_id == "votes"
    assert run(p, claim()).rule_id == "default" and not run(p, claim()).allowed
    frozen = policy(
        [
            {"id": "frozen", "match": {"vault": ["v1"]}, "deny": "vault v1 is frozen"},
            allow("votes", match={"action": ["VOTE"]}),
        ]
    )
    assert run(frozen, vote()).reasons == ("vault v1 is frozen",)
