"""The Ethereum family refuses the Cosmos-only actions at submission, saying why, and has no
step for them (so the signer never signs one)."""

from __future__ import annotations

import pytest

from services.families.config import ChainConfig
from services.families.errors import IntentInvalid
from services.families.ethereum.family import EthereumFamily
from services.runtime.intent import Action, ClaimRewardsTarget, IntentSpec, VoteOption, VoteTarget

CHAIN = ChainConfig(name="ethereum-test", chain_id=560048, rpc_url="http://127.0.0.1:1")
VAULT = "0x256A674b0677d0E6BfbDB5d092BD57994aCcfE4e"
SPECS = {
    Action.CLAIM_REWARDS: IntentSpec(
        Action.CLAIM_REWARDS, CHAIN.name, "v1", 0, ClaimRewardsTarget("0x" + "aa" * 48)
    ),
    Action.VOTE: IntentSpec(Action.VOTE, CHAIN.name, "v1", 0, VoteTarget(3, VoteOption.YES)),
}


@pytest.mark.parametrize("action", sorted(SPECS))
def test_claims_and_votes_are_not_supported_on_ethereum(action: Action) -> None:
    family = EthereumFamily()
    with pytest.raises(IntentInvalid) as e:
        family.validate_intent(CHAIN, SPECS[action], VAULT)
    assert e.value.message.startswith(f"{action} is not supported on Ethereum: ")
    assert "\n" not in e.value.message
    assert family.steps(action) == ()
