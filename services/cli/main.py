"""The ``custos`` command: serve a component, run the local stack, and operate custos.

Errors are one clear line on stderr and a non-zero exit, never a stack trace.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from services.runtime.errors import CustosError

SERVABLE = ("policy", "signer", "chain", "audit", "staking", "worker")


def _state_root() -> Path:
    return Path(os.environ.get("CUSTOS_STATE_DIR", ".custos"))


class CustosGroup(click.Group):
    """Turns custos errors into one line on stderr and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CustosError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)


@click.group(cls=CustosGroup)
def cli() -> None:
    """custos: custody and staking orchestration."""


@cli.command()
@click.argument("component", type=click.Choice(SERVABLE))
def serve(component: str) -> None:
    """Run one service (or the Temporal worker) in the foreground."""
    if component == "worker":
        from workflows.staking.worker import main as worker_main

        worker_main()
        return
    from services.runtime.runner import main as run

    run(component)


@cli.group(cls=CustosGroup)
def dev() -> None:
    """Start and stop the local stack (each component its own process)."""


def _stack(name: str) -> Any:
    from services.cli.devstack import Stack

    return Stack.named(_state_root(), name)


@dev.command("up")
@click.option("--stack", "name", default="dev", show_default=True, help="Stack name (its state folder).")
@click.option("--no-devnet", is_flag=True, help="Do not start the Ethereum devnet.")
def dev_up(name: str, no_devnet: bool) -> None:
    """Start Temporal, the devnet, every service and the worker; wait until healthy."""
    from services.cli import devstack

    stack = _stack(name)
    config = devstack.up(stack, with_devnet=not no_devnet)
    click.echo(f"stack {name} is up; state in {stack.root}")
    for svc, addr in config["endpoints"].items():
        click.echo(f"  {svc:<8} {addr}")
    click.echo(
        f"  temporal {config['temporal']['address']}  (UI http://127.0.0.1:{config['dev']['temporal_ui_port']})"
    )
    click.echo(f"use it with: export CUSTOS_CONFIG={stack.config}")


@dev.command("status")
@click.option("--stack", "name", default="dev", show_default=True)
@click.option("--output", type=click.Choice(["table", "json"]), default="table")
def dev_status(name: str, output: str) -> None:
    """Health and reflected services of each service of a running stack."""
    from services.cli import devstack

    rows = asyncio.run(devstack.status(_stack(name)))
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
    else:
        for r in rows:
            click.echo(f"{r['service']:<8} {r['address']:<22} {r['status']:<12} {', '.join(r['services'])}")
    if any(r["status"] != "SERVING" for r in rows):
        sys.exit(1)


@dev.command("down")
@click.option("--stack", "name", default="dev", show_default=True)
def dev_down(name: str) -> None:
    """Stop every process of the stack."""
    from services.cli import devstack

    stopped = devstack.down(_stack(name))
    click.echo(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


def main() -> None:
    cli(prog_name="custos")


if __name__ == "__main__":
    main()
