"""Independent readings of Solana bytes: solders (Rust's own message and transaction code) and
the npm stake clients (``solana_reference.mjs``: ``@solana-program/stake`` 0.9.1 and
``@solana/web3.js`` 1.x ``StakeProgram``), which the Solana family is tested against.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from solders.transaction import Transaction

ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = ROOT / "deploy" / "devnet" / "node_modules"
SCRIPT = Path(__file__).with_name("solana_reference.mjs")
PACKAGES = ("@solana-program/stake", "@solana/kit", "@solana/web3.js")


def signer_of(signed_tx: bytes) -> str:
    """The fee payer of a wire transaction whose every signature verifies (solders)."""
    tx = Transaction.from_bytes(signed_tx)
    tx.verify()
    assert bytes(tx) == signed_tx
    return str(tx.message.account_keys[0])


def tx_id(signed_tx: bytes) -> str:
    """A transaction's id: its first signature, in base58 (solders)."""
    return str(Transaction.from_bytes(signed_tx).signatures[0])


def _node_missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed (apt-get install nodejs npm)"
    missing = [p for p in PACKAGES if not (NODE_MODULES / p / "package.json").exists()]
    if missing:
        return f"npm packages {', '.join(missing)} are missing: run make setup"
    return None


def stake_instructions(*, vault: str, stake: str, vote: str, lamports: int) -> dict[str, Any]:
    """The reference stake instructions (``kit`` and ``web3`` keys, each by instruction name:
    program, data hex, accounts as [address, signer, writable]). Skips without node or the npm
    packages, except under CI, where that fails."""
    reason = _node_missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    request = json.dumps({"vault": vault, "stake": stake, "vote": vote, "lamports": str(lamports)})
    done = subprocess.run(
        ["node", str(SCRIPT)],
        input=request,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CUSTOS_NODE_MODULES": str(NODE_MODULES)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result
