"""The first hour of a new user, with the CLI alone: exactly the commands the README's CLI section
shows, each its own ``custos`` process, from ``custos dev up --seed`` to a CONFIRMED intent.

A new person gets a certificate and an encrypted approver key, is registered through the admin
quorum, the example policy is activated, and an intent is submitted, found in the approver's
inbox, approved by two people (one with the passphrase-protected key) and watched to CONFIRMED.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.cli import devstack

EXAMPLE_POLICY = Path(__file__).resolve().parents[2] / "deploy" / "policies" / "example.yaml"
KEYS = ".custos/dev/approver-keys"  # where `dev up --seed` leaves the demo people's key files


class Desk:
    """A shell in an empty folder: ``custos`` as the README shows it, state in ``./.custos``."""

    def __init__(self, home: Path) -> None:
        self.home = home
        exe = shutil.which("custos", path=str(Path(sys.executable).parent))
        self.argv0 = [exe] if exe else [sys.executable, "-m", "services.cli.main"]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTOS_")}

    def popen(self, line: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*self.argv0, *line.split()],
            cwd=self.home,
            env={**self.env, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, line: str, *, timeout: float = 60, env: dict[str, str] | None = None) -> str:
        proc = self.popen(line, env)
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, f"custos {line}: exit {proc.returncode}\n{err}\n{out}"
        return out


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Desk]:
    desk = Desk(tmp_path)
    try:
        yield desk
    finally:
        stack = devstack.Stack.named(tmp_path / ".custos", "dev")
        started = stack.running()
        devstack.down(stack)
        assert devstack.leftover(started) == [], "dev down left processes behind"


def change_id(out: str) -> str:
    return str(json.loads(out)["change"]["request"]["change_id"])


def test_from_dev_up_to_a_confirmed_intent_with_the_readme_commands(desk: Desk) -> None:
    up = desk.run("dev up --seed", timeout=240)
    assert "stack dev is up" in up and "vault-1 key generated in the HSM" in up, up

    # a new approver: certificate from the stack's CA, her own encrypted key, registered by the quorum
    assert "paula: certificate with roles approver" in desk.run("people add paula --role approver")
    secret = {"CUSTOS_KEY_PASSPHRASE": "paula's long passphrase"}
    made = desk.run("people new-key paula.pem", env=secret)
    assert "NOT encrypted" not in made and b"ENCRYPTED" in (desk.home / "paula.pem").read_bytes()
    proposed = desk.run(
        "--as dave -o json admin register-approver paula --group operations --public-key paula.pub "
        f"--key {KEYS}/dave.pem"
    )
    applied = desk.run(f"--as erin admin approve {change_id(proposed)} --key {KEYS}/erin.pem")
    assert "applied as governance entry" in applied, applied

    # the example policy, activated by the admin quorum: it names people the seed created
    opened = desk.run(f"--as dave -o json policy propose {EXAMPLE_POLICY} --key {KEYS}/dave.pem")
    applied = desk.run(f"--as erin admin approve {change_id(opened)} --key {KEYS}/erin.pem")
    assert "applied" in applied, applied
    shown = json.loads(desk.run("--as dave -o json policy show"))["policy"]
    assert shown["status"] == "ACTIVE" and shown["document"] == EXAMPLE_POLICY.read_text()

    # submit from the seeded, funded vault; it lands in paula's inbox
    submitted = desk.run(
        "--as alice -o json intents submit STAKE --chain ethereum-devnet --vault vault-1 "
        "--amount 32ETH --generate-deposit"
    )
    iid = str(json.loads(submitted)["intent"]["intent_id"])
    watch = desk.popen(f"--as alice intents watch {iid} --timeout 120")
    inbox: list[str] = []
    for _ in range(100):  # until the policy has evaluated it
        inbox = desk.run("--as paula intents list --needs-me").splitlines()
        if any(iid in line for line in inbox):
            break
    assert any(line.startswith(iid) and "0 of 2 operations" in line for line in inbox), inbox
    assert f"{iid}: needs operations 2 more of " in inbox[-1] and "paula" in inbox[-1], inbox
    # rita approves for risk, which a 32 ETH intent does not need
    assert desk.run("--as rita intents list --needs-me").strip() == "nothing awaits rita"

    # two approvals, one with the passphrase-protected key; the watch shows each and the end
    approved = desk.run(f"--as paula approve {iid} --key paula.pem", env=secret)
    assert "quorum met: no" in approved, approved
    assert iid not in desk.run("--as paula intents list --needs-me")
    approved = desk.run(f"--as olivia approve {iid} --key {KEYS}/olivia.pem")
    assert "quorum met: yes" in approved, approved
    out, err = watch.communicate(timeout=150)
    assert watch.returncode == 0, (out, err)
    lines = out.splitlines()
    states = [line.split()[2] for line in lines if line.split()[0].isdigit()]
    assert states == [
        "SUBMITTED", "AWAITING_POLICY", "AWAITING_APPROVALS", "APPROVED", "SIGNING", "BROADCAST", "CONFIRMED",
    ]  # fmt: skip
    said = "\n".join(lines)
    assert re.search(r"waiting for approvals: [01] of 2 operations \(needs operations", said), said
    assert re.search(r"paula approved: 1 of 2 operations\n", said), said
    assert "waiting for approvals: 1 of 2 operations (needs operations 1 more of " in said, said
    assert re.search(r"olivia approved: 2 of 2 operations\n", said), said
    assert said.index("olivia approved") < said.index("APPROVED  ") < said.index("CONFIRMED")

    shown_intent = desk.run(f"--as alice intents show {iid}")
    assert "approvals  paula APPROVE, olivia APPROVE" in shown_intent, shown_intent
    assert "stopped:" in desk.run("dev down")
