"""``custos people add | list | new-key``: people's certificates and approver key files.

A person's certificate (identity and roles) comes from the stack's CA; an approver's
signing key is made on the approver's own machine (``new-key``, encrypted under a
passphrase) and only its public half goes to the admins, who register it through the
admin quorum (``custos admin register-approver``, ``add-key``, ``revoke-key``).

    custos people add paula --role approver
    custos people new-key paula.pem                  # paula.pem (encrypted) and paula.pub
    custos --as dave admin register-approver paula --group operations --public-key paula.pub --key dave.pem
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click

from services.cli.context import CliContext, fields, pass_cli, table
from services.runtime.errors import FailedPrecondition, InvalidArgument

#: The roles a person may hold (a service's ``svc:*`` roles are the PKI's own, never a person's).
PERSON_ROLES = ("initiator", "approver", "compliance", "policy-admin", "operator")
#: Certificates of the PKI that are not people's.
_NOT_PEOPLE = frozenset({"ca", "policy", "signer", "chain", "audit", "staking", "worker"})
_NAME = re.compile(r"[a-z][a-z0-9._-]{0,62}")


def _pki(cli: CliContext) -> Path:
    pki = cli.settings().tls.pki_dir
    if pki is None or not (pki / "ca.crt").is_file():
        raise FailedPrecondition(f"no CA in {pki}: point --stack or --config at a stack (custos dev up)")
    return pki


@click.group("people")
def people() -> None:
    """People's certificates (from the stack's CA) and approver key files."""


@people.command("add")
@click.argument("name")
@click.option(
    "--role",
    "roles",
    multiple=True,
    required=True,
    type=click.Choice(PERSON_ROLES),
    help="A role the certificate carries (repeatable).",
)
@click.option("--reissue", is_flag=True, help="Replace the person's certificate (e.g. to change roles).")
@pass_cli
def add(cli: CliContext, name: str, roles: tuple[str, ...], reissue: bool) -> None:
    """Issue NAME's client certificate with ROLES from the stack's CA.

    It names who they are (CN) and what they may call (OU roles); approving takes a
    registered approver key too (custos people new-key, custos admin register-approver).
    """
    from services.runtime.pki import ensure_ca, issue

    if not _NAME.fullmatch(name) or name in _NOT_PEOPLE:
        raise InvalidArgument(
            f"{name!r} is not a person's name: lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter, not a service's"
        )
    pki = _pki(cli)
    if (pki / f"{name}.crt").exists() and not reissue:
        raise FailedPrecondition(f"{name} already has a certificate in {pki} (--reissue replaces it)")
    if not (pki / "ca.key").is_file():
        raise FailedPrecondition(f"the CA's key is not in {pki}: your organisation's CA issues certificates")
    ordered = tuple(r for r in PERSON_ROLES if r in roles)
    issued = issue(pki, name, ordered, ca=ensure_ca(pki))
    data = {"person": name, "roles": list(ordered), "cert": str(issued.cert), "key": str(issued.key)}
    cli.emit(
        data,
        lambda d: [
            f"{d['person']}: certificate with roles {', '.join(d['roles'])} from {pki / 'ca.crt'}",
            f"act as them: custos --as {d['person']} ...  ({d['cert']})",
        ],
    )


@people.command("list")
@pass_cli
def list_(cli: CliContext) -> None:
    """People with a certificate in the stack's PKI, their roles and its expiry."""
    from cryptography import x509

    from services.runtime.pki import identity_of

    pki = _pki(cli)
    rows: list[dict[str, Any]] = []
    for cert in sorted(pki.glob("*.crt")):
        if cert.stem in _NOT_PEOPLE:
            continue
        pem = cert.read_bytes()
        name, roles = identity_of(pem)
        expires = x509.load_pem_x509_certificate(pem).not_valid_after_utc
        rows.append({"person": name, "roles": sorted(roles), "expires": expires.strftime("%Y-%m-%d")})
    cli.emit(
        {"people": rows},
        lambda d: table(
            [(r["person"], ", ".join(r["roles"]), r["expires"]) for r in d["people"]],
            ("PERSON", "ROLES", "EXPIRES"),
        ),
    )


@people.command("new-key")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--passphrase-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A file holding the passphrase (else $CUSTOS_KEY_PASSPHRASE, else a prompt).",
)
@click.option("--no-passphrase", is_flag=True, help="Leave the key file unencrypted (not advised).")
@pass_cli
def new_key(cli: CliContext, file: Path, passphrase_file: Path | None, no_passphrase: bool) -> None:
    """Make an approver's Ed25519 key: FILE (owner-only, encrypted) and its public key FILE.pub.

    Give the .pub to the admins (custos admin register-approver, or add-key to rotate: then
    revoke-key the old one). The private key never leaves this machine.
    """
    from services.cli.people import passphrase_for, write_new_key
    from services.policy.domain import key_id_for
    from services.policy.evidence import public_key_der

    if no_passphrase and passphrase_file is not None:
        raise InvalidArgument("give --passphrase-file or --no-passphrase, not both")
    passphrase = None if no_passphrase else passphrase_for(file, passphrase_file, confirm=True)
    key = write_new_key(file, passphrase)
    data = {
        "key_file": str(file),
        "public_key_file": str(file.with_suffix(".pub")),
        "key_id": key_id_for(public_key_der(key)),
        "encrypted": passphrase is not None,
    }
    cli.emit(
        data,
        lambda d: fields(
            [
                ("key file", d["key_file"] + ("" if d["encrypted"] else " (NOT encrypted)")),
                ("public key", d["public_key_file"]),
                ("key id", d["key_id"]),
            ]
        ),
    )
