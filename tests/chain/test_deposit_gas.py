"""Deposits built while others are in flight: the gas must cover the deposit count they run at.

Found by the workflow benchmark: 8 concurrent STAKE intents of one vault, one ran out of gas.
The deposit contract's cost depends on the deposit count at execution, which moves between
the build (where gas is estimated) and the execution when other deposits land first.
"""

from __future__ import annotations

import asyncio

from services.chain.devnet import Devnet
from services.chain.service import ChainService
from services.chain.types import TxState
from services.families.config import ChainConfig
from tests.chain.conftest import HsmVaultSigner, deposit_for, stake_spec, wait_final

DEPOSIT_COUNT_SLOT = 32  # after the 32 branch slots of the deposit tree


async def test_deposits_built_at_a_cheap_count_still_have_gas_at_a_costly_one(
    service: ChainService, chain_config: ChainConfig, vault: HsmVaultSigner, devnet: Devnet
) -> None:
    snapshot = await devnet.rpc.call("evm_snapshot")
    try:
        # The first deposit lands at count 2**20 - 1 (odd: the cheapest), the second at 2**20
        # (20 branch hashes and a fresh storage slot): both are estimated before either runs.
        await devnet.rpc.call(
            "anvil_setStorageAt",
            chain_config.deposit_contract,
            hex(DEPOSIT_COUNT_SLOT),
            "0x%064x" % (2**20 - 2),
        )
        specs = [stake_spec(chain_config, deposit_for(vault, chain_config)) for _ in range(2)]
        built = await asyncio.gather(
            *(service.build_transaction(f"intent-g{i}", s, vault.address) for i, s in enumerate(specs))
        )
        hashes = []
        for b in sorted(built, key=lambda b: b.decoded.nonce):
            hashes.append((await service.broadcast(chain_config.name, vault.sign(b.unsigned_tx))).tx_hash)
        statuses = [await wait_final(service, chain_config.name, h) for h in hashes]
        assert [(s.state, s.failure_reason) for s in statuses] == [(TxState.CONFIRMED, "")] * 2
    finally:
        await devnet.rpc.call("evm_revert", snapshot)
