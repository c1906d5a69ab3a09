"""Staking intents per second from submission to confirmation, against a bare Temporal workflow.

    .venv/bin/python bench/workflow.py [--intents 60] [--concurrency 8] [--keep]

Brings up the real local stack (``devstack.up`` in a temporary state folder: the
Temporal dev server, anvil, every service and the worker as processes, mTLS),
registers the demo's approvers, policy (its daily limit raised to what the run stakes) and
vault key, then submits ``--intents``
STAKE 32 ETH intents with generated deposit data, ``--concurrency`` in flight.
Each intent's two approvals are sent as soon as ``SubmitIntent`` returns (the
workflow's validators accept them from its first moment), and the intent counts
when ``WatchIntent`` reports CONFIRMED: latency is submission to confirmation as a
client sees it.

The baseline, on the same Temporal dev server in the same run, is a bare workflow
(``bench/_bare.py``, its own worker process and task queue) of the same shape,
:data:`STAKE_SHAPE`, with no-op activities, started and updated by a client at
the same concurrency. The ratio says what custos's own work (gRPC, mTLS,
databases, the audit trail, the HSM, the chain) costs on top of Temporal. The last
line prints the headline figures and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from bench._bare import READY, BareApproval, BareInput, BareWorkflow
from services.cli import devstack
from services.cli.scenario import POLICY, STATE_NAME, Demo
from services.pb.custos.staking.v1 import staking_pb2
from services.runtime.convert import approval_to_pb, spec_to_pb
from services.runtime.intent import Decision, IntentSpec
from services.staking.client import StakingClient

ROOT = Path(__file__).resolve().parents[1]
#: Marks where the approval gate (one update per approver, and the deadline timer) sits in the shape.
GATE = "<approval gate>"

#: The Temporal shape of one STAKE intent: every activity the staking workflow schedules, in order,
#: counted from workflows/gated.py (``_collect``, ``_transition``, ``_end``) and
#: workflows/staking/workflows.py (``_execute``). The bare baseline runs exactly these, with no-op
#: bodies. The bench compares them with the history of a real intent of the same run and prints any
#: difference. WHEN THE STAKING WORKFLOW GAINS A STEP, ADD IT HERE (as ReserveVelocity was; its
#: ReleaseVelocity runs only on a failure, so it is not part of a confirmed intent's shape).
STAKE_SHAPE: tuple[str, ...] = (
    "RecordTransition",  # AWAITING_POLICY
    "EvaluatePolicy",
    "RecordTransition",  # AWAITING_APPROVALS
    GATE,  # each approve update records its decision (RecordDecision) before it counts
    "ReserveVelocity",  # once the quorum is met (_on_quorum)
    "RecordTransition",  # APPROVED
    "PlanSteps",  # the chain family's steps (one signed transaction for an Ethereum STAKE)
    "BuildTransaction",
    "RecordTransition",  # SIGNING
    "SignTransaction",
    "BroadcastTransaction",
    "RecordTransition",  # BROADCAST
    "AwaitConfirmation",
    "UnbondingSeconds",
    "RecordTransition",  # CONFIRMED
)
#: The demo policy asks 2 of 3 operations approvers for a 32 ETH stake: two ``approve`` updates.
APPROVERS: tuple[str, ...] = ("olivia", "oscar")
BARE_QUEUE = "bench-bare"
WARMUP = 2
ETH = 10**18


@dataclass(frozen=True)
class Run:
    """One measured phase: wall time and per-intent latencies (seconds)."""

    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    def pct(self, p: int) -> float:
        """The p-th percentile latency in milliseconds."""
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[p - 1] * 1000

    def line(self, what: str, concurrency: int) -> str:
        return (
            f"{what}: {len(self.latencies)} in {self.seconds:.1f} s, {concurrency} in flight: "
            f"{self.rate:.2f}/s, p50 {self.pct(50):.0f} ms, p95 {self.pct(95):.0f} ms"
        )


async def pool(n: int, concurrency: int, one: Callable[[int], Awaitable[float]]) -> Run:
    """Runs ``one(i)`` for i < n with ``concurrency`` in flight; collects their latencies."""
    gate = asyncio.Semaphore(concurrency)

    async def bounded(i: int) -> float:
        async with gate:
            return await one(i)

    t0 = time.perf_counter()
    latencies = await asyncio.gather(*(bounded(i) for i in range(n)))
    return Run(time.perf_counter() - t0, list(latencies))


# --- custos: the real stack through the staking service's public API -------------------------------


class CustosDriver:
    """Long-lived clients for the initiator, the approvers and a watcher (one mTLS channel each)."""

    def __init__(self, demo: Demo) -> None:
        self.demo = demo
        self.people = {who: demo.person(who) for who in ("alice", "ops", *APPROVERS)}
        self.keys = {who: p.key for who, p in self.people.items()}  # read the key files once
        self.clients: dict[str, Any] = {who: p.client(StakingClient) for who, p in self.people.items()}

    async def close(self) -> None:
        for c in self.clients.values():
            await c.close()

    async def _approve(self, who: str, intent: Any) -> None:
        from services.policy.evidence import sign_approval

        approval = sign_approval(
            self.keys[who],
            approver_id=who,
            intent_digest=intent.digest,
            policy_version=intent.policy_version,
            decision=Decision.APPROVE,
            expires_at=datetime.now(UTC) + timedelta(hours=1),
        )
        await self.clients[who].call(
            "ApproveIntent",
            staking_pb2.ApproveIntentRequest(intent_id=intent.intent_id, approval=approval_to_pb(approval)),
        )

    async def _final(self, intent_id: str) -> str:
        """Watches until the intent ends; returns its final state."""
        terminal = {"CONFIRMED", "DENIED", "REJECTED", "EXPIRED", "CANCELLED", "FAILED"}
        async for r in self.clients["ops"].stream(
            "WatchIntent", staking_pb2.WatchIntentRequest(intent_id=intent_id), deadline=120
        ):
            state = STATE_NAME[r.event.state]
            if state in terminal:
                return state
        return "UNKNOWN"

    async def intent(self, spec: IntentSpec, key: str) -> tuple[str, float]:
        """Submits, approves at once, waits for the end: (intent id, seconds)."""
        t0 = time.perf_counter()
        resp = await self.clients["alice"].call(
            "SubmitIntent", staking_pb2.SubmitIntentRequest(idempotency_key=key, spec=spec_to_pb(spec))
        )
        intent = resp.intent
        *_, state = await asyncio.gather(
            *(self._approve(who, intent) for who in APPROVERS), self._final(intent.intent_id)
        )
        if state != "CONFIRMED":
            got = await self.clients["ops"].call(
                "GetIntent", staking_pb2.GetIntentRequest(intent_id=intent.intent_id)
            )
            raise RuntimeError(f"intent {intent.intent_id} ended {state}, not CONFIRMED: {got.intent.reason}")
        return intent.intent_id, time.perf_counter() - t0


# --- the bare baseline --------------------------------------------------------------------------------


def bare_input() -> BareInput:
    return BareInput(
        activities=[s for s in STAKE_SHAPE if s != GATE],
        gate_after=STAKE_SHAPE.index(GATE),
        updates=len(APPROVERS),
    )


async def bare_intent(client: Client, workflow_id: str) -> float:
    t0 = time.perf_counter()
    handle = await client.start_workflow(
        BareWorkflow.run, bare_input(), id=workflow_id, task_queue=BARE_QUEUE
    )
    await asyncio.gather(
        *(handle.execute_update(BareWorkflow.approve, BareApproval(who)) for who in APPROVERS)
    )
    await handle.result()
    return time.perf_counter() - t0


def start_bare_worker(address: str, log: Path) -> subprocess.Popen[str]:
    with log.open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench._bare", address, BARE_QUEUE],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if READY not in line:
        proc.kill()
        raise RuntimeError(f"the bare worker did not start; see {log}")
    return proc


# --- the shape check ------------------------------------------------------------------------------------


async def shape_of(client: Client, workflow_id: str) -> tuple[list[str], int, int]:
    """(activity types in order, accepted updates, timers) of a finished workflow's history."""
    activities: list[str] = []
    updates = timers = 0
    async for e in client.get_workflow_handle(workflow_id).fetch_history_events():
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            activities.append(e.activity_task_scheduled_event_attributes.activity_type.name)
        elif e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            updates += 1
        elif e.event_type == EventType.EVENT_TYPE_TIMER_STARTED:
            timers += 1
    return activities, updates, timers


async def check_shape(client: Client, custos_id: str, bare_id: str) -> str:
    real, real_updates, real_timers = await shape_of(client, custos_id)
    bare, bare_updates, bare_timers = await shape_of(client, bare_id)
    # at the gate, each approve update records its decision (an activity of the update)
    expected = [a for s in STAKE_SHAPE for a in (["RecordDecision"] * len(APPROVERS) if s == GATE else [s])]
    summary = f"{len(real)} activities, {real_updates} updates, {real_timers} timer(s) per intent"
    # the deadline timer starts only when the workflow reaches the gate before both decisions are
    # counted: a matter of timing in either workflow, so at most one, not the same number
    if (
        real != expected
        or real_updates != bare_updates
        or len(bare) != len(real)
        or max(real_timers, bare_timers) > 1
    ):
        return (
            f"shape: MISMATCH, update STAKE_SHAPE in bench/workflow.py: custos ran {summary} "
            f"({', '.join(real)}); the baseline {len(bare)} activities, {bare_updates} updates, "
            f"{bare_timers} timer(s)"
        )
    return f"shape: {summary}; the baseline the same activities and updates ({bare_timers} timer(s))"


# --- where the CPU goes ------------------------------------------------------------------------------------


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds of each process so far (Linux /proc; empty elsewhere)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for name, pid in pids.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[name] = (int(fields[11]) + int(fields[12])) / tick
    return out


def cpu_line(before: dict[str, float], after: dict[str, float], n: int) -> str:
    """CPU milliseconds per intent of each process that used any, the busiest first."""
    per = {k: (after[k] - before.get(k, 0.0)) * 1000 / n for k in after}
    busy = sorted(((v, k) for k, v in per.items() if v >= 1), reverse=True)
    return ", ".join(f"{k} {v:.0f}" for v, k in busy) + f" (total {sum(per.values()):.0f})"


def bench_policy(stakes: int) -> str:
    """The demo's policy with a daily limit per vault that lets ``stakes`` 32 ETH stakes through
    (the demo's 2048 ETH a day denies the 65th)."""
    demo_limit = 'max: "2_048_000_000_000_000_000_000"'
    if demo_limit not in POLICY:
        raise SystemExit("bench/workflow.py: the demo policy's daily limit changed: update bench_policy")
    return POLICY.replace(demo_limit, f'max: "{max(stakes * 32 * ETH, 2048 * ETH)}"')


# --- the run ---------------------------------------------------------------------------------------------


async def measure(stack: devstack.Stack, intents: int, concurrency: int) -> str:
    demo = Demo(stack, say=lambda _: None)
    await demo.setup(bench_policy(intents + WARMUP))
    needed = (intents + WARMUP) * 33 * ETH + 100 * ETH
    demo._rpc().call_sync("anvil_setBalance", [demo.vault_address, hex(max(needed, 10_000 * ETH))])
    specs = [demo.deposit_spec(32)[0] for _ in range(intents + WARMUP)]
    config = stack.settings()
    temporal = await Client.connect(config["temporal"]["address"])
    bare_worker = start_bare_worker(config["temporal"]["address"], stack.logs / "bench-bare.log")
    driver = CustosDriver(demo)
    try:
        custos_ids = [(await driver.intent(specs[i], f"bench-warmup-{i}"))[0] for i in range(WARMUP)]
        for i in range(WARMUP):
            await bare_intent(temporal, f"bench-bare-warmup-{i}")
        shape = await check_shape(temporal, custos_ids[0], "bench-bare-warmup-0")
        print(shape, flush=True)

        async def custos_one(i: int) -> float:
            return (await driver.intent(specs[WARMUP + i], f"bench-{i}"))[1]

        async def bare_one(i: int) -> float:
            return await bare_intent(temporal, f"bench-bare-{i}")

        pids = {p["name"]: p["pid"] for p in stack.running()}
        pids.update(bench=os.getpid(), **{"bare-worker": bare_worker.pid})
        cpu0 = cpu_seconds(pids)
        custos = await pool(intents, concurrency, custos_one)
        cpu1 = cpu_seconds(pids)
        bare = await pool(intents, concurrency, bare_one)
        cpu2 = cpu_seconds(pids)
        print(custos.line("custos STAKE intents", concurrency), flush=True)
        print(f"  CPU ms per intent: {cpu_line(cpu0, cpu1, intents)}", flush=True)
        print(bare.line("bare workflows      ", concurrency), flush=True)
        print(f"  CPU ms per workflow: {cpu_line(cpu1, cpu2, intents)}", flush=True)
    finally:
        await driver.close()
        bare_worker.kill()
        bare_worker.wait()
    return (
        f"workflow: custos {custos.rate:.2f} intents/s (p50 {custos.pct(50):.0f} ms, "
        f"p95 {custos.pct(95):.0f} ms), bare {bare.rate:.2f}/s (p50 {bare.pct(50):.0f} ms), "
        f"ratio {custos.rate / bare.rate:.2f} (aim >= 0.7)"
        + (" [shape mismatch: see above]" if "MISMATCH" in shape else "")
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--intents", type=int, default=60, help="measured intents per side (default 60)")
    parser.add_argument("--concurrency", type=int, default=8, help="intents in flight (default 8)")
    parser.add_argument("--keep", action="store_true", help="keep the stack's state folder (logs)")
    args = parser.parse_args(argv)
    if args.intents < 2 or args.concurrency < 1:
        parser.error("--intents must be at least 2 and --concurrency at least 1")
    root = Path(tempfile.mkdtemp(prefix="custos-bench-workflow-"))
    stack = devstack.Stack.named(root, "bench")
    t0 = time.perf_counter()
    ok = False
    try:
        devstack.up(stack, log=lambda *_: None)
        print(f"stack up in {time.perf_counter() - t0:.1f} s ({stack.root})", flush=True)
        headline = asyncio.run(measure(stack, args.intents, args.concurrency))
        ok = True
    finally:
        devstack.down(stack, log=lambda *_: None)
        if ok and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        elif not ok:
            print(f"state folder kept for its logs: {stack.root}", file=sys.stderr)
    print(headline)


if __name__ == "__main__":
    main(sys.argv[1:])
