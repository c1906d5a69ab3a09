"""The Cosmos devnet: a real injectived node, and the Cosmos family's bytes accepted by it.

The last tests are the codec's proof against a real node: a MsgDelegate, a
MsgWithdrawDelegatorReward and a gov v1 MsgVote built by ``services.families.cosmos``, signed
with sha256 + secp256k1 (a coincurve key standing in for the HSM) and assembled by the family,
are accepted at CheckTx, included, and do what they say.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from coincurve import PrivateKey

from services.chain.cosmos.devnet import (
    BECH32_PREFIX,
    INJ,
    MIN_GAS_PRICE,
    CosmosDevnet,
    FaucetRequestInvalid,
)
from services.families.base import Signed
from services.families.config import ChainConfig, ChainFamily
from services.families.cosmos.addresses import encode
from services.families.cosmos.family import CosmosFamily, build_unsigned
from services.runtime.intent import (
    Action,
    ClaimRewardsTarget,
    IntentSpec,
    StakeTarget,
    VoteOption,
    VoteTarget,
)


@pytest.fixture(scope="module")
def cosmos_config(cosmos_devnet: CosmosDevnet) -> ChainConfig:
    return cosmos_devnet.chain_config()


def _listening(pid: int) -> set[tuple[str, int]]:
    """(local address, port) of every TCP socket process ``pid`` listens on (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                host, port = local.split(":")
                address = ".".join(str(b) for b in reversed(bytes.fromhex(host))) if len(host) == 8 else host
                found.add((address, int(port, 16)))
    return found


def test_the_node_makes_blocks_with_short_periods_on_loopback_ports_only(
    cosmos_devnet: CosmosDevnet, cosmos_config: ChainConfig
) -> None:
    first = cosmos_devnet.height()
    deadline = time.monotonic() + 5
    while cosmos_devnet.height() < first + 3:
        assert time.monotonic() < deadline, "fewer than 3 blocks in 5 s"
        time.sleep(0.1)

    staking = cosmos_devnet.rest("/cosmos/staking/v1beta1/params")["params"]
    voting = cosmos_devnet.rest("/cosmos/gov/v1/params/voting")["params"]
    assert (staking["unbonding_time"], staking["bond_denom"]) == ("20s", "inj")
    assert voting["voting_period"] == "20s"

    assert cosmos_config.family is ChainFamily.COSMOS
    assert (cosmos_config.chain_id, cosmos_config.denom, cosmos_config.bech32_prefix) == (
        cosmos_devnet.chain_id,
        "inj",
        "inj",
    )
    assert cosmos_config.unbonding_seconds == 20 and cosmos_config.max_fee_wei > 0
    status = cosmos_devnet.rest("/cosmos/base/tendermint/v1beta1/node_info")
    assert status["default_node_info"]["network"] == cosmos_config.chain_id

    assert cosmos_devnet._proc is not None
    ports = cosmos_devnet.genesis.ports
    assert _listening(cosmos_devnet._proc.pid) == {
        ("127.0.0.1", port) for port in (ports.rpc, ports.p2p, ports.grpc, ports.api)
    }


def test_both_validators_are_bonded(cosmos_devnet: CosmosDevnet) -> None:
    validators = {v.operator: v for v in cosmos_devnet.validators()}

    assert set(validators) == set(cosmos_devnet.genesis.validators)
    for v in validators.values():
        assert (v.status, v.jailed) == ("BOND_STATUS_BONDED", False), v
        assert v.operator.startswith(BECH32_PREFIX + "valoper1")


def _fresh_key(config: ChainConfig) -> tuple[PrivateKey, bytes, str]:
    """A new secp256k1 key, its 65-byte point and its account address made by the family."""
    key = PrivateKey()
    point = key.public_key.format(compressed=False)
    return key, point, CosmosFamily().address(config, point)


def test_fund_credits_an_address_made_by_the_family(
    cosmos_devnet: CosmosDevnet, cosmos_config: ChainConfig
) -> None:
    _, _, address = _fresh_key(cosmos_config)
    assert cosmos_devnet.balance(address) == 0

    cosmos_devnet.fund(address, 5 * INJ + 1)

    assert cosmos_devnet.balance(address) == 5 * INJ + 1


@pytest.mark.parametrize(
    ("address", "amount"),
    [
        (encode("cosmos", bytes(20)), 1),  # another chain's prefix
        ("inj1notbech32", 1),
        (encode("inj", bytes(20)), 0),
        (encode("inj", bytes(20)), True),
    ],
)
def test_fund_refuses_what_is_not_an_address_or_an_amount(
    cosmos_devnet: CosmosDevnet, address: str, amount: int
) -> None:
    with pytest.raises(FaucetRequestInvalid):
        cosmos_devnet.fund(address, amount)


# -- the family's bytes on the node -----------------------------------------------------------


def _account(devnet: CosmosDevnet, address: str) -> tuple[int, int]:
    info = devnet.rest(f"/cosmos/auth/v1beta1/account_info/{address}")["info"]
    return int(info["account_number"]), int(info.get("sequence", 0))


def _signed(config: ChainConfig, key: PrivateKey, point: bytes, unsigned: bytes) -> Signed:
    family = CosmosFamily()
    payload = family.signing_payload(config, unsigned)
    assert payload.data == hashlib.sha256(unsigned).digest()
    signature = key.sign_recoverable(payload.data, hasher=None)[:64]  # r || s, low-S
    return family.assemble(config, unsigned, signature, point)


def _post_tx(devnet: CosmosDevnet, path: str, signed_tx: bytes, **extra: Any) -> dict[str, Any]:
    return devnet.rest(path, {"tx_bytes": base64.b64encode(signed_tx).decode(), **extra})


@dataclass(frozen=True)
class Sent:
    """A transaction the family built, as the node included it."""

    unsigned: bytes
    signed: Signed
    included: dict[str, Any]
    gas_limit: int

    @property
    def fee(self) -> int:
        return self.gas_limit * MIN_GAS_PRICE


def _send(devnet: CosmosDevnet, config: ChainConfig, key: PrivateKey, point: bytes, spec: IntentSpec) -> Sent:
    """Builds ``spec``'s step with :func:`build_unsigned` at the account's sequence, signs and
    broadcasts it, and returns once a block includes it (with code 0)."""
    account_number, sequence = _account(devnet, CosmosFamily().address(config, point))

    def build(gas_limit: int) -> bytes:
        return build_unsigned(
            config,
            spec,
            public_key=point,
            account_number=account_number,
            sequence=sequence,
            gas_limit=gas_limit,
            fee_amount=gas_limit * MIN_GAS_PRICE,
        )

    # Simulated with a non-zero fee (a zero fee skips the fee deduction's gas), then a margin.
    trial = _signed(config, key, point, build(400_000))
    simulated = _post_tx(devnet, "/cosmos/tx/v1beta1/simulate", trial.signed_tx)
    assert "gas_info" in simulated, simulated
    gas_limit = int(simulated["gas_info"]["gas_used"]) * 13 // 10
    unsigned = build(gas_limit)
    signed = _signed(config, key, point, unsigned)

    sent = _post_tx(devnet, "/cosmos/tx/v1beta1/txs", signed.signed_tx, mode="BROADCAST_MODE_SYNC")
    response = sent["tx_response"]
    assert response["code"] == 0, response["raw_log"]
    assert response["txhash"] == signed.tx_id
    included = devnet.wait_for_tx(response["txhash"])
    assert included["code"] == 0, included["raw_log"]
    assert int(included["gas_wanted"]) == gas_limit
    assert _account(devnet, CosmosFamily().address(config, point)) == (account_number, sequence + 1)
    return Sent(unsigned=unsigned, signed=signed, included=included, gas_limit=gas_limit)


def test_a_delegation_built_and_assembled_by_the_family_is_included(
    cosmos_devnet: CosmosDevnet, cosmos_config: ChainConfig
) -> None:
    key, point, delegator = _fresh_key(cosmos_config)
    cosmos_devnet.fund(delegator, 10 * INJ)
    validator = cosmos_devnet.genesis.validators[1]
    spec = IntentSpec(
        action=Action.STAKE,
        chain=cosmos_config.name,
        vault_id="vault-1",
        amount=2 * INJ,
        target=StakeTarget(validator=validator),
    )

    _send(cosmos_devnet, cosmos_config, key, point, spec)

    delegations = cosmos_devnet.rest(f"/cosmos/staking/v1beta1/delegations/{delegator}")
    (delegation,) = delegations["delegation_responses"]
    assert delegation["delegation"]["validator_address"] == validator
    assert delegation["balance"] == {"denom": "inj", "amount": str(2 * INJ)}


@dataclass(frozen=True)
class Delegator:
    key: PrivateKey
    point: bytes
    address: str
    validator: str
    stake: int


@pytest.fixture(scope="module")
def delegator(cosmos_devnet: CosmosDevnet, cosmos_config: ChainConfig) -> Delegator:
    """A vault key that delegated 100 INJ to validator 1 (through the family), so rewards accrue
    to it every block and its votes weigh 100 INJ."""
    key, point, address = _fresh_key(cosmos_config)
    cosmos_devnet.fund(address, 200 * INJ)
    validator, stake = cosmos_devnet.genesis.validators[0], 100 * INJ
    spec = IntentSpec(Action.STAKE, cosmos_config.name, "vault-1", stake, StakeTarget(validator))
    _send(cosmos_devnet, cosmos_config, key, point, spec)
    return Delegator(key=key, point=point, address=address, validator=validator, stake=stake)


def _pending_rewards(devnet: CosmosDevnet, delegator: str, validator: str) -> int:
    """The whole ``inj`` the delegation has earned and not withdrawn (the node keeps decimals)."""
    answer = devnet.rest(f"/cosmos/distribution/v1beta1/delegators/{delegator}/rewards/{validator}")
    coins = [c for c in answer.get("rewards", []) if c["denom"] == "inj"]
    return int(coins[0]["amount"].split(".")[0]) if coins else 0


def _event_values(included: dict[str, Any], event_type: str, key: str) -> list[str]:
    return [
        a["value"]
        for e in included["events"]
        if e["type"] == event_type
        for a in e["attributes"]
        if a["key"] == key
    ]


def test_a_reward_claim_built_by_the_family_is_included_and_pays_the_vault(
    cosmos_devnet: CosmosDevnet, cosmos_config: ChainConfig, delegator: Delegator
) -> None:
    # ~20 INJ are minted a block; 100 of 1,000,100 bonded INJ earn ~1.8e15 inj of it (after the
    # community tax and a 10% commission), far above a claim's ~4e13 inj fee within a few blocks.
    deadline = time.monotonic() + 15
    while _pending_rewards(cosmos_devnet, delegator.address, delegator.validator) < 10**15:
        assert time.monotonic() < deadline, "rewards did not accrue"
        time.sleep(0.2)
    spec = IntentSpec(
        Action.CLAIM_REWARDS, cosmos_config.name, "vault-1", 0, ClaimRewardsTarget(delegator.validator)
    )
    before = cosmos_devnet.balance(delegator.address)

    sent = _send(cosmos_devnet, cosmos_config, delegator.key, delegator.point, spec)

    (withdrawn,) = _event_values(sent.included, "withdraw_rewards", "amount")
    assert withdrawn.endswith("inj") and int(withdrawn[: -len("inj")]) >= 10**15
    (validator,) = _event_values(sent.included, "withdraw_rewards", "validator")
    assert validator == delegator.validator
    after = cosmos_devnet.balance(delegator.address)
    assert after == before - sent.fee + int(withdrawn[: -len("inj")])
    assert after > before
    summary = CosmosFamily().decode(cosmos_config, sent.unsigned).summary
    assert summary.startswith(f"withdraw rewards from {delegator.validator} (delegator {delegator.address}")


def test_a_vote_built_by_the_family_on_a_real_proposal_is_counted(
    cosmos_devnet: CosmosDevnet, cosmos_config: ChainConfig, delegator: Delegator
) -> None:
    proposal_id = cosmos_devnet.submit_text_proposal(
        "custos vote test", "A text proposal the vault votes on."
    )
    proposal = cosmos_devnet.rest(f"/cosmos/gov/v1/proposals/{proposal_id}")["proposal"]
    assert proposal["status"] == "PROPOSAL_STATUS_VOTING_PERIOD"
    spec = IntentSpec(
        Action.VOTE, cosmos_config.name, "vault-1", 0, VoteTarget(proposal_id, VoteOption.NO_WITH_VETO)
    )

    _send(cosmos_devnet, cosmos_config, delegator.key, delegator.point, spec)

    vote = cosmos_devnet.rest(f"/cosmos/gov/v1/proposals/{proposal_id}/votes/{delegator.address}")["vote"]
    assert (vote["proposal_id"], vote["voter"], vote["metadata"]) == (str(proposal_id), delegator.address, "")
    assert vote["options"] == [{"option": "VOTE_OPTION_NO_WITH_VETO", "weight": "1.000000000000000000"}]
    tally = cosmos_devnet.rest(f"/cosmos/gov/v1/proposals/{proposal_id}/tally")["tally"]
    assert int(tally["no_with_veto_count"]) == delegator.stake
    assert int(tally["yes_count"]) == int(tally["no_count"]) == int(tally["abstain_count"]) == 0
