"""``custos admin``: governed changes to the approver registry and the active policy.

Every change is signed on the admin's machine with their key file (pinned in the
trust root of every verifier): the proposer signs when proposing, ``quorum`` other
admins approve, and only then does the change apply. Revoking a key takes one
admin and applies at once.

    custos --as dave admin register-approver olivia --group operations --public-key olivia.pub --key dave.pem
    custos --as erin admin approve chg-... --key erin.pem
    custos --as dave admin revoke-key olivia k1234... --reason "laptop lost" --key dave.pem
    custos --as dave admin anchor     # the signer anchors what it could not be reached for
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from services.cli.context import (
    CliContext,
    fields,
    page_hint,
    paged,
    pass_cli,
    passphrase_option,
    run,
    table,
    to_json,
)
from services.policy.governance import (
    AddApproverKey,
    Change,
    ChangeState,
    RegisterApprover,
    RevokeApproverKey,
    SetApproverGroups,
)
from services.runtime.errors import InvalidArgument
from services.runtime.intent import Decision

KEY_HELP = (
    "Your admin key file (PEM, Ed25519 or P-256), as pinned in the trust root. Env: CUSTOS_APPROVER_KEY."
)
_STATES = {s.value.lower(): s for s in ChangeState}

_key = click.option(
    "--key",
    "key_file",
    required=True,
    envvar="CUSTOS_APPROVER_KEY",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=KEY_HELP,
)


def _key_option(f: Any) -> Any:
    """``--key FILE`` and, for an encrypted one, ``--passphrase-file``."""
    return _key(passphrase_option(f))


def change_lines(c: dict[str, Any]) -> list[str]:
    req = c["request"]
    signed = ", ".join(
        f"{s['approver_id']}{'' if s['decision'] == 'APPROVE' else ' (reject)'}" for s in c["signatures"]
    )
    return fields(
        [
            ("change", req["change_id"]),
            ("what", c["summary"]),
            ("state", c["state"]),
            ("proposed by", req["proposer"]),
            ("signed by", signed or "nobody"),
            ("still needed", str(c["missing"]) if c["state"] == "PROPOSED" else ""),
            ("expires", req["expires_at"]),
            ("log entry", c["entry_sequence"] or ""),
            ("anchored", _anchoring(c) if c["state"] == "APPLIED" else ""),
            ("reason", c["reason"]),
            ("digest", c["digest"]),
        ]
    )


def _anchoring(c: dict[str, Any]) -> str:
    """Whether the signer holds the change's entry (so it can no longer be cut from the log)."""
    if c["anchored"]:
        return f"yes: the signer holds the log through entry {c['signer_head_sequence']}"
    why = f": {c['anchor_error']}" if c["anchor_error"] else " (as far as the policy service knows)"
    return f"NOT YET in the signer{why}; run `custos admin anchor`"


def _outcome(c: dict[str, Any]) -> str:
    cid = c["request"]["change_id"]
    if c["state"] == "APPLIED":
        return (
            f"{cid} applied as governance entry {c['entry_sequence']}: {c['summary']}\n"
            f"anchored in the signer: {_anchoring(c)}"
        )
    if c["state"] == "PROPOSED":
        need = c["missing"]
        return f"{cid} open: {c['summary']} ({need} more admin approval{'s' if need != 1 else ''} needed)"
    return f"{cid} {c['state']}: {c['summary']}" + (f" ({c['reason']})" if c["reason"] else "")


def public_key_file(path: Path) -> tuple[Any, bytes]:
    """(scheme, DER SPKI) of a public key file: PEM (PUBLIC KEY or a private key) or DER."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        PublicFormat,
        load_der_public_key,
        load_pem_private_key,
        load_pem_public_key,
    )

    from services.policy.domain import SignatureScheme

    try:
        data = path.read_bytes()
    except OSError as e:
        raise InvalidArgument(f"cannot read {path}: {e.strerror}") from None
    try:
        if b"PRIVATE KEY" in data:
            private = load_pem_private_key(data, password=None)
            public = private.public_key()
        else:
            public = (
                load_pem_public_key(data) if data.lstrip().startswith(b"-----") else load_der_public_key(data)
            )
    except (ValueError, TypeError):
        raise InvalidArgument(f"{path} is not a PEM or DER public key") from None
    if isinstance(public, ed25519.Ed25519PublicKey):
        scheme = SignatureScheme.ED25519
    elif isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, ec.SECP256R1):
        scheme = SignatureScheme.ECDSA_P256
    else:
        raise InvalidArgument(f"{path} is neither an Ed25519 nor a P-256 key")
    return scheme, public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def propose(cli: CliContext, change: Change, key_file: Path) -> None:
    """Proposes ``change`` as the caller, signed with ``key_file``, and prints where it stands."""
    from services.cli.people import load_key
    from services.policy.client import PolicyClient

    key = load_key(key_file, cli.passphrase_file)

    async def go() -> dict[str, Any]:
        async with cli.client(PolicyClient) as policy:
            return {"change": to_json(await policy.propose_change(change, key, proposer=cli.identity()))}

    data = run(go())
    cli.emit(data, lambda d: [_outcome(d["change"])])


@click.group("admin")
def admin() -> None:
    """Governed changes: approvers, their keys and groups, the active policy."""


@admin.command("trust")
@pass_cli
def trust(cli: CliContext) -> None:
    """The pinned admins and quorum, and the head of the governance log."""
    from services.policy.client import PolicyClient

    async def go() -> dict[str, Any]:
        async with cli.client(PolicyClient) as policy:
            return to_json(await policy.governance())

    def human(d: dict[str, Any]) -> list[str]:
        rows = [(a["admin_id"], a["key_id"], a["scheme"], a["until_entry"] or "") for a in d["admins"]]
        return [
            *fields(
                [
                    ("fingerprint", d["fingerprint"]),
                    ("quorum", f"the proposer and {d['quorum']} other admin(s)"),
                    ("log head", f"entry {d['head_sequence']}"),
                    ("active policy", d["active_policy_version"] or "none"),
                ]
            ),
            "",
            *table(rows, ("ADMIN", "KEY", "SCHEME", "UNTIL ENTRY")),
        ]

    cli.emit(run(go()), human)


@admin.command("changes")
@click.option("--state", type=click.Choice(sorted(_STATES)), default=None, help="Only changes in this state.")
@paged()
@pass_cli
def changes(cli: CliContext, state: str | None, page_size: int, page_token: str) -> None:
    """Governed changes, newest first."""
    from services.policy.client import PolicyClient

    async def go() -> dict[str, Any]:
        async with cli.client(PolicyClient) as policy:
            resp = await policy.list_changes(
                _STATES[state] if state else None, page_size=page_size, page_token=page_token
            )
        return {"changes": [to_json(c) for c in resp.changes], "next_page_token": resp.next_page_token}

    def human(d: dict[str, Any]) -> list[str]:
        rows = [
            (c["request"]["change_id"], c["state"], c["request"]["proposer"], c["missing"], c["summary"])
            for c in d["changes"]
        ]
        return table(rows, ("CHANGE", "STATE", "PROPOSER", "NEEDED", "WHAT")) + page_hint(d)

    cli.emit(run(go()), human)


@admin.command("show")
@click.argument("change_id")
@pass_cli
def show(cli: CliContext, change_id: str) -> None:
    """One governed change: what it does, who signed, where it stands."""
    from services.policy.client import PolicyClient

    async def go() -> dict[str, Any]:
        async with cli.client(PolicyClient) as policy:
            return {"change": to_json(await policy.get_change(change_id))}

    cli.emit(run(go()), lambda d: change_lines(d["change"]))


def _decide(cli: CliContext, change_id: str, key_file: Path, decision: Decision) -> None:
    from services.cli.people import load_key
    from services.policy.client import PolicyClient

    key = load_key(key_file, cli.passphrase_file)

    async def go() -> dict[str, Any]:
        async with cli.client(PolicyClient) as policy:
            got = await policy.decide_change(change_id, key, admin=cli.identity(), decision=decision)
            return {"change": to_json(got)}

    cli.emit(run(go()), lambda d: [_outcome(d["change"])])


@admin.command("approve")
@click.argument("change_id")
@_key_option
@pass_cli
def approve(cli: CliContext, change_id: str, key_file: Path) -> None:
    """Approve a governed change, signed with your admin key (over the digest recomputed here)."""
    _decide(cli, change_id, key_file, Decision.APPROVE)


@admin.command("reject")
@click.argument("change_id")
@_key_option
@pass_cli
def reject(cli: CliContext, change_id: str, key_file: Path) -> None:
    """Reject a governed change: one admin's rejection closes it."""
    _decide(cli, change_id, key_file, Decision.REJECT)


@admin.command("register-approver")
@click.argument("approver_id")
@click.option("--name", "display_name", default="", help="Display name (default: the id).")
@click.option("--group", "groups", multiple=True, help="A group the approver belongs to (repeatable).")
@click.option(
    "--public-key",
    "public_key",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The approver's public key (PEM or DER; Ed25519 or P-256).",
)
@_key_option
@pass_cli
def register_approver(
    cli: CliContext,
    approver_id: str,
    display_name: str,
    groups: tuple[str, ...],
    public_key: Path,
    key_file: Path,
) -> None:
    """Propose registering an approver with their first key."""
    scheme, der = public_key_file(public_key)
    propose(cli, RegisterApprover(approver_id, display_name or approver_id, groups, scheme, der), key_file)


@admin.command("add-key")
@click.argument("approver_id")
@click.option(
    "--public-key", "public_key", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@_key_option
@pass_cli
def add_key(cli: CliContext, approver_id: str, public_key: Path, key_file: Path) -> None:
    """Propose another key for an approver (rotation: revoke the old one once this applies)."""
    scheme, der = public_key_file(public_key)
    propose(cli, AddApproverKey(approver_id, scheme, der), key_file)


@admin.command("set-groups")
@click.argument("approver_id")
@click.option("--group", "groups", multiple=True, help="A group (repeatable); none removes every group.")
@_key_option
@pass_cli
def set_groups(cli: CliContext, approver_id: str, groups: tuple[str, ...], key_file: Path) -> None:
    """Propose replacing an approver's groups."""
    propose(cli, SetApproverGroups(approver_id, groups), key_file)


@admin.command("revoke-key")
@click.argument("approver_id")
@click.argument("key_id")
@click.option("--reason", required=True, help="Why (recorded in the log and the audit trail).")
@_key_option
@pass_cli
def revoke_key(cli: CliContext, approver_id: str, key_id: str, reason: str, key_file: Path) -> None:
    """Revoke an approver's key at once: approvals made with it stop counting (one admin suffices)."""
    propose(cli, RevokeApproverKey(approver_id, key_id, reason), key_file)


@admin.command("anchor")
@pass_cli
def anchor(cli: CliContext) -> None:
    """Have the signer anchor the governance log through its head.

    The policy service does it for each change it applies; a change applied while the
    signer could not be reached stays unanchored (an attacker who can write the database
    could still cut it from the log) until the next change, or this. Exit 1 if not anchored.
    """
    from services.policy.client import PolicyClient

    async def go() -> dict[str, Any]:
        async with cli.client(PolicyClient) as policy:
            return to_json(await policy.anchor_log())

    data = run(go())

    def human(d: dict[str, Any]) -> list[str]:
        if d["anchored"]:
            return [
                f"governance log anchored in the signer through entry {d['head_sequence']} "
                f"(the signer holds entry {d['signer_head_sequence']})"
            ]
        return [f"governance log NOT anchored through entry {d['head_sequence']}: {d['error']}"]

    cli.emit(data, human)
    if not data["anchored"]:
        raise SystemExit(1)


@admin.command("verify-log")
@click.option(
    "--trust",
    "trust_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Your own copy of the trust file (the admins' keys and quorum), not one the server gives you.",
)
@pass_cli
def verify_log(cli: CliContext, trust_file: Path) -> None:
    """Replay the governance log against a trust file you hold, as the signer does.

    Every entry must link to the one before and carry the signatures of its proposer and
    quorum; the replayed head must be the head the policy service reports. Exit 1 otherwise.
    """
    from services.policy.client import PolicyClient
    from services.policy.errors import GovernanceInvalid
    from services.policy.governance import GovernedState, read_trust_file

    trust = read_trust_file(trust_file)

    async def go() -> tuple[list[Any], Any]:
        async with cli.client(PolicyClient) as policy:
            return await policy.governance_entries(), await policy.governance()

    data: dict[str, Any] = {"ok": False, "entries": 0, "reason": ""}
    try:
        entries, served = run(go())
        state = GovernedState()
        for entry in entries:
            state.apply(entry, trust)
        view = state.view()
        data.update(entries=len(entries), head=view.head_seq, active_policy=view.active_policy)
        if (view.head_seq, view.head_hash) != (served.head_sequence, served.head_hash):
            data["reason"] = (
                f"the service reports head {served.head_sequence}, the log replays to {view.head_seq}"
            )
        else:
            data["ok"] = True
    except GovernanceInvalid as e:
        data["reason"] = e.message
    data["trust"] = trust.fingerprint()

    def human(d: dict[str, Any]) -> list[str]:
        if not d["ok"]:
            return [f"governance log FAILED verification: {d['reason']}"]
        return [
            f"governance log OK: {d['entries']} entries signed by the quorum of {d['trust']}",
            f"head entry {d['head']}; active policy {d['active_policy'][:16] or 'none'}",
        ]

    cli.emit(data, human)
    if not data["ok"]:
        raise SystemExit(1)
