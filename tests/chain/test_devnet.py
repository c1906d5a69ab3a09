"""The devnet tooling: assets install once, anvil starts with the contracts and stops cleanly."""

from __future__ import annotations

import json
import os
import time

from services.chain.devnet import CONTRACTS_FILE, Devnet, DevnetAssets, ensure_devnet_assets
from services.families.ethereum.contracts import (
    CONSOLIDATION_REQUEST_CONTRACT,
    GET_DEPOSIT_ROOT_SELECTOR,
    WITHDRAWAL_REQUEST_CONTRACT,
)

EMPTY_DEPOSIT_ROOT = "0xd70a234731285c6804c2a4f56711ddb8c82c99740f207854891028af34e27e5e"


def test_assets_are_idempotent_and_fast_once_installed(devnet_assets: DevnetAssets) -> None:
    started = time.monotonic()
    again = ensure_devnet_assets()
    assert time.monotonic() - started < 1.0
    assert again == devnet_assets
    exported = json.loads(CONTRACTS_FILE.read_text())
    assert set(exported) == {"deposit", "beacon_roots", "withdrawal_requests", "consolidation_requests"}
    # Slot 0 ("requests not yet activated" in the genesis) is left out of the request contracts.
    assert "0x" + "00" * 32 not in exported["withdrawal_requests"]["storage"]
    assert "0x" + "00" * 32 not in exported["consolidation_requests"]["storage"]


def test_devnet_has_the_contracts_and_leaves_no_process(devnet_assets: DevnetAssets) -> None:
    node = Devnet(assets=devnet_assets, chain_id=4242)
    with node:
        rpc = node.rpc
        pid = node._proc.pid if node._proc else 0
        assert int(rpc.call_sync("eth_chainId"), 16) == 4242
        root = rpc.call_sync(
            "eth_call",
            [
                {
                    "to": "0x00000000219ab540356cBB839Cbe05303d7705Fa",
                    "data": "0x" + GET_DEPOSIT_ROOT_SELECTOR.hex(),
                }
            ],
        )
        assert root == EMPTY_DEPOSIT_ROOT
        for contract in (WITHDRAWAL_REQUEST_CONTRACT, CONSOLIDATION_REQUEST_CONTRACT):
            fee = rpc.call_sync("eth_call", [{"to": contract, "data": "0x"}, "latest"])
            assert int(fee, 16) == 1
        node.fund("0x" + "42" * 20, 5)
        assert int(rpc.call_sync("eth_getBalance", ["0x" + "42" * 20, "latest"]), 16) == 5
    assert not node.running
    assert pid and not os.path.exists(f"/proc/{pid}")
