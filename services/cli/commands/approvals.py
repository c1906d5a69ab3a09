"""``custos approve`` / ``custos reject``: an approver signs their decision with their own key.

The private key never leaves the approver's machine: the CLI fetches the intent,
recomputes its digest from the spec it shows (so a service cannot slip a
different intent under the approver's signature), signs locally and sends the
signature.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from services.cli.commands.intents import describe
from services.cli.context import CliContext, DisplayUnit, Duration, pass_cli, passphrase_option, run, to_json
from services.runtime.errors import FailedPrecondition
from services.runtime.intent import Decision

KEY_HELP = "The approver's private key file (PEM, Ed25519 or P-256). Env: CUSTOS_APPROVER_KEY."


async def decide(
    cli: CliContext,
    intent_id: str,
    key_file: Path,
    decision: Decision,
    *,
    expires_in: timedelta = timedelta(hours=1),
    reason: str = "",
) -> dict[str, Any]:
    """Signs ``decision`` on the intent as the caller and sends it; returns the JSON result."""
    from services.cli.people import load_key
    from services.pb.custos.staking.v1 import staking_pb2
    from services.policy.evidence import sign_approval
    from services.runtime.convert import approval_to_pb, spec_from_pb, ts_to_datetime
    from services.runtime.intent import SUBMISSION_SKEW, IntentBinding, intent_digest
    from services.staking.client import StakingClient

    key = load_key(key_file, cli.passphrase_file)
    me = cli.identity()
    async with cli.client(StakingClient) as staking:
        intent = (await staking.call("GetIntent", staking_pb2.GetIntentRequest(intent_id=intent_id))).intent
        state = staking_pb2.IntentState.Name(intent.state).removeprefix("INTENT_STATE_")
        if state in ("SUBMITTED", "AWAITING_POLICY"):
            raise FailedPrecondition(
                f"{intent_id} is {state}: decisions open once the policy has evaluated it"
            )
        if state != "AWAITING_APPROVALS":
            raise FailedPrecondition(f"{intent_id} is {state}: it takes no decisions now")
        now = datetime.now(UTC)
        submitted = ts_to_datetime(intent.created_at, "intent.created_at")
        if submitted > now + SUBMISSION_SKEW:
            raise FailedPrecondition(f"{intent_id} claims to be submitted in the future; not signing")
        binding = IntentBinding(intent.intent_id, intent.initiator, submitted)
        if intent_digest(spec_from_pb(intent.spec), intent.policy_version, binding) != intent.digest:
            raise FailedPrecondition(f"{intent_id}: the digest served does not match the intent; not signing")
        # An approval never claims to count beyond the intent's approval window (the signer
        # would not count it): submission + the rule's expiry, which the workflow publishes.
        expires_at = now + expires_in
        if decision is Decision.APPROVE and intent.HasField("approval_deadline"):
            expires_at = min(expires_at, ts_to_datetime(intent.approval_deadline, "intent.approval_deadline"))
        if expires_at <= now:
            raise FailedPrecondition(f"{intent_id}: its approval window has closed")
        approval = approval_to_pb(
            sign_approval(
                key,
                approver_id=me,
                intent_digest=intent.digest,
                policy_version=intent.policy_version,
                decision=decision,
                expires_at=expires_at,
            )
        )
        if decision is Decision.APPROVE:
            resp = await staking.call(
                "ApproveIntent", staking_pb2.ApproveIntentRequest(intent_id=intent_id, approval=approval)
            )
            quorum_met = bool(resp.quorum_met)
        else:
            resp = await staking.call(
                "RejectIntent",
                staking_pb2.RejectIntentRequest(intent_id=intent_id, approval=approval, reason=reason),
            )
            quorum_met = False
    return {
        "approver": me,
        "decision": decision.value,
        "intent": to_json(resp.intent),
        "quorum_met": quorum_met,
    }


def decision_line(data: dict[str, Any], units: Mapping[str, DisplayUnit] | None = None) -> str:
    """``olivia approved int-…: STAKE 32 ETH on … (quorum met: no; approvals: olivia)``."""
    i = data["intent"]
    verb = "approved" if data["decision"] == "APPROVE" else "rejected"
    given = ", ".join(a["approver_id"] for a in i["approvals"] if a["decision"] == "APPROVE") or "none"
    quorum = "yes" if data["quorum_met"] else "no"
    tail = f"quorum met: {quorum}; approvals: {given}" if verb == "approved" else f"now {i['state']}"
    return f"{data['approver']} {verb} {i['intent_id']}: {describe(i['spec'], units)} ({tail})"


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


@click.command("approve")
@click.argument("intent_id")
@_key_option
@click.option("--expires-in", type=Duration(), default="1h", show_default=True, help="How long it counts.")
@pass_cli
def approve(cli: CliContext, intent_id: str, key_file: Path, expires_in: timedelta) -> None:
    """Approve an intent, signed with your key.

    \b
    custos --as olivia approve int-… --key ~/.custos/olivia.pem
    """
    data = run(decide(cli, intent_id, key_file, Decision.APPROVE, expires_in=expires_in))
    cli.emit(data, lambda d: [decision_line(d, cli.display_units())])


@click.command("reject")
@click.argument("intent_id")
@_key_option
@click.option("--reason", default="", help="Why (recorded with the rejection).")
@pass_cli
def reject(cli: CliContext, intent_id: str, key_file: Path, reason: str) -> None:
    """Reject an intent, signed with your key: one authorised reject ends it."""
    data = run(decide(cli, intent_id, key_file, Decision.REJECT, reason=reason))
    cli.emit(data, lambda d: [decision_line(d, cli.display_units())])
