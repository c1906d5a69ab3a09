"""``custos policy show | list | propose | activate | simulate``: the versioned policy."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import click

from services.cli.commands.intents import requirement_text
from services.cli.context import (
    CliContext,
    When,
    fields,
    fill_range,
    page_hint,
    paged,
    pass_cli,
    run,
    table,
    to_json,
)
from services.pb.custos.policy.v1 import policy_pb2
from services.runtime.errors import InvalidArgument


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


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"cannot read {path}: {e}") from None


@click.group("policy")
def policy() -> None:
    """Show, propose, activate and simulate policy versions."""


@policy.command("show")
@click.option("--version", default="", help="A version hash (default: the active one).")
@pass_cli
def show(cli: CliContext, version: str) -> None:
    """A policy version and its document."""
    from services.policy.client import PolicyClient

    resp = cli.call(PolicyClient, "GetPolicy", policy_pb2.GetPolicyRequest(version=version))
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
@pass_cli
def propose(cli: CliContext, file: Path, description: str) -> None:
    """Propose the policy in FILE (YAML) and open the POLICY_CHANGE intent admins approve.

    The first policy of an installation has no admin quorum to pass: activate it
    with `custos policy activate VERSION`.
    """
    from services.policy.client import PolicyClient
    from services.policy.service import policy_change_spec
    from services.runtime.convert import spec_to_pb
    from services.staking.client import StakingClient

    document = _read(file)

    async def go() -> dict[str, Any]:
        proposal = policy_pb2.ProposePolicyRequest(document=document, description=description)
        resp = await cli.acall(PolicyClient, "ProposePolicy", proposal)
        out: dict[str, Any] = {"policy": to_json(resp.policy), "intent": None}
        if not resp.HasField("requirement"):
            return out  # the bootstrap: nothing active, nobody to ask
        from services.pb.custos.staking.v1 import staking_pb2

        version = resp.policy.version
        req = staking_pb2.SubmitIntentRequest(
            idempotency_key=f"policy-{version}", spec=spec_to_pb(policy_change_spec(version))
        )
        out["intent"] = to_json((await cli.acall(StakingClient, "SubmitIntent", req)).intent)
        return out

    def human(d: dict[str, Any]) -> list[str]:
        version = d["policy"]["version"]
        if d["intent"] is None:
            return [
                f"proposed {version}: no policy is active yet; activate it: custos policy activate {version}"
            ]
        i = d["intent"]["intent_id"]
        return [f"proposed {version} as intent {i}", f"admins approve it: custos approve {i} --key KEYFILE"]

    cli.emit(run(go()), human)


@policy.command("activate")
@click.argument("version")
@pass_cli
def activate(cli: CliContext, version: str) -> None:
    """Activate the first policy of an installation (later ones activate with their admin quorum)."""
    from services.policy.client import PolicyClient

    resp = cli.call(PolicyClient, "ActivatePolicy", policy_pb2.ActivatePolicyRequest(version=version))
    cli.emit(
        {"policy": to_json(resp.policy)}, lambda d: [f"{d['policy']['version']} is {d['policy']['status']}"]
    )


@policy.command("simulate")
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--version", default="", help="A stored version instead of FILE.")
@click.option("--intent", "intent_id", help="Evaluate this recorded intent under both policies.")
@click.option("--since", type=When(), help="Evaluate the intents recorded from then (ISO time or 7d).")
@click.option("--until", type=When(), help="... until then (default: now).")
@pass_cli
def simulate(
    cli: CliContext,
    file: Path | None,
    version: str,
    intent_id: str | None,
    since: datetime | None,
    until: datetime | None,
) -> None:
    """Compare the active policy with a proposal (FILE or --version) on real intents.

    \b
    custos --as dave policy simulate new-policy.yaml --intent int-…
    custos --as dave policy simulate --version 3f2a… --since 7d
    """
    from datetime import UTC

    from services.policy.client import PolicyClient

    if (file is None) == (not version):
        raise InvalidArgument("give the proposal as FILE or --version, one of them")
    if (intent_id is None) == (since is None):
        raise InvalidArgument("give --intent ID or --since TIME, one of them")
    req = policy_pb2.SimulatePolicyRequest()
    if file is not None:
        req.document = _read(file)
    else:
        req.version = version

    async def go() -> dict[str, Any]:
        if intent_id is not None:
            from services.cli.commands.intents import get_intent

            got = (await get_intent(cli, intent_id)).intent
            req.intent.spec.CopyFrom(got.spec)
            req.intent.initiator = got.initiator
            req.intent.at.CopyFrom(got.created_at)
        else:
            assert since is not None
            fill_range(req.recorded, since, until or datetime.now(UTC))
        resp = await cli.acall(PolicyClient, "SimulatePolicy", req)
        results = [to_json(r) for r in resp.results]
        for r in results:
            r["intent_id"] = r["intent_id"] or intent_id or ""
        return {"results": results, "changed_count": resp.changed_count}

    def human(d: dict[str, Any]) -> list[str]:
        out: list[str] = []
        for r in d["results"]:
            out += [
                f"{r['intent_id']}{'  CHANGED' if r['changed'] else ''}",
                f"  now       {decision_text(r['current'])}",
                f"  proposed  {decision_text(r['proposed'])}",
            ]
        return [*out, f"{d['changed_count']} of {len(d['results'])} intents would be decided differently"]

    cli.emit(run(go()), human)
