"""Solana staking rewards over warped epochs on a real Agave 1.18 bank (solders 0.21's bankrun).

``bankrun/rewards.py`` runs in ``.venv-bankrun`` (solders 0.21 cannot share ``.venv`` with 0.29):
it stakes 300k SOL with the Solana family's own transactions, warps epoch by epoch while the
vote account earns credits, deactivates, and withdraws once the bank allows it; it prints what
it saw as JSON. Here we check what a custodian relies on: the stake warms up at the cluster's rate
and then earns every epoch, the amounts are Solana's inflation, and the withdrawal is refused while
cooling down and then returns the principal plus every reward to the vault.

Without ``.venv-bankrun`` (``make setup`` makes it) the tests skip, except under ``CI=true``.
"""

from __future__ import annotations

import json
import os
import subprocess
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from services.families.solana.instructions import STAKE_ACCOUNT_RENT_EXEMPT

REPO = Path(__file__).resolve().parents[2]
BANKRUN_PYTHON = REPO / ".venv-bankrun" / "bin" / "python"
SCRIPT = Path(__file__).parent / "bankrun" / "rewards.py"
SOL = 10**9
#: The cluster's warmup and cooldown rate (new_warmup_cooldown_rate, on with every feature).
WARMUP_RATE = 0.09
#: solana-program-test's genesis: the payer's 1M SOL, and the genesis validator's vote and
#: stake accounts with 1M SOL each (create_genesis_config_with_leader_ex).
GENESIS_CAPITALIZATION = 3_000_000 * SOL
#: Its slots: 64 ticks of 100 us (PohConfig::new_sleep in ProgramTest), over a 365.242199-day year.
SLOTS_PER_YEAR = 365.242199 * 24 * 3600 / (64 * 100e-6)
#: Inflation::full() in its first year: 8%, of which 5% goes to the foundation, the rest to validators.
VALIDATOR_RATE = 0.08 * (1 - 0.05)


@pytest.fixture(scope="module")
def run() -> dict[str, Any]:
    """The rewards run's JSON (one bank per module: the run takes about a second)."""
    if not BANKRUN_PYTHON.exists():
        reason = (
            f"{BANKRUN_PYTHON.relative_to(REPO)} is missing: `make setup` creates it (solders 0.21, bankrun)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    done = subprocess.run(
        [str(BANKRUN_PYTHON), str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "RUST_LOG": "error"},
    )
    assert done.returncode == 0, f"the bankrun script failed: {done.stderr[-2000:]}"
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def by_epoch(run: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {record["epoch"]: record for record in run["epochs"]}


def deactivation_epoch(run: dict[str, Any]) -> int:
    return int(next(r["epoch"] for r in run["epochs"] if r["deactivation_epoch"] is not None))


def test_the_stake_step_funds_the_seeded_account_with_the_intent_s_amount_and_delegates_it(
    run: dict[str, Any],
) -> None:
    assert set(run["transactions"]) == {"stake", "deactivate", "withdraw"}
    first = run["epochs"][0]
    # Funded with the intent's amount; all of it above the rent-exempt reserve is delegated.
    assert first["stake_lamports"] == run["stake_amount"] == 300_000 * SOL
    assert first["stake_lamports"] - first["delegated_stake"] == STAKE_ACCOUNT_RENT_EXEMPT
    assert first["activation_epoch"] == first["epoch"] == 0
    assert first["vault_lamports"] == run["funding"] - run["stake_amount"] - run["fee_per_transaction"]


def test_the_stake_warms_up_over_several_epochs_at_the_cluster_rate_then_is_active(
    run: dict[str, Any],
) -> None:
    epochs = by_epoch(run)
    first = epochs[0]
    assert (first["effective"], first["activating"]) == (0, first["delegated_stake"])
    warming = [e for e, r in epochs.items() if r["activating"]]
    assert warming == list(range(len(warming))) and len(warming) >= 3, warming
    for epoch in warming[1:]:
        newly = epochs[epoch]["effective"] - epochs[epoch - 1]["effective"]
        # Each epoch at most 9% of the cluster's effective stake of the epoch before becomes
        # effective (plus the reward just paid, which is staked at once).
        limit = WARMUP_RATE * epochs[epoch - 1]["cluster"]["effective"] + epochs[epoch]["reward"]
        assert 0.99 * limit <= newly <= limit + 1, (epoch, newly, limit)
    active = range(warming[-1] + 1, deactivation_epoch(run))
    assert len(active) >= 2
    for epoch in active:
        record = epochs[epoch]
        assert (record["activating"], record["deactivating"]) == (0, 0)
        assert record["effective"] == record["delegated_stake"]


def test_rewards_accrue_every_epoch_once_the_stake_is_effective(run: dict[str, Any]) -> None:
    epochs = run["epochs"]
    # Paid at the start of epoch 1 for epoch 0, when the stake was only activating: nothing.
    assert epochs[1]["reward"] == 0 and epochs[1]["stake_lamports"] == run["stake_amount"]
    assert len(epochs[2:]) >= 6
    for before, record in pairwise(epochs[1:]):
        assert record["stake_lamports"] > before["stake_lamports"]
        assert record["reward"] == record["stake_lamports"] - before["stake_lamports"] > 0
        # Rewards are staked: the delegation grows by the same amount.
        assert record["delegated_stake"] - before["delegated_stake"] == record["reward"]


def test_each_epoch_s_rewards_are_solana_s_validator_inflation_less_the_commission(
    run: dict[str, Any],
) -> None:
    """Our vote account is the only one with credits, so each epoch's validator inflation is
    paid to it and its stake: ``rate x capitalization x epoch slots / slots a year``."""
    epochs = run["epochs"]
    for before, record in pairwise(epochs[1:]):
        paid = record["reward"] + record["commission_reward"]
        expected = VALIDATOR_RATE * GENESIS_CAPITALIZATION * before["slots"] / SLOTS_PER_YEAR
        assert paid == pytest.approx(expected, rel=1e-3), record["epoch"]
        assert record["commission_reward"] == pytest.approx(paid * run["commission"] / 100, abs=1)


def test_the_withdrawal_is_refused_while_cooling_down_then_returns_principal_plus_rewards(
    run: dict[str, Any],
) -> None:
    epochs = by_epoch(run)
    deactivated = deactivation_epoch(run)
    cooling = [e for e, r in epochs.items() if r["deactivating"]]
    assert cooling[0] == deactivated and len(cooling) >= 2
    assert epochs[deactivated]["deactivating"] == epochs[deactivated]["delegated_stake"]
    assert [epochs[e]["deactivating"] for e in cooling] == sorted(
        (epochs[e]["deactivating"] for e in cooling), reverse=True
    )
    refused = run["withdraw_refusals"]
    assert [r["epoch"] for r in refused] == cooling
    assert all("InsufficientFunds" in r["error"] for r in refused)

    final = run["final"]
    assert final["epoch"] == cooling[-1] + 1
    rewards = sum(r["reward"] for r in run["epochs"])
    assert rewards > 0
    assert final["withdrawn"] == run["stake_amount"] + rewards == epochs[final["epoch"]]["stake_lamports"]
    assert final["stake_account_lamports"] == 0
    fees = 3 * run["fee_per_transaction"]  # stake, deactivate, withdraw: one signature each
    assert final["vault_lamports"] == run["funding"] - fees + rewards
