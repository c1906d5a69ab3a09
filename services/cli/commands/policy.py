"""``custos policy show | list | propose | simulate``: the versioned policy."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import click

from services.cli.commands.intents import SUBMITTABLE, describe, requirement_text
from services.cli.context import (
    CliContext,
    When,
    chain_amount,
    fields,
    fill_range,
    page_hint,
    paged,
    pass_cli,
    passphrase_option,
    run,
    table,
    to_json,
)
from services.pb.custos.policy.v1 import policy_pb2
from services.runtime.errors import InvalidArgument, NotFound
from services.runtime.intent import Action, IntentSpec, StakeTarget, Target

#: The chain of a hypothetical intent when --chain is not given: the demo's (and dev stack's) devnet.
DEFAULT_CHAIN = "ethereum-devnet"
#: The options that describe a hypothetical intent; each needs --action.
HYPOTHETICAL = (
    "amount",
    "vault",
    "chain",
    "initiator",
    "at",
    "validator",
    "source_validator",
    "target_validator",
    "deposit_data",
    "proposal",
    "option",
)


def _version_lines(p: dict[str, Any]) -> list[str]:
    return fields(
        [
            ("version", p["version"]),
            ("status", p["status"]),
            ("description", p["description"]),
            ("proposed by", p["proposed_by"]),
            ("created", p["created_at"]),
            ("activated", p["activated_at"]),
            ("parent", p["parent_version"]),
        ]
    )


def decision_text(d: dict[str, Any] | None) -> str:
    if d is None:
        return ""
    if d["outcome"] == "DENY":
        return "DENY: " + "; ".join(d["reasons"])
    return f"ALLOW {requirement_text(d['requirement'])} (rule {d['rule_id']})"


#: A version is the SHA-256 of its document, in hex; ``policy list`` shows its first 16 digits.
VERSION_DIGITS = 64


async def resolve_version(cli: CliContext, given: str) -> str:
    """The full version a prefix names (as ``policy list`` shows it); a full one as it is."""
    from services.policy.client import PolicyClient

    text = given.strip().lower().rstrip("…").rstrip(".")
    if not text or len(text) >= VERSION_DIGITS:
        return text
    if any(c not in "0123456789abcdef" for c in text):
        raise InvalidArgument(f"{given!r} is not a policy version (hex digits, as policy list shows)")
    found: list[str] = []
    token = ""
    async with cli.client(PolicyClient) as client:
        while True:
            req = policy_pb2.ListPolicyVersionsRequest(page_size=500, page_token=token)
            resp = await client.call("ListPolicyVersions", req)
            found += [v.version for v in resp.versions if v.version.startswith(text)]
            token = resp.next_page_token
            if not token:
                break
    if not found:
        raise NotFound(f"no policy version starts with {text}")
    if len(found) > 1:
        raise InvalidArgument(f"{text} names {len(found)} policy versions: give more digits")
    return found[0]


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"cannot read {path}: {e}") from None


@click.group("policy")
def policy() -> None:
    """Show, propose and simulate policy versions (activation is a governed change)."""


@policy.command("show")
@click.option("--version", default="", help="A version hash (default: the active one).")
@pass_cli
def show(cli: CliContext, version: str) -> None:
    """A policy version and its document."""
    from services.policy.client import PolicyClient

    async def go() -> Any:
        full = await resolve_version(cli, version)
        return await cli.acall(PolicyClient, "GetPolicy", policy_pb2.GetPolicyRequest(version=full))

    resp = run(go())
    data = {"policy": to_json(resp.policy)}
    cli.emit(data, lambda d: [*_version_lines(d["policy"]), "", d["policy"]["document"].rstrip()])


@policy.command("list")
@paged()
@pass_cli
def list_(cli: CliContext, page_size: int, page_token: str) -> None:
    """Every version: proposed, active, superseded, rejected."""
    from services.policy.client import PolicyClient

    req = policy_pb2.ListPolicyVersionsRequest(page_size=page_size, page_token=page_token)
    resp = cli.call(PolicyClient, "ListPolicyVersions", req)
    data = {"versions": [to_json(v) for v in resp.versions], "next_page_token": resp.next_page_token}

    def human(d: dict[str, Any]) -> list[str]:
        rows = [
            (v["version"][:16], v["status"], v["proposed_by"], v["created_at"], v["description"])
            for v in d["versions"]
        ]
        out = table(rows, ("VERSION", "STATUS", "PROPOSED BY", "CREATED", "DESCRIPTION"))
        return out + page_hint(d)

    cli.emit(data, human)


@policy.command("propose")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--description", default="", help="What changes and why.")
@click.option(
    "--key",
    "key_file",
    required=True,
    envvar="CUSTOS_APPROVER_KEY",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Your admin key file, as pinned in the trust root (you sign the activation you propose).",
)
@passphrase_option
@pass_cli
def propose(cli: CliContext, file: Path, description: str, key_file: Path) -> None:
    """Propose the policy in FILE (YAML) and open the governed change that activates it.

    The change applies once the trust root's quorum of other admins approved it
    (custos admin approve CHANGE --key KEYFILE).
    """
    from services.cli.people import load_key
    from services.policy.client import PolicyClient
    from services.policy.governance import ActivatePolicy

    document = _read(file)
    key = load_key(key_file, cli.passphrase_file)

    async def go() -> dict[str, Any]:
        async with cli.client(PolicyClient) as client:
            proposal = policy_pb2.ProposePolicyRequest(document=document, description=description)
            version = (await client.call("ProposePolicy", proposal)).policy
            parent = await client.active_version()
            change = await client.propose_change(
                ActivatePolicy(version.version, parent), key, proposer=cli.identity()
            )
        return {"policy": to_json(version), "change": to_json(change)}

    def human(d: dict[str, Any]) -> list[str]:
        change = d["change"]["request"]["change_id"]
        return [
            f"proposed {d['policy']['version']} with change {change} to activate it",
            f"other admins approve it: custos admin approve {change} --key KEYFILE",
        ]

    cli.emit(run(go()), human)


def _hypothetical_spec(cli: CliContext, action: Action, o: dict[str, Any]) -> IntentSpec:
    """The intent the hypothetical options describe, built as ``intents submit`` builds one.

    A STAKE needs no deposit data to be judged (only a validator allowlist or a withdrawal
    address rule looks at its target): ``--deposit-data`` gives both when a policy does.
    ``--amount`` is read in the chain's units, a bare number in its display unit (``2000`` is
    2000 ETH on an Ethereum chain, 2000 INJ on Injective), as people write policy amounts.
    """
    from services.cli.commands.intents import (
        deposit_from_file,
        make_spec,
        refuse_stray_options,
        validator_target,
    )

    if not o["vault"]:
        raise InvalidArgument("a hypothetical intent needs --vault")
    chain = o["chain"] or DEFAULT_CHAIN
    refuse_stray_options(action, o)
    amount: int | None = None
    if o["amount"] is not None:
        amount = chain_amount(o["amount"], cli.chains().get(chain), name=chain, bare="display")
    target: Target
    if action is Action.STAKE:
        if o["deposit_data"] is not None:
            target, file_amount = deposit_from_file(o["deposit_data"], o["validator"])
            amount = file_amount if amount is None else amount
        else:
            target = StakeTarget(o["validator"] or "")
        if amount is None:
            raise InvalidArgument(
                "a hypothetical STAKE needs --amount (e.g. 2000, in the chain's display unit)"
            )
    else:
        target = validator_target(action, o)
    return make_spec(action, chain, o["vault"], amount, target)


def _subject(intent_id: str | None, since: datetime | None, until: datetime | None, o: dict[str, Any]) -> str:
    """Which one subject the options name: ``intent``, ``recorded`` or ``hypothetical``."""
    given = [
        name
        for name, present in (
            ("--intent", intent_id is not None),
            ("--since", since is not None),
            ("--action", o["action"] is not None),
        )
        if present
    ]
    if not given:
        raise InvalidArgument(
            "give what to simulate: --intent ID, --since TIME, or a hypothetical intent (--action ...)"
        )
    if len(given) > 1:
        raise InvalidArgument(f"give one of --intent, --since and --action, not {' and '.join(given)}")
    if until is not None and since is None:
        raise InvalidArgument("--until goes with --since")
    if o["action"] is None:
        stray = [f"--{n.replace('_', '-')}" for n in HYPOTHETICAL if o[n] is not None]
        if stray:
            raise InvalidArgument(f"{stray[0]} describes a hypothetical intent: give --action too")
        return "intent" if intent_id is not None else "recorded"
    return "hypothetical"


@policy.command("simulate")
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--version", default="", help="A stored version instead of FILE.")
@click.option("--intent", "intent_id", help="Evaluate this recorded intent under both policies.")
@click.option("--since", type=When(), help="Evaluate the intents recorded from then (ISO time or 7d).")
@click.option("--until", type=When(), help="... until then (default: now).")
@click.option(
    "--action",
    type=click.Choice(SUBMITTABLE, case_sensitive=False),
    help="Evaluate a hypothetical intent of this action (nothing is recorded).",
)
@click.option(
    "--amount",
    help="Hypothetical: in the chain's display unit (2000, 0.5 ETH), or with a unit of the chain "
    "(2.5INJ, 2500inj, 1.5gwei).",
)
@click.option("--vault", help="Hypothetical: the vault id, e.g. vault-1.")
@click.option("--chain", help=f"Hypothetical: the chain (default: {DEFAULT_CHAIN}).")
@click.option("--initiator", help="Hypothetical: who submits it (default: you, from --as).")
@click.option("--at", type=When(), help="Hypothetical: when (ISO time or 2h ago; default: now).")
@click.option("--validator", help="Hypothetical STAKE, UNSTAKE or CLAIM_REWARDS: the validator.")
@click.option("--source-validator", help="Hypothetical RESTAKE: validator to consolidate from.")
@click.option("--target-validator", help="Hypothetical RESTAKE: validator to consolidate into.")
@click.option(
    "--deposit-data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Hypothetical STAKE: its deposit_data-*.json (validator, withdrawal address, amount).",
)
@click.option("--proposal", help="Hypothetical VOTE: the proposal id.")
@click.option("--option", help="Hypothetical VOTE: yes, no, abstain or no_with_veto.")
@pass_cli
def simulate(
    cli: CliContext,
    file: Path | None,
    version: str,
    intent_id: str | None,
    since: datetime | None,
    until: datetime | None,
    **o: Any,
) -> None:
    """Compare the active policy with a proposal (FILE or --version) on real or hypothetical intents.

    The subject is one of: a recorded intent (--intent), the intents recorded in a
    time range (--since, --until), or a hypothetical intent described by --action and
    its options, which is evaluated and never recorded.

    \b
    custos --as dave policy simulate new-policy.yaml --intent int-…
    custos --as dave policy simulate --version 3f2a… --since 7d
    custos --as dave policy simulate new-policy.yaml --action STAKE --amount 2000 \\
        --vault vault-1 --initiator alice
    """
    from datetime import UTC

    from services.policy.client import PolicyClient
    from services.runtime.convert import datetime_to_ts, spec_to_pb

    if (file is None) == (not version):
        raise InvalidArgument("give the proposal as FILE or --version, one of them")
    subject = _subject(intent_id, since, until, o)
    req = policy_pb2.SimulatePolicyRequest()
    if file is not None:
        req.document = _read(file)
    if subject == "hypothetical":
        req.intent.spec.CopyFrom(spec_to_pb(_hypothetical_spec(cli, Action(o["action"].upper()), o)))
        req.intent.initiator = o["initiator"] or cli.identity()
        if o["at"] is not None:
            req.intent.at.CopyFrom(datetime_to_ts(o["at"]))

    async def go() -> dict[str, Any]:
        if version:
            req.version = await resolve_version(cli, version)
        if subject == "intent":
            from services.cli.commands.intents import get_intent

            assert intent_id is not None
            got = (await get_intent(cli, intent_id)).intent
            req.intent.spec.CopyFrom(got.spec)
            req.intent.initiator = got.initiator
            req.intent.at.CopyFrom(got.created_at)
        elif subject == "recorded":
            assert since is not None
            fill_range(req.recorded, since, until or datetime.now(UTC))
        resp = await cli.acall(PolicyClient, "SimulatePolicy", req)
        results = [to_json(r) for r in resp.results]
        for r in results:
            r["intent_id"] = r["intent_id"] or intent_id or ""
        return {
            "intent": to_json(req.intent) if req.HasField("intent") else None,
            "results": results,
            "changed_count": resp.changed_count,
        }

    def human(d: dict[str, Any]) -> list[str]:
        out: list[str] = []
        for r in d["results"]:
            name = r["intent_id"]
            if not name and d["intent"] is not None:
                i = d["intent"]
                name = f"hypothetical {describe(i['spec'], cli.display_units())} by {i['initiator']}"
                name += f" at {i['at']}" if i["at"] else ""
            out += [
                f"{name}{'  CHANGED' if r['changed'] else ''}",
                f"  now       {decision_text(r['current'])}",
                f"  proposed  {decision_text(r['proposed'])}",
            ]
        return [*out, f"{d['changed_count']} of {len(d['results'])} intents would be decided differently"]

    cli.emit(run(go()), human)
