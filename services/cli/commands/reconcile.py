"""``custos reconcile run | ack``: is every transaction of the vaults one custos signed?"""

from __future__ import annotations

import sys
from typing import Any

import click

from services.cli.context import CliContext, pass_cli, table, to_json
from services.pb.custos.chain.v1 import chain_pb2


@click.group("reconcile")
def reconcile() -> None:
    """Vaults' on-chain history against the signing records (operators, compliance)."""


def _alert_rows(vaults: list[dict[str, Any]]) -> list[str]:
    rows = [
        (
            a["alert_id"],
            a["kind"],
            a["vault_id"],
            a["chain"],
            a["nonce"],
            (a.get("seen") or {}).get("tx_hash") or "(not identified)",
        )
        for v in vaults
        for a in v["alerts"]
    ]
    return ["", *table(rows, ("ALERT", "KIND", "VAULT", "CHAIN", "NONCE", "SEEN"))] if rows else []


@reconcile.command("run")
@click.option("--vault", default="", help="Only this vault's keys.")
@click.option("--chain", default="", help="Only this chain.")
@pass_cli
def run_(cli: CliContext, vault: str, chain: str) -> None:
    """Reconcile now; lists each vault key's status and its open alerts (exit 1 if any).

    \b
    custos --as ops reconcile run --vault vault-1
    """
    from services.chain.client import ChainClient

    resp = cli.call(
        ChainClient, "ReconcileVaults", chain_pb2.ReconcileVaultsRequest(vault_id=vault, chain=chain)
    )
    data = {"vaults": [to_json(v) for v in resp.vaults]}

    def human(d: dict[str, Any]) -> list[str]:
        rows = [
            (
                v["vault_id"],
                v["chain"],
                v["address"],
                v["status"],
                v["confirmed_nonce"],
                v["pending_nonces"],
                v["error"],
            )
            for v in d["vaults"]
        ]
        heads = ("VAULT", "CHAIN", "ADDRESS", "STATUS", "CONFIRMED", "PENDING", "ERROR")
        return table(rows, heads) + _alert_rows(d["vaults"])

    cli.emit(data, human)
    if any(v.status == chain_pb2.RECONCILE_STATUS_ALERT for v in resp.vaults):
        sys.exit(1)


@reconcile.command("ack")
@click.argument("alert_id")
@click.option("--reason", required=True, help="What was found and done (recorded in the audit trail).")
@pass_cli
def ack(cli: CliContext, alert_id: str, reason: str) -> None:
    """Acknowledge an alert once it is dealt with (operators).

    \b
    custos --as ops reconcile ack alert_… --reason "INC-42: HSM PIN rotated, key retired"
    """
    from services.chain.client import ChainClient

    req = chain_pb2.AcknowledgeReconcileAlertRequest(alert_id=alert_id, reason=reason)
    alert = to_json(cli.call(ChainClient, "AcknowledgeReconcileAlert", req).alert)
    cli.emit(
        {"alert": alert},
        lambda d: [f"{d['alert']['alert_id']} acknowledged by {d['alert']['acknowledged_by']}"],
    )
