"""The benchmarks as the README gives them: ``python bench/NAME.py`` from the repository root with
the project's venv, each answering ``--help``, leaving nothing behind. Nothing here is timed: a short
run checks that a bench starts and cleans up, not how fast it is."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.policy.document import parse_policy

ROOT = Path(__file__).resolve().parents[2]
BENCHES = sorted(p.name for p in (ROOT / "bench").glob("[!_]*.py"))
ETH = 10**18


def run_bench(name: str, *args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    """``python bench/NAME.py ARGS`` as the README says, its temporary files in ``tmp``."""
    env = {**os.environ, "TMPDIR": str(tmp)}
    env.pop("PYTHONPATH", None)  # as a person runs it: nothing but the script's own path set-up
    return subprocess.run(
        [sys.executable, f"bench/{name}", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_bench_is_found() -> None:
    assert BENCHES == ["audit.py", "policy.py", "signer.py", "workflow.py"]


@pytest.mark.parametrize("name", BENCHES)
def test_each_bench_answers_help(name: str, tmp_path: Path) -> None:
    done = run_bench(name, "--help", tmp=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: "), done.stdout
    assert not list(tmp_path.iterdir())


def test_the_signer_bench_runs_as_a_script_and_removes_its_token(tmp_path: Path) -> None:
    """It imports ``bench._grpc`` after parsing its arguments: ``--help`` alone would not see it fail."""
    done = run_bench("signer.py", "--seconds", "0.2", "--processes", "1", "--paths", "raw", tmp=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1].startswith("signer (sqlite): raw 1p "), done.stdout
    assert not list(tmp_path.iterdir())


def test_the_policy_bench_grpc_section_leaves_no_keys_behind(tmp_path: Path) -> None:
    """Its database and its PKI (the CA's and every service's private keys) are removed."""
    done = run_bench("policy.py", "grpc", "--seconds", "0.1", tmp=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "grpc      rules= 1000" in done.stdout, done.stdout
    assert not list(tmp_path.iterdir())


def test_the_policy_bench_names_its_sections_on_a_typo(tmp_path: Path) -> None:
    done = run_bench("policy.py", "grcp", tmp=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        "policy.py: error: unknown section 'grcp' (choose from inprocess, grpc)"
    )


@pytest.mark.parametrize("stakes", [64, 65, 500])
def test_the_workflow_bench_policy_lets_every_stake_of_the_run_through(stakes: int) -> None:
    """The demo policy allows 2048 ETH a day per vault: 64 stakes of 32 ETH, so a run of more
    intents (plus its warm-up) was denied part-way."""
    from bench.workflow import bench_policy

    limits = [r.limits.velocity for r in parse_policy(bench_policy(stakes)).rules if r.limits.velocity]
    assert limits and all(v.max_amount >= stakes * 32 * ETH for v in limits)
