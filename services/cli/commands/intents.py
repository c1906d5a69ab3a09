"""``custos intents submit | list | show | watch | cancel``: staking intents as people follow them."""

from __future__ import annotations

import functools
import json
import sys
import uuid
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from services.cli.context import (
    CliContext,
    DisplayUnit,
    When,
    amount_text,
    chain_amount,
    error_code,
    fields,
    fill_range,
    page_hint,
    paged,
    pass_cli,
    run,
    table,
    to_json,
)
from services.cli.progress import (
    TERMINAL,
    Follower,
    event_line,
    needs,
    progress_text,
    short_text,
    waiting_text,
)
from services.families.config import ChainFamily
from services.families.ethereum.deposit import DepositData, stake_target
from services.pb.custos.staking.v1 import staking_pb2
from services.runtime.errors import InvalidArgument
from services.runtime.intent import (
    AMOUNTLESS,
    MAX_PROPOSAL_ID,
    Action,
    ClaimRewardsTarget,
    IntentSpec,
    RestakeTarget,
    StakeTarget,
    Target,
    UnstakeTarget,
    VoteOption,
    VoteTarget,
)

STATES = tuple(name.removeprefix("INTENT_STATE_") for name in staking_pb2.IntentState.keys()[1:])
ETH = 10**18
#: The actions an initiator submits (a policy change is a governed change, not an intent).
SUBMITTABLE = tuple(a.value for a in Action if a is not Action.POLICY_CHANGE)


# --- rendering (shared with the demo) -------------------------------------------------------------


def describe(spec: dict[str, Any], units: Mapping[str, DisplayUnit] | None = None) -> str:
    """``STAKE 32 ETH on ethereum-devnet from vault-1`` (amounts in the chain's display unit);
    ``VOTE YES on proposal 3 on …``, ``CLAIM_REWARDS from <validator> on …``: what moves no
    amount says what it does instead of "0"."""
    action = spec["action"]
    if action == "POLICY_CHANGE":
        return f"POLICY_CHANGE to {spec['policy_change']['policy_version'][:16]}…"
    if action == "VOTE":
        vote = spec.get("vote") or {}
        what = f"VOTE {vote.get('option', '?')} on proposal {vote.get('proposal_id', '?')}"
        return f"{what} on {spec['chain']} from {spec['vault_id']}"
    if action == "CLAIM_REWARDS":
        validator = (spec.get("claim_rewards") or {}).get("validator", "?")
        return f"CLAIM_REWARDS from {validator} on {spec['chain']} for {spec['vault_id']}"
    amount = amount_text(spec["amount"], (units or {}).get(spec["chain"]))
    if spec["amount"] == "0" and action in ("UNSTAKE", "RESTAKE"):
        amount = "full exit" if action == "UNSTAKE" else "full balance"
    return f"{action} {amount} on {spec['chain']} from {spec['vault_id']}"


def target_text(spec: dict[str, Any]) -> str:
    if "stake" in spec:
        return f"validator {spec['stake']['validator']}"
    if "unstake" in spec:
        return f"validator {spec['unstake']['validator']}"
    if "restake" in spec:
        return f"{spec['restake']['source_validator']} -> {spec['restake']['target_validator']}"
    if "claim_rewards" in spec:
        return f"validator {spec['claim_rewards']['validator']}"
    if "vote" in spec:
        return f"proposal {spec['vote']['proposal_id']}, option {spec['vote']['option']}"
    return ""


def requirement_text(req: dict[str, Any] | None) -> str:
    if not req or not req["groups"]:
        return ""
    return "; ".join(
        f"{g['name']} {g['threshold']} of {', '.join(g['members']) or 'nobody'}" for g in req["groups"]
    )


def intent_lines(intent: dict[str, Any], units: Mapping[str, DisplayUnit] | None = None) -> list[str]:
    approvals = ", ".join(
        f"{a['approver_id']} {a['decision']}" + (f" ({a['reason']})" if a.get("reason") else "")
        for a in intent["approvals"]
    )
    policy = intent["policy_version"][:16]
    if intent["requirement"] and intent["requirement"]["rule_id"]:
        policy += f" (rule {intent['requirement']['rule_id']})"
    return fields(
        [
            ("intent", intent["intent_id"]),
            ("state", intent["state"]),
            ("what", describe(intent["spec"], units)),
            ("target", target_text(intent["spec"])),
            ("initiator", intent["initiator"]),
            ("policy", policy),
            ("requires", requirement_text(intent["requirement"])),
            ("approvals", approvals),
            ("waiting", waiting_text(intent)),
            ("deadline", intent["approval_deadline"]),
            ("digest", intent["digest"]),
            ("summary", intent["summary"]),
            ("tx", intent["tx_hash"]),
            ("reason", intent["reason"]),
            ("created", intent["created_at"]),
        ]
    )


def timeline_lines(events: list[dict[str, Any]]) -> list[str]:
    return [event_line(e) for e in events]


def show_lines(data: dict[str, Any], units: Mapping[str, DisplayUnit] | None = None) -> list[str]:
    return [
        *intent_lines(data["intent"], units),
        "timeline",
        *("  " + line for line in timeline_lines(data["events"])),
    ]


def _list_lines(data: dict[str, Any], units: Mapping[str, DisplayUnit] | None = None) -> list[str]:
    rows = [
        (i["intent_id"], i["state"], describe(i["spec"], units), i["initiator"], i["created_at"])
        for i in data["intents"]
    ]
    return table(rows, ("INTENT", "STATE", "WHAT", "INITIATOR", "CREATED")) + page_hint(data)


# --- building an intent from options --------------------------------------------------------------


def _hex(value: Any, field: str) -> bytes:
    text = str(value)
    try:
        return bytes.fromhex(text[2:] if text[:2].lower() == "0x" else text)
    except ValueError:
        raise InvalidArgument(f"deposit data field {field} is not hex") from None


def deposit_from_file(path: Path, validator: str | None) -> tuple[StakeTarget, int]:
    """Deposit data from a ``deposit_data-*.json`` file (the staking deposit CLI's format).

    Returns the stake target and the deposit amount in wei. With several entries,
    ``validator`` picks one.
    """
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InvalidArgument(f"cannot read deposit data {path}: {e}") from None
    entries = entries if isinstance(entries, list) else [entries]
    want = validator.lower().removeprefix("0x") if validator else None
    chosen = [e for e in entries if isinstance(e, dict) and (want is None or e.get("pubkey") == want)]
    if len(chosen) != 1:
        which = f"for validator {validator}" if validator else "(pick one with --validator)"
        raise InvalidArgument(f"{path} holds {len(chosen)} deposits {which}")
    entry = chosen[0]
    try:
        data = DepositData(
            pubkey=_hex(entry["pubkey"], "pubkey"),
            withdrawal_credentials=_hex(entry["withdrawal_credentials"], "withdrawal_credentials"),
            signature=_hex(entry["signature"], "signature"),
            deposit_data_root=_hex(entry["deposit_data_root"], "deposit_data_root"),
        )
        amount = int(entry["amount"]) * 10**9  # the file counts gwei
    except (KeyError, TypeError, ValueError) as e:
        raise InvalidArgument(f"{path}: deposit entry lacks or mangles {e}") from None
    return stake_target(data), amount


def devnet_deposit(
    withdrawal_address: str, amount_wei: int, genesis_fork_version: bytes, *, compounding: bool = False
) -> StakeTarget:
    """Fresh deposit data for a new validator paying out to the vault (devnets only).

    0x01 credentials take exactly 32 ETH, so other amounts get 0x02 (compounding) credentials.
    """
    from services.families.ethereum.deposit import (
        check_amount,
        generate_deposit_data,
        withdrawal_credentials_for,
    )

    try:
        address = bytes.fromhex(withdrawal_address.removeprefix("0x"))
    except ValueError:
        address = b""
    if len(address) != 20:
        raise InvalidArgument(f"{withdrawal_address!r} is not a 0x-hex 20-byte address")
    compounding = compounding or amount_wei != 32 * ETH
    # what the deposit contract would refuse (below 1 ETH, beyond its uint64 gwei...): refused here
    check_amount(amount_wei, withdrawal_credentials_for(address, compounding=compounding))
    gen = generate_deposit_data(
        withdrawal_address=address,
        amount_wei=amount_wei,
        genesis_fork_version=genesis_fork_version,
        compounding=compounding,
    )
    return stake_target(gen.data)


async def _vault_address(cli: CliContext, vault: str, chain: str) -> str:
    from services.pb.custos.signer.v1 import signer_pb2
    from services.runtime.errors import NotFound, PermissionDenied
    from services.signer.client import SignerClient

    try:
        request = signer_pb2.GetKeyRequest(vault_id=vault, chain=chain)
        key = (await cli.acall(SignerClient, "GetKey", request)).key
    except (PermissionDenied, NotFound) as e:
        why = error_code(e)
        raise InvalidArgument(
            f"give --withdrawal-address: the vault's address could not be read ({why})"
        ) from None
    for a in key.addresses:
        if a.chain == chain:
            return str(a.address)
    raise InvalidArgument(f"vault {vault} has no address on {chain}: give --withdrawal-address")


def _fork_version(cli: CliContext, chain: str) -> bytes:
    from services.chain.main import ChainSettings

    for c in cli.settings_as(ChainSettings).chains:
        if c.name == chain:
            return c.fork_version_bytes
    raise InvalidArgument(f"--generate-deposit needs chain {chain} in the settings file (its fork version)")


async def _stake_target(cli: CliContext, o: dict[str, Any]) -> tuple[StakeTarget, int]:
    chain = cli.chains().get(o["chain"])
    if chain is not None and chain.family is not ChainFamily.ETHEREUM:
        # Delegating to an existing validator: nothing beyond its address (and the amount).
        if o["deposit_data"] is not None or o["generate_deposit"]:
            raise InvalidArgument(
                f"deposit data is Ethereum's: a STAKE on {chain.name} ({chain.family}) takes none"
            )
        if o["amount"] is None:
            raise InvalidArgument("give --amount")
        return StakeTarget(_need(o, "validator", "STAKE")), o["amount"]
    if o["deposit_data"] is not None:
        if o["generate_deposit"]:
            raise InvalidArgument("give --deposit-data or --generate-deposit, not both")
        target, file_amount = deposit_from_file(o["deposit_data"], o["validator"])
        return target, o["amount"] if o["amount"] is not None else file_amount
    if not o["generate_deposit"]:
        raise InvalidArgument("a STAKE needs --deposit-data FILE (or --generate-deposit on a devnet)")
    if o["validator"]:
        raise InvalidArgument("--generate-deposit makes a new validator: drop --validator")
    if o["amount"] is None:
        raise InvalidArgument("give --amount (e.g. 32ETH)")
    address = o["withdrawal_address"] or await _vault_address(cli, o["vault"], o["chain"])
    fork = _fork_version(cli, o["chain"])
    return devnet_deposit(address, o["amount"], fork, compounding=o["compounding"]), o["amount"]


def _need(o: dict[str, Any], name: str, action: str) -> str:
    if not o[name]:
        raise InvalidArgument(f"{action} needs --{name.replace('_', '-')}")
    return str(o[name])


#: The options that give each action's amount and target; every other option is every action's.
TARGET_OPTIONS: dict[Action, tuple[str, ...]] = {
    Action.STAKE: (
        "amount",
        "validator",
        "deposit_data",
        "generate_deposit",
        "withdrawal_address",
        "compounding",
    ),
    Action.UNSTAKE: ("amount", "validator"),
    Action.RESTAKE: ("amount", "source_validator", "target_validator"),
    Action.CLAIM_REWARDS: ("validator",),
    Action.VOTE: ("proposal", "option"),
}
_TARGET_OPTION_NAMES = tuple(dict.fromkeys(n for names in TARGET_OPTIONS.values() for n in names))


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def refuse_stray_options(action: Action, o: Mapping[str, Any]) -> None:
    """Refuses, in one line, an option given that ``action`` does not take (``--amount`` on a
    VOTE): silently dropping it would submit something other than what the caller wrote."""
    allowed = TARGET_OPTIONS.get(action, ())
    an = "an" if action[0] in "AEIOU" else "a"
    for name in _TARGET_OPTION_NAMES:
        if o.get(name) in (None, False) or name in allowed:
            continue
        if name == "amount" and action in AMOUNTLESS:
            raise InvalidArgument(f"{an} {action} moves no amount: drop --amount")
        takes = ", ".join(_flag(n) for n in allowed if n in o) or "no such option"
        raise InvalidArgument(f"{_flag(name)} is not an option of {an} {action} (it takes {takes})")


def vote_option(text: str) -> VoteOption:
    """``--option``: yes, no, abstain or no_with_veto, in any case (``no-with-veto`` too)."""
    name = text.strip().upper().replace("-", "_")
    if name not in VoteOption.__members__:
        raise InvalidArgument(f"--option must be yes, no, abstain or no_with_veto, not {text!r}")
    return VoteOption[name]


def proposal_id(value: Any) -> int:
    """``--proposal``: a governance proposal id, a whole number from 1 (a chain's uint64)."""
    text = str(value).strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 20 and 1 <= int(text) <= MAX_PROPOSAL_ID):
        raise InvalidArgument(f"--proposal must be a proposal id (a whole number from 1), not {value!r}")
    return int(text)


def validator_target(action: Action, o: dict[str, Any]) -> Target:
    """The target of an UNSTAKE (``--validator``), a RESTAKE (``--source-validator``,
    ``--target-validator``), a CLAIM_REWARDS (``--validator``) or a VOTE (``--proposal``,
    ``--option``): unlike a STAKE's, it names what already exists on the chain."""
    if action is Action.UNSTAKE:
        return UnstakeTarget(_need(o, "validator", "UNSTAKE"))
    if action is Action.CLAIM_REWARDS:
        return ClaimRewardsTarget(_need(o, "validator", "CLAIM_REWARDS"))
    if action is Action.VOTE:
        if o.get("proposal") is None:
            raise InvalidArgument("VOTE needs --proposal (the proposal id)")
        return VoteTarget(proposal_id(o["proposal"]), vote_option(_need(o, "option", "VOTE")))
    return RestakeTarget(_need(o, "source_validator", "RESTAKE"), _need(o, "target_validator", "RESTAKE"))


def make_spec(action: Action, chain: str, vault: str, amount: int | None, target: Target) -> IntentSpec:
    """An IntentSpec whose refusals (amount out of range...) are the caller's InvalidArgument."""
    try:
        return IntentSpec(action, chain, vault, 0 if amount is None else amount, target)
    except ValueError as e:
        raise InvalidArgument(str(e)) from None


async def build_spec(cli: CliContext, action: Action, o: dict[str, Any]) -> IntentSpec:
    """The intent the options describe; ``--amount`` is read in the units of the chosen chain
    (:func:`services.cli.context.chain_amount`)."""
    chains = cli.chains()
    if chains and o["chain"] not in chains:
        raise InvalidArgument(f"unknown chain {o['chain']!r}: the chains are {', '.join(sorted(chains))}")
    refuse_stray_options(action, o)
    if o["amount"] is not None:
        o = {**o, "amount": chain_amount(o["amount"], chains.get(o["chain"]), name=o["chain"])}
    amount = o["amount"]
    target: Target
    if action is Action.STAKE:
        target, amount = await _stake_target(cli, o)
    else:
        target = validator_target(action, o)
    return make_spec(action, o["chain"], o["vault"], amount, target)


# --- commands -------------------------------------------------------------------------------------


@click.group("intents")
def intents() -> None:
    """Submit, list, show, watch and cancel staking intents."""


@intents.command("submit")
@click.argument("action", type=click.Choice(SUBMITTABLE, case_sensitive=False))
@click.option("--chain", required=True, help="Chain of the registry, e.g. ethereum-devnet.")
@click.option("--vault", required=True, help="Vault id, e.g. vault-1.")
@click.option(
    "--amount",
    help="STAKE, UNSTAKE, RESTAKE: base units (2500), or a number in a unit of the chain "
    "(2.5INJ, 2500inj, 32ETH, 1.5gwei); UNSTAKE, RESTAKE: default 0 = all.",
)
@click.option(
    "--validator",
    help="STAKE: validator pubkey to pick from the file (Cosmos: to delegate to); UNSTAKE: validator "
    "to exit; CLAIM_REWARDS: validator whose rewards to withdraw.",
)
@click.option(
    "--deposit-data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="STAKE: deposit_data-*.json as the staking deposit CLI writes it.",
)
@click.option("--generate-deposit", is_flag=True, help="Devnet only: a new validator's deposit data.")
@click.option("--withdrawal-address", help="With --generate-deposit: the vault's address (else looked up).")
@click.option("--compounding", is_flag=True, help="With --generate-deposit: 0x02 credentials.")
@click.option("--source-validator", help="RESTAKE: validator to consolidate from.")
@click.option("--target-validator", help="RESTAKE: validator to consolidate into.")
@click.option("--proposal", help="VOTE: the proposal id.")
@click.option("--option", help="VOTE: yes, no, abstain or no_with_veto (any case).")
@click.option("--idempotency-key", help="Retry-safe key (default: a new one, printed).")
@pass_cli
def submit(cli: CliContext, action: str, idempotency_key: str | None, **options: Any) -> None:
    """Submit a STAKE, UNSTAKE, RESTAKE, CLAIM_REWARDS or VOTE intent.

    \b
    custos --as alice intents submit STAKE --chain ethereum-devnet --vault vault-1 \\
        --amount 32ETH --deposit-data deposit_data.json
    custos --as alice intents submit UNSTAKE --chain ethereum-devnet --vault vault-1 --validator 0x…
    custos --as alice intents submit STAKE --chain injective-devnet --vault vault-2 \\
        --validator injvaloper1… --amount 2.5INJ
    custos --as alice intents submit CLAIM_REWARDS --chain injective-devnet --vault vault-2 \\
        --validator injvaloper1…
    custos --as alice intents submit VOTE --chain injective-devnet --vault vault-2 --proposal 3 --option yes
    """
    from services.runtime.convert import spec_to_pb
    from services.staking.client import StakingClient

    key = idempotency_key or f"cli-{uuid.uuid4().hex}"

    async def go() -> dict[str, Any]:
        spec = await build_spec(cli, Action(action.upper()), options)
        req = staking_pb2.SubmitIntentRequest(idempotency_key=key, spec=spec_to_pb(spec))
        resp = await cli.acall(StakingClient, "SubmitIntent", req)
        return {"intent": to_json(resp.intent), "created": resp.created}

    def human(data: dict[str, Any]) -> list[str]:
        i = data["intent"]
        verb = "submitted" if data["created"] else "already submitted with this key"
        what = describe(i["spec"], cli.display_units())
        head = f"{i['intent_id']} {verb} ({i['idempotency_key']}): {what}, {i['state']}"
        return [head, f"follow it: custos intents watch {i['intent_id']}"]

    cli.emit(run(go()), human)


@intents.command("list")
@click.option("--state", "states", multiple=True, type=click.Choice(STATES, case_sensitive=False))
@click.option("--action", type=click.Choice([*SUBMITTABLE, "POLICY_CHANGE"], case_sensitive=False))
@click.option("--chain", default="")
@click.option("--vault", default="")
@click.option("--initiator", default="")
@click.option("--since", type=When(), help="Created at or after (ISO time, or 2h for 2 hours ago).")
@click.option("--until", type=When(), help="Created before.")
@click.option(
    "--needs-me",
    is_flag=True,
    help="Your inbox: intents awaiting approvals where a group of yours is still short and you "
    "have not decided (every page).",
)
@paged()
@pass_cli
def list_(
    cli: CliContext,
    states: tuple[str, ...],
    action: str | None,
    since: datetime | None,
    until: datetime | None,
    needs_me: bool,
    **o: Any,
) -> None:
    """Intents, newest first, with filters; one page at a time."""
    from services.runtime.convert import action_to_pb
    from services.staking.client import StakingClient

    if needs_me and (states or o["page_token"]):
        raise InvalidArgument("--needs-me lists every intent awaiting you: drop --state and --page-token")
    req = staking_pb2.ListIntentsRequest(
        states=[staking_pb2.IntentState.Value(f"INTENT_STATE_{s.upper()}") for s in states],
        chain=o["chain"],
        vault_id=o["vault"],
        initiator=o["initiator"],
        page_size=o["page_size"],
        page_token=o["page_token"],
    )
    if action:
        req.action = action_to_pb(Action(action.upper()))
    if since or until:
        fill_range(req.created, since, until)
    if needs_me:
        data = run(_inbox(cli, req))
        cli.emit(data, functools.partial(_inbox_lines, units=cli.display_units()))
        return
    resp = cli.call(StakingClient, "ListIntents", req)
    data = {"intents": [to_json(i) for i in resp.intents], "next_page_token": resp.next_page_token}
    cli.emit(data, functools.partial(_list_lines, units=cli.display_units()))


async def _inbox(cli: CliContext, req: staking_pb2.ListIntentsRequest) -> dict[str, Any]:
    """Every intent awaiting approvals that still needs the caller (all pages: an inbox is short)."""
    from services.staking.client import StakingClient

    me = cli.identity()
    req.states[:] = [staking_pb2.INTENT_STATE_AWAITING_APPROVALS]
    mine: list[dict[str, Any]] = []
    async with cli.client(StakingClient) as staking:
        while True:
            resp = await staking.call("ListIntents", req)
            mine += [i for i in map(to_json, resp.intents) if needs(i, me)]
            if not resp.next_page_token:
                break
            req.page_token = resp.next_page_token
    for i in mine:
        i["progress"], i["short"] = progress_text(i), short_text(i)
    return {"approver": me, "intents": mine}


def _inbox_lines(data: dict[str, Any], units: Mapping[str, DisplayUnit] | None = None) -> list[str]:
    if not data["intents"]:
        return [f"nothing awaits {data['approver']}"]
    rows = [
        (i["intent_id"], describe(i["spec"], units), i["initiator"], i["progress"], i["approval_deadline"])
        for i in data["intents"]
    ]
    return table(rows, ("INTENT", "WHAT", "INITIATOR", "APPROVALS", "DEADLINE")) + [
        f"{i['intent_id']}: needs {i['short']}" for i in data["intents"]
    ]


async def get_intent(cli: CliContext, intent_id: str) -> Any:
    from services.staking.client import StakingClient

    return await cli.acall(StakingClient, "GetIntent", staking_pb2.GetIntentRequest(intent_id=intent_id))


@intents.command("show")
@click.argument("intent_id")
@pass_cli
def show(cli: CliContext, intent_id: str) -> None:
    """An intent: what it does, what it needs, who approved, and its timeline."""
    resp = run(get_intent(cli, intent_id))
    cli.emit(
        {"intent": to_json(resp.intent), "events": [to_json(e) for e in resp.events]},
        functools.partial(show_lines, units=cli.display_units()),
    )


@intents.command("watch")
@click.argument("intent_id")
@click.option(
    "--from-sequence", type=click.IntRange(min=1), default=1, show_default=True, help="Resume here."
)
@click.option("--timeout", type=float, help="Give up after this many seconds.")
@pass_cli
def watch(cli: CliContext, intent_id: str, from_sequence: int, timeout: float | None) -> None:
    """Print each transition as it happens until a final state.

    Exits 0 on CONFIRMED and 1 on DENIED, REJECTED, EXPIRED, CANCELLED or FAILED.
    With --output json, one JSON object per line.
    """
    final = run(_watch(cli, intent_id, from_sequence - 1, timeout))
    sys.exit(0 if final == "CONFIRMED" else 1)


async def _watch(cli: CliContext, intent_id: str, after: int, timeout: float | None) -> str:
    from services.staking.client import StakingClient

    async with cli.client(StakingClient) as staking:
        got = await staking.call("GetIntent", staking_pb2.GetIntentRequest(intent_id=intent_id))
        state = to_json(got.intent)["state"]
        # the stream ends after the final transition; resuming past it would wait forever
        if state in TERMINAL and all(e.sequence <= after for e in got.events):
            if not cli.json:
                click.echo(f"{intent_id} is {state}: no transitions after {after}")
            return str(state)
        return await Follower(cli, staking, intent_id).follow(after, timeout)


@intents.command("cancel")
@click.argument("intent_id")
@click.option("--reason", default="", help="Why (recorded in the audit trail).")
@pass_cli
def cancel(cli: CliContext, intent_id: str, reason: str) -> None:
    """End an intent that has not reached signing."""
    from services.staking.client import StakingClient

    req = staking_pb2.CancelIntentRequest(intent_id=intent_id, reason=reason)
    intent = to_json(cli.call(StakingClient, "CancelIntent", req).intent)
    cli.emit({"intent": intent}, lambda d: [f"{d['intent']['intent_id']} {d['intent']['state']}"])
