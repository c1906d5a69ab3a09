"""The chain registry entry: what settings may and may not say."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.families.config import ChainConfig, ChainFamily


def test_ethereum_chain_id_is_an_integer_and_fork_version_four_bytes() -> None:
    config = ChainConfig(name="ethereum-hoodi", chain_id="560048", rpc_url="http://node:8545")
    assert config.evm_chain_id == 560048
    assert config.fork_version_bytes == bytes(4)
    assert config.confirmations == 1


@pytest.mark.parametrize(
    "values",
    [
        {"chain_id": "not-a-number"},
        {"chain_id": 0},
        {"genesis_fork_version": "0x1234"},
        {"deposit_contract": "0x1234"},
        {"confirmations": 0},
        {"max_fee_per_gas_cap": 0},
        {"name": "Has Spaces"},
        {"unknown_field": 1},
        {"denom": "gwei"},  # an Ethereum chain counts in wei: policy units depend on it
        {"denom": "1nvalid"},
    ],
)
def test_bad_settings_are_refused(values: dict[str, object]) -> None:
    base: dict[str, object] = {"name": "ethereum-x", "chain_id": 1, "rpc_url": "http://node:8545"}
    with pytest.raises(ValidationError):
        ChainConfig.model_validate(base | values)


def test_a_cosmos_chain_keeps_its_string_chain_id() -> None:
    config = ChainConfig(
        name="cosmoshub", family=ChainFamily.COSMOS, chain_id="cosmoshub-4", rpc_url="http://n", max_fee_wei=1
    )
    assert config.chain_id == "cosmoshub-4"
    with pytest.raises(TypeError):
        _ = config.evm_chain_id


def test_display_units_default_by_family() -> None:
    eth = ChainConfig(name="ethereum-x", chain_id=1, rpc_url="http://n")
    atom = ChainConfig(
        name="cosmoshub",
        family=ChainFamily.COSMOS,
        chain_id="cosmoshub-4",
        rpc_url="http://n",
        denom="uatom",
        max_fee_wei=1,
    )
    assert eth.display() == ("ETH", 18) and eth.denom == "wei"
    assert atom.display() == ("uatom", 0)
    assert atom.model_copy(update={"display_unit": "ATOM", "display_exponent": 6}).display() == ("ATOM", 6)


def test_a_cosmos_chain_names_its_grpc_and_rest_endpoints() -> None:
    base: dict[str, object] = {
        "name": "cosmos-devnet",
        "family": ChainFamily.COSMOS,
        "chain_id": "custos-devnet-1",
        "rpc_url": "http://127.0.0.1:26657",
        "max_fee_wei": 10**16,
    }
    config = ChainConfig.model_validate(
        base | {"grpc_address": "127.0.0.1:9090", "rest_url": "http://127.0.0.1:1317"}
    )
    assert (config.grpc_address, config.rest_url) == ("127.0.0.1:9090", "http://127.0.0.1:1317")
    assert ChainConfig.model_validate(base).grpc_address == ""  # optional: not every chain has one
    for bad in ({"grpc_address": "http://127.0.0.1:9090"}, {"rest_url": "127.0.0.1:1317"}):
        with pytest.raises(ValidationError):
            ChainConfig.model_validate(base | bad)
