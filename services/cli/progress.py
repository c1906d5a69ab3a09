"""Where an intent stands with its approvals, and what it waits for: the inbox and ``watch``.

Counted from the intent as the staking service shows it (its requirement's groups and the
approvals recorded), for people to read; the workflow and the signer count for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import click

from services.cli.context import CliContext, hhmmss, to_json
from services.runtime.errors import Unavailable

TERMINAL = frozenset({"CONFIRMED", "DENIED", "REJECTED", "EXPIRED", "CANCELLED", "FAILED"})
#: How often ``watch`` reads the intent for new approvals while it awaits them (seconds).
APPROVAL_POLL_SECONDS = 0.5


def approved_by(intent: dict[str, Any]) -> set[str]:
    return {a["approver_id"] for a in intent["approvals"] if a["decision"] == "APPROVE"}


def group_progress(intent: dict[str, Any]) -> list[tuple[str, int, int, list[str]]]:
    """(group, approvals counted, threshold, members) of each required group."""
    given = approved_by(intent)
    groups = (intent["requirement"] or {}).get("groups") or []
    return [
        (g["name"], min(len(given & set(g["members"])), g["threshold"]), g["threshold"], g["members"])
        for g in groups
    ]


def progress_text(intent: dict[str, Any]) -> str:
    """``1 of 2 operations; 0 of 1 risk``."""
    return "; ".join(f"{n} of {t} {name}" for name, n, t, _ in group_progress(intent))


def short_text(intent: dict[str, Any]) -> str:
    """The groups still short and who may still approve: ``operations 1 more of oscar, otto``."""
    decided = {a["approver_id"] for a in intent["approvals"]} | {intent["initiator"]}
    out = []
    for name, n, t, members in group_progress(intent):
        if n < t:
            left = [m for m in members if m not in decided]
            out.append(f"{name} {t - n} more of {', '.join(left) or 'nobody left'}")
    return "; ".join(out)


def needs(intent: dict[str, Any], me: str) -> bool:
    """Whether ``me`` may still decide on ``intent`` and a group of theirs is still short."""
    if intent["state"] != "AWAITING_APPROVALS" or me == intent["initiator"]:
        return False
    if me in {a["approver_id"] for a in intent["approvals"]}:
        return False
    return any(n < t and me in members for _, n, t, members in group_progress(intent))


def waiting_text(intent: dict[str, Any]) -> str:
    """Why a live intent waits, in a few words."""
    state = intent["state"]
    if state == "AWAITING_APPROVALS":
        short = short_text(intent)
        return f"waiting for approvals: {progress_text(intent)}" + (f" (needs {short})" if short else "")
    return {
        "SUBMITTED": "waiting for its workflow to start",
        "AWAITING_POLICY": "waiting for the policy service to evaluate it",
        "APPROVED": "waiting for the chain service to build the transaction",
        "SIGNING": "waiting for the signer (it checks the approvals and the transaction itself)",
        "BROADCAST": "waiting for confirmations on the chain",
        "UNBONDING": "waiting out the chain's unbonding period",
    }.get(state, "")


def event_line(e: dict[str, Any]) -> str:
    """One transition: ``sequence time STATE detail``."""
    return f"{e['sequence']:>2} {hhmmss(e['time'])} {e['state']:<19} {e['detail'][:90]}".rstrip()


class Follower:
    """``intents watch``: the transitions as the stream gives them and, while the intent awaits
    approvals, each decision as it is recorded ("olivia approved: 1 of 2 operations")."""

    def __init__(self, cli: CliContext, staking: Any, intent_id: str) -> None:
        self._cli, self._staking, self._id = cli, staking, intent_id
        self._shown: list[dict[str, Any]] = []  # the decisions printed so far, in order

    def _echo(self, obj: dict[str, Any], line: str) -> None:
        click.echo(json.dumps(obj, sort_keys=True) if self._cli.json else line)

    def _say(self, line: str) -> None:
        if line and not self._cli.json:
            click.echo(f"   {line}")

    async def _intent(self) -> dict[str, Any]:
        from services.pb.custos.staking.v1 import staking_pb2

        got = await self._staking.call("GetIntent", staking_pb2.GetIntentRequest(intent_id=self._id))
        return to_json(got.intent)

    async def _decisions(self) -> dict[str, Any]:
        """Prints the decisions recorded since the last look, each with the count it brought."""
        intent = await self._intent()
        seen = {a["approver_id"] for a in self._shown}
        for a in sorted(intent["approvals"], key=lambda a: a["recorded_at"] or ""):
            if a["approver_id"] in seen:
                continue
            self._shown.append(a)
            verb = "approved" if a["decision"] == "APPROVE" else "rejected"
            upto = progress_text({**intent, "approvals": self._shown})
            line = f"   {hhmmss(a['recorded_at'])} {a['approver_id']} {verb}: {upto}"
            self._echo({"approval": {**a, "progress": upto}}, line)
        return intent

    async def follow(self, after: int, timeout: float | None) -> str:
        from services.pb.custos.staking.v1 import staking_pb2
        from services.runtime.grpc_errors import RemoteError

        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        async def read() -> None:
            request = staking_pb2.WatchIntentRequest(intent_id=self._id, after_sequence=after)
            try:
                async for r in self._staking.stream("WatchIntent", request, deadline=timeout):
                    await events.put(("event", to_json(r.event)))
                await events.put(("end", None))
            except Exception as e:
                await events.put(("error", e))

        reader = asyncio.create_task(read())
        state, polling = "", False
        try:
            while True:
                try:
                    wait = APPROVAL_POLL_SECONDS if polling else None
                    kind, item = await asyncio.wait_for(events.get(), wait)
                except TimeoutError:
                    before = len(self._shown)
                    intent = await self._decisions()
                    if len(self._shown) > before and intent["state"] == "AWAITING_APPROVALS":
                        self._say(waiting_text(intent))  # what is still short after this decision
                    continue
                if kind == "error":
                    if isinstance(item, RemoteError) and item.status.name == "DEADLINE_EXCEEDED":
                        raise Unavailable(f"{self._id} is still {state or 'where it was'} after {timeout:g}s")
                    raise item
                if kind == "end":
                    raise Unavailable(
                        f"the watch of {self._id} ended early in {state}: run it again to resume"
                    )
                if polling and item["state"] != "AWAITING_APPROVALS":
                    await self._decisions()  # the decisions that moved it on, before the move
                    polling = False
                self._echo(item, event_line(item))
                state = str(item["state"])
                if state in TERMINAL:
                    return state
                if state == "AWAITING_APPROVALS":
                    polling = True
                    intent = await self._decisions()
                else:
                    intent = {"state": state}
                if events.empty():  # caught up: say what it waits for now
                    self._say(waiting_text(intent))
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
