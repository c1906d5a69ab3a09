"""The Cosmos devnet: a real injectived node, and the Cosmos family's bytes accepted by it.

The last test is the codec's proof against a real node: a MsgDelegate built by
``services.families.cosmos``, signed with sha256 + secp256k1 (a coincurve key standing in
for the HSM) and assembled by the family, is accepted at CheckTx and included.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
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
from services.runtime.intent import Action, IntentSpec, StakeTarget


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


def test_a_delegation_built_and_assembled_by_the_family_is_included(
    cosmos_devnet: CosmosDevnet, cosmos_config: ChainConfig
) -> None:
    key, point, delegator = _fresh_key(cosmos_config)
    cosmos_devnet.fund(delegator, 10 * INJ)
    account_number, sequence = _account(cosmos_devnet, delegator)
    validator = cosmos_devnet.genesis.validators[1]
    spec = IntentSpec(
        action=Action.STAKE,
        chain=cosmos_config.name,
        vault_id="vault-1",
        amount=2 * INJ,
        target=StakeTarget(validator=validator),
    )

    def build(gas_limit: int) -> bytes:
        return build_unsigned(
            cosmos_config,
            spec,
            public_key=point,
            account_number=account_number,
            sequence=sequence,
            gas_limit=gas_limit,
            fee_amount=gas_limit * MIN_GAS_PRICE,
        )

    # Simulated with a non-zero fee (a zero fee skips the fee deduction's gas), then a margin.
    trial = _signed(cosmos_config, key, point, build(400_000))
    simulated = _post_tx(cosmos_devnet, "/cosmos/tx/v1beta1/simulate", trial.signed_tx)
    assert "gas_info" in simulated, simulated
    gas_limit = int(simulated["gas_info"]["gas_used"]) * 13 // 10
    signed = _signed(cosmos_config, key, point, build(gas_limit))

    sent = _post_tx(cosmos_devnet, "/cosmos/tx/v1beta1/txs", signed.signed_tx, mode="BROADCAST_MODE_SYNC")
    response = sent["tx_response"]
    assert response["code"] == 0, response["raw_log"]
    assert response["txhash"] == signed.tx_id
    included = cosmos_devnet.wait_for_tx(response["txhash"])

    assert included["code"] == 0, included["raw_log"]
    assert int(included["gas_wanted"]) == gas_limit
    delegations = cosmos_devnet.rest(f"/cosmos/staking/v1beta1/delegations/{delegator}")
    (delegation,) = delegations["delegation_responses"]
    assert delegation["delegation"]["validator_address"] == validator
    assert delegation["balance"] == {"denom": "inj", "amount": str(2 * INJ)}
    assert _account(cosmos_devnet, delegator) == (account_number, sequence + 1)
