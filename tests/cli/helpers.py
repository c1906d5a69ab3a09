"""Deposit data files as the staking deposit CLI writes them (``deposit_data-*.json``)."""

from __future__ import annotations

import json
from pathlib import Path

from services.families.ethereum.deposit import deposit_of
from services.runtime.intent import StakeTarget


def write_deposit_file(path: Path, *targets: StakeTarget, gwei: int = 32_000_000_000) -> Path:
    entries = []
    for t in targets:
        d = deposit_of(t)
        assert d is not None
        entries.append(
            {
                "pubkey": d.pubkey.hex(),
                "withdrawal_credentials": d.withdrawal_credentials.hex(),
                "amount": gwei,
                "signature": d.signature.hex(),
                "deposit_data_root": d.deposit_data_root.hex(),
            }
        )
    path.write_text(json.dumps(entries))
    return path
