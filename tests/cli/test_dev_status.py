"""``custos dev status`` on a real stack: every service, Temporal, the worker and the chain node;
and ``custos dev up`` honouring the caller's telemetry and log settings."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from services.cli import devstack
from services.cli.main import cli


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devstack.Stack]:
    mp = pytest.MonkeyPatch()
    mp.setenv("CUSTOS_TELEMETRY__EXPORTER", "console")
    mp.setenv("CUSTOS_LOG_FORMAT", "json")
    stack = devstack.Stack.named(tmp_path_factory.mktemp("status-stack"), "status")
    try:
        devstack.up(stack)
    finally:
        mp.undo()
    started = stack.running()
    try:
        yield stack
    finally:
        devstack.down(stack)
        assert devstack.leftover(started) == []


def _rows(stack: devstack.Stack) -> dict[str, dict[str, object]]:
    return {r["service"]: r for r in asyncio.run(devstack.status(stack))}


def test_dev_up_hands_its_telemetry_and_log_settings_to_every_process(stack: devstack.Stack) -> None:
    settings = stack.settings()
    assert settings["telemetry"]["exporter"] == "console" and settings["log_format"] == "json"
    for name in ("policy", "staking", "worker"):
        first = (stack.logs / f"{name}.log").read_text().splitlines()
        lines = [json.loads(line) for line in first if line.startswith('{"ts"')]
        messages = [line["message"] for line in lines]
        assert f"telemetry: console exporter for custos-{name}" in messages, (name, first[:5])


def test_status_shows_temporal_the_worker_and_the_node_then_what_is_down(stack: devstack.Stack) -> None:
    rows = _rows(stack)
    chain = stack.settings()["chains"][0]["name"]
    for name in ("policy", "signer", "chain", "audit", "staking", "temporal", "worker", f"node {chain}"):
        assert rows[name]["status"] == "SERVING", rows[name]
    result = CliRunner().invoke(
        cli, ["dev", "status", "--stack", "status", "--output", "json"], env=_env(stack)
    )
    assert result.exit_code == 0, result.output

    devstack.kill(stack, "worker")
    assert _rows(stack)["worker"]["status"] == "DOWN"
    result = CliRunner().invoke(cli, ["dev", "status", "--stack", "status"], env=_env(stack))
    assert result.exit_code == 1 and "worker" in result.output

    devstack.kill(stack, "anvil")
    assert _rows(stack)[f"node {chain}"]["status"] == "UNREACHABLE"
    deadline = time.monotonic() + 30  # the chain service's probe: every 5 s, two strikes
    while _rows(stack)["chain"]["status"] != "NOT_SERVING":
        assert time.monotonic() < deadline, "the chain service kept answering SERVING without its node"
        time.sleep(1)


def _env(stack: devstack.Stack) -> dict[str, str]:
    return {"CUSTOS_STATE_DIR": str(Path(stack.root).parent)}
