"""The ``custos`` command: operate custos, serve a component, run the local stack.

Errors are one clear line on stderr and a non-zero exit, never a stack trace.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from services.cli.commands.admin import admin
from services.cli.commands.approvals import approve, reject
from services.cli.commands.audit import audit
from services.cli.commands.db import db
from services.cli.commands.intents import intents
from services.cli.commands.keys import keys
from services.cli.commands.people import people
from services.cli.commands.policy import policy
from services.cli.commands.reconcile import reconcile
from services.cli.context import OUTPUTS, CliContext, error_line, pass_cli, state_root
from services.runtime.errors import CustosError, Internal, InvalidArgument

SERVABLE = ("policy", "signer", "chain", "audit", "staking", "worker")
DEFAULT_STACK = "dev"


def _as_json(ctx: click.Context | None) -> bool:
    cli = ctx.find_object(CliContext) if ctx is not None else None
    return cli is not None and cli.json


def _fail(ctx: click.Context | None, error: CustosError) -> NoReturn:
    click.echo(error_line(error, as_json=_as_json(ctx)), err=True)
    sys.exit(2)


class CustosGroup(click.Group):
    """Turns errors into one line on stderr and exit code 2.

    Custos errors (local or from a service) print as ``error: CODE: message``;
    usage errors the same way with a pointer to ``--help``. Anything unexpected
    prints one INTERNAL line too (``CUSTOS_DEBUG=1`` shows the traceback).
    """

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as e:
            self._usage(e)
            raise

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CustosError as e:
            _fail(ctx, e)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as e:
            self._usage(e)
        except (click.ClickException, click.exceptions.Abort, click.exceptions.Exit):
            raise
        except Exception as e:
            if os.environ.get("CUSTOS_DEBUG"):
                raise
            _fail(ctx, Internal(f"{type(e).__name__}: {e} (CUSTOS_DEBUG=1 shows where)"))

    @staticmethod
    def _usage(e: click.UsageError) -> NoReturn:
        where = e.ctx.command_path if e.ctx is not None else "custos"
        _fail(e.ctx, InvalidArgument(f"{e.format_message()} (see {where} --help)"))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("custos")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


@click.group(cls=CustosGroup)
@click.version_option(_version(), "--version", prog_name="custos", message="%(prog)s %(version)s")
@click.option(
    "--stack",
    metavar="NAME",
    envvar="CUSTOS_STACK",
    help="Talk to the local stack NAME (its $CUSTOS_STATE_DIR/NAME/custos.yaml). Env: CUSTOS_STACK.",
)
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Settings file naming the endpoints and the CA. Default: $CUSTOS_CONFIG, else the dev stack's.",
)
@click.option(
    "--as",
    "person",
    envvar="CUSTOS_AS",
    help="Act as PERSON with their certificate from the PKI. Env: CUSTOS_AS.",
)
@click.option(
    "--cert", type=click.Path(dir_okay=False, path_type=Path), help="Your client certificate (PEM)."
)
@click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path), help="Its private key (PEM).")
@click.option(
    "--output",
    "-o",
    type=click.Choice(OUTPUTS),
    default="table",
    envvar="CUSTOS_OUTPUT",
    show_default=True,
    help="table for people, json for scripts. Env: CUSTOS_OUTPUT.",
)
@click.pass_context
def cli(
    ctx: click.Context,
    stack: str | None,
    config: Path | None,
    person: str | None,
    cert: Path | None,
    key_file: Path | None,
    output: str,
) -> None:
    """custos: custody and staking orchestration.

    \b
    Where: --config FILE, else --stack NAME, else $CUSTOS_CONFIG, else the dev stack.
    Who:   --as PERSON (their certificate in the stack's PKI), or --cert and --key-file
           (or CUSTOS_TLS__CERT / CUSTOS_TLS__KEY).

    \b
    custos --as alice intents submit STAKE --chain ethereum-devnet --vault vault-1 --amount 32ETH \\
        --generate-deposit
    custos --as olivia approve INTENT_ID --key olivia.pem
    custos --as alice intents watch INTENT_ID
    custos --as carol audit verify
    """
    default = state_root() / DEFAULT_STACK / "custos.yaml"
    if config is None and stack is None and "CUSTOS_CONFIG" not in os.environ and default.is_file():
        config = default.absolute()
    ctx.obj = CliContext(
        output=output, stack=stack, config=config, person=person, cert=cert, key_file=key_file
    )


cli.add_command(intents)
cli.add_command(approve)
cli.add_command(reject)
cli.add_command(policy)
cli.add_command(admin)
cli.add_command(keys)
cli.add_command(people)
cli.add_command(audit)
cli.add_command(reconcile)
cli.add_command(db)


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


def _stack(cli: CliContext, name: str | None) -> Any:
    from services.cli.devstack import Stack

    return Stack.named(state_root(), name or cli.stack or DEFAULT_STACK)


_stack_option = click.option(
    "--stack", "name", help=f"Stack name (its state folder); default {DEFAULT_STACK}."
)


@dev.command("up")
@_stack_option
@click.option("--no-devnet", is_flag=True, help="Do not start the Ethereum devnet.")
@click.option("--no-cosmos", is_flag=True, help="Do not start the Cosmos devnet.")
@click.option("--no-solana", is_flag=True, help="Do not start the Solana devnet.")
@click.option(
    "--postgres",
    metavar="URL",
    envvar="CUSTOS_DEV_POSTGRES",
    help="Use this PostgreSQL database (a superuser's URL), each service as its own role "
    "(custos db roles), instead of the stack's SQLite file. Env: CUSTOS_DEV_POSTGRES.",
)
@click.option(
    "--seed",
    is_flag=True,
    help="Then set up the demo's approvers, policy and a funded vault-1, ready for the README's examples.",
)
@pass_cli
def dev_up(
    cli: CliContext,
    name: str | None,
    no_devnet: bool,
    no_cosmos: bool,
    no_solana: bool,
    postgres: str | None,
    seed: bool,
) -> None:
    """Start Temporal, the devnets (Ethereum, Cosmos), every service and the worker; wait until healthy."""
    from services.cli import devstack

    if seed and no_devnet:
        raise InvalidArgument("--seed funds a vault on the devnet: drop --no-devnet")
    stack = _stack(cli, name)
    config = devstack.up(
        stack,
        with_devnet=not no_devnet,
        with_cosmos=not no_cosmos,
        with_solana=not no_solana,
        postgres=postgres,
    )
    if seed:
        from services.cli.scenario import seed as seed_stack

        try:
            asyncio.run(seed_stack(stack, click.echo))
        except BaseException:
            devstack.down(stack, log=lambda *_: None)
            raise
    click.echo(f"stack {stack.root.name} is up; state in {stack.root}")
    for svc, addr in config["endpoints"].items():
        click.echo(f"  {svc:<8} {addr}")
    click.echo(
        f"  temporal {config['temporal']['address']}  (UI http://127.0.0.1:{config['dev']['temporal_ui_port']})"
    )
    click.echo(
        f"use it with: custos --stack {stack.root.name} --as PERSON ...  (or CUSTOS_CONFIG={stack.config})"
    )


@dev.command("status")
@_stack_option
@click.option("--output", type=click.Choice(OUTPUTS), help="Default: the global --output.")
@pass_cli
def dev_status(cli: CliContext, name: str | None, output: str | None) -> None:
    """Health and reflected services of each service of a running stack."""
    from services.cli import devstack

    stack = _stack(cli, name)
    if not stack.config.is_file():
        raise InvalidArgument(
            f"stack {stack.root.name} is not set up: custos dev up --stack {stack.root.name}"
        )
    rows = asyncio.run(devstack.status(stack))
    if (output or cli.output) == "json":
        click.echo(json.dumps(rows, indent=2))
    else:
        for r in rows:
            click.echo(f"{r['service']:<8} {r['address']:<22} {r['status']:<12} {', '.join(r['services'])}")
    if any(r["status"] != "SERVING" for r in rows):
        sys.exit(1)


@dev.command("down")
@_stack_option
@pass_cli
def dev_down(cli: CliContext, name: str | None) -> None:
    """Stop every process of the stack."""
    from services.cli import devstack

    stopped = devstack.down(_stack(cli, name))
    click.echo(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


def main() -> None:
    cli(prog_name="custos")


if __name__ == "__main__":
    main()
