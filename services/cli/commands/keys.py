"""``custos keys create | list``: vault keys generated and held in the HSM."""

from __future__ import annotations

from typing import Any

import click

from services.cli.context import CliContext, page_hint, paged, pass_cli, table, to_json
from services.pb.custos.signer.v1 import signer_pb2

ALGORITHMS = {"secp256k1": signer_pb2.KEY_ALGORITHM_SECP256K1, "ed25519": signer_pb2.KEY_ALGORITHM_ED25519}


def _addresses(key: dict[str, Any], chain: str | None = None) -> str:
    return ", ".join(f"{a['chain']} {a['address']}" for a in key["addresses"] if chain in (None, a["chain"]))


def _key_rows(keys: list[dict[str, Any]], chain: str | None = None) -> list[str]:
    rows = [(k["key_id"], k["vault_id"], k["algorithm"], k["purpose"], _addresses(k, chain)) for k in keys]
    return table(rows, ("KEY", "VAULT", "ALGORITHM", "PURPOSE", "ADDRESSES"))


@click.group("keys")
def keys() -> None:
    """Create and list HSM keys (operators)."""


@keys.command("create")
@click.option("--vault", required=True, help="The vault the key is for, e.g. vault-1.")
@click.option("--chain", help="Show the key's address on this chain.")
@click.option("--algorithm", type=click.Choice(sorted(ALGORITHMS)), default="secp256k1", show_default=True)
@click.option("--label", default="", help="HSM label (default: derived from the vault).")
@pass_cli
def create(cli: CliContext, vault: str, chain: str | None, algorithm: str, label: str) -> None:
    """Generate a vault key inside the HSM (sensitive, never extractable).

    \b
    custos --as ops keys create --vault vault-1 --chain ethereum-devnet
    """
    from services.signer.client import SignerClient

    req = signer_pb2.CreateKeyRequest(
        vault_id=vault, algorithm=ALGORITHMS[algorithm], purpose=signer_pb2.KEY_PURPOSE_VAULT, label=label
    )

    key = to_json(cli.call(SignerClient, "CreateKey", req).key)
    cli.emit({"key": key}, lambda d: _key_rows([d["key"]], chain))


@keys.command("list")
@click.option("--vault", default="", help="Only this vault's keys.")
@paged()
@pass_cli
def list_(cli: CliContext, vault: str, page_size: int, page_token: str) -> None:
    """HSM keys with their addresses."""
    from services.signer.client import SignerClient

    req = signer_pb2.ListKeysRequest(vault_id=vault, page_size=page_size, page_token=page_token)

    resp = cli.call(SignerClient, "ListKeys", req)
    data = {"keys": [to_json(k) for k in resp.keys], "next_page_token": resp.next_page_token}
    cli.emit(data, lambda d: _key_rows(d["keys"]) + page_hint(d))
