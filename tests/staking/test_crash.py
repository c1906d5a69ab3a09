"""Crash test on the real stack: SIGKILL the worker, the signer, the chain or the staking service at
random moments.

Intents are submitted over a few seconds and approved as soon as they are accepted, while a
chaos task kills one component (its whole process group) and restarts it several times. They
cycle through Ethereum deposits on anvil, Cosmos delegations on the injectived devnet and Solana
stakes on the LiteSVM devnet, so both nonce (sequence) reservations and Solana's nonce-less
replay keys are crashed in the same runs. Then: every intent is CONFIRMED (the crashes are
transient, so none may legitimately fail), each intent step was signed once and each (key,
chain, nonce or replay key) once (a Solana step may be signed again only after its blockhash
expired, and then the first signature never landed), each intent's transaction is on its chain
exactly once with the vault's nonces (sequences) contiguous and no transaction custos did not
sign, each Solana stake account exists delegated with the intent's lamports and the vault paid
exactly the stakes and the landed transactions' fees, the read model holds every transition
without a gap, and the audit trail verifies, on the server and offline.

The schedule is seeded and the seed printed; ``CUSTOS_CRASH_SEED=<n>`` replays it.
``CUSTOS_CRASH_EXPIRE_EVERY=<seconds>`` also moves the Solana devnet's clock past every blockhash
given out so far that often while the kills happen: Solana steps then expire unsent and are
rebuilt and signed again (the signer's one kind of replacement) under the kills too.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import shutil
import struct
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from solders.pubkey import Pubkey
from sqlalchemy import select
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from services.audit import repository as audit_repo
from services.audit.verify import verify_export
from services.chain.cosmos.rest import RestClient, quote
from services.chain.ethereum.rpc import JsonRpcClient
from services.cli import devstack
from services.cli.scenario import CHAIN, COSMOS, INJ, SOL, SOLANA, STATE_NAME, Demo
from services.pb.custos.staking.v1 import staking_pb2
from services.policy.evidence import sign_approval
from services.runtime.convert import approval_to_pb, spec_to_pb
from services.runtime.db import make_engine, make_session_factory
from services.runtime.errors import Unavailable
from services.runtime.intent import Action, Decision, IntentSpec, StakeTarget, TargetParams
from services.signer.models import SigningRecord
from services.staking.client import StakingClient
from services.staking.models import ApprovalRow, IntentEventRow, IntentRow

INTENTS = 14  # index % 3: 0 an Ethereum deposit, 1 a Cosmos delegation, 2 a Solana stake
COSMOS_STAKE = 2 * INJ
#: What each Solana stake delegates (its stake account holds this plus the rent-exempt reserve):
#: 4 stakes a run, 4 runs a stack, well within the vault's 100 SOL.
SOLANA_DELEGATED = 2 * SOL
#: The fee of a Solana transaction with one signature and no ComputeBudget instruction.
LAMPORTS_PER_SIGNATURE = 5000
STAKE_PROGRAM = Pubkey.from_string("Stake11111111111111111111111111111111111111")
#: The size of a stake account's data (StakeStateV2).
STAKE_ACCOUNT_SPACE = 200
#: Slots after which a blockhash is no longer valid (Agave's MAX_PROCESSING_AGE is 150).
BLOCKHASH_EXPIRY_SLOTS = 151
#: The most results one page of the node's tx search gives (the Cosmos SDK's cap).
TX_PAGE = 100
KILLS = 3
SUBMIT_SPREAD = 5.0  # seconds over which the intents are submitted
SETTLE_TIMEOUT = 100.0  # a task lost with a killed worker comes back after its 30 s activity timeout
APPROVERS = ("olivia", "oscar")
STAKE_PATH = ["SUBMITTED", "AWAITING_POLICY", "AWAITING_APPROVALS", "APPROVED", "SIGNING", "BROADCAST"]
TERMINAL = {"CONFIRMED", "DENIED", "REJECTED", "EXPIRED", "CANCELLED", "FAILED"}


@pytest.fixture(scope="module")
def crash_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[devstack.Stack, Demo]]:
    stack = devstack.Stack.named(tmp_path_factory.mktemp("crash"), "crash")
    config_before = os.environ.get("CUSTOS_CONFIG")
    devstack.up(stack)
    try:
        yield stack, Demo(stack, say=lambda _: None)  # set up in the first test's event loop
    finally:
        last = stack.running()  # the pids of the restarted processes too
        devstack.down(stack)
        if config_before is None:
            os.environ.pop("CUSTOS_CONFIG", None)
        else:
            os.environ["CUSTOS_CONFIG"] = config_before
        assert devstack.leftover(last) == [], "dev down left processes behind"


def _seed() -> int:
    text = os.environ.get("CUSTOS_CRASH_SEED", "")
    return int(text) if text else random.SystemRandom().randrange(2**31)


@dataclass(frozen=True)
class Schedule:
    """When each intent is submitted and when each kill and restart happens (seconds)."""

    submit_at: list[float]
    kill_after: list[float]  # since the previous restart was ready (or the start)
    down_for: list[float]

    @classmethod
    def draw(cls, rng: random.Random) -> Schedule:
        return cls(
            submit_at=sorted(rng.uniform(0, SUBMIT_SPREAD) for _ in range(INTENTS)),
            kill_after=[rng.uniform(0.3, 2.5) for _ in range(KILLS)],
            down_for=[rng.uniform(0.0, 1.5) for _ in range(KILLS)],
        )


async def _chaos(stack: devstack.Stack, target: str, plan: Schedule) -> list[str]:
    """Kills and restarts ``target`` on the schedule; returns what it did, for the failure message."""
    done: list[str] = []
    t0 = time.monotonic()
    for pause, down in zip(plan.kill_after, plan.down_for, strict=True):
        await asyncio.sleep(pause)
        await asyncio.to_thread(devstack.kill, stack, target)
        done.append(f"killed {target} at {time.monotonic() - t0:.1f}s")
        await asyncio.sleep(down)
        await asyncio.to_thread(devstack.restart, stack, target)
        done.append(f"{target} ready again at {time.monotonic() - t0:.1f}s")
    return done


async def _expire_blockhashes(stack: devstack.Stack, every: float) -> None:
    """Moves the Solana devnet's clock past every blockhash's validity each ``every`` seconds
    (until cancelled): whatever was built and not yet landed expires."""
    rpc = _solana_rpc(stack)
    while True:
        await asyncio.sleep(every)
        await asyncio.to_thread(rpc.call_sync, "custos_advanceSlots", [BLOCKHASH_EXPIRY_SLOTS])


class Driver:
    """The initiator and approvers as clients would act: retry on Unavailable, same idempotency key."""

    def __init__(self, demo: Demo) -> None:
        self.demo = demo
        self.retries = 0
        self.clients: dict[str, Any] = {
            who: demo.person(who).client(StakingClient) for who in ("alice", "ops", *APPROVERS)
        }

    async def close(self) -> None:
        for c in self.clients.values():
            await c.close()

    async def _retrying(self, who: str, rpc: str, request: Any) -> Any:
        deadline = time.monotonic() + 60
        while True:
            try:
                return await self.clients[who].call(rpc, request)
            except Unavailable:
                if time.monotonic() > deadline:
                    raise
                self.retries += 1
                await asyncio.sleep(0.3)

    async def run(self, spec: IntentSpec, key: str, at: float) -> str:
        """Submits at ``at`` seconds and approves at once; returns the intent id."""
        await asyncio.sleep(at)
        resp = await self._retrying(
            "alice",
            "SubmitIntent",
            staking_pb2.SubmitIntentRequest(idempotency_key=key, spec=spec_to_pb(spec)),
        )
        await asyncio.gather(*(self._approve(who, resp.intent) for who in APPROVERS))
        return str(resp.intent.intent_id)

    async def _approve(self, who: str, intent: Any) -> None:
        approval = sign_approval(
            self.demo.person(who).key,
            approver_id=who,
            intent_digest=intent.digest,
            policy_version=intent.policy_version,
            decision=Decision.APPROVE,
            expires_at=datetime.now(UTC) + timedelta(hours=1),
        )
        request = staking_pb2.ApproveIntentRequest(
            intent_id=intent.intent_id, approval=approval_to_pb(approval)
        )
        # a retry after an accepted attempt whose answer was lost is answered like the first,
        # even once the quorum is met or the intent has ended: no refusal is tolerated here
        await self._retrying(who, "ApproveIntent", request)

    async def settle(self, ids: list[str], timeout: float) -> dict[str, Any]:
        """Polls until every intent has ended (or the timeout); returns each one's last view."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        pending = list(ids)
        while pending and time.monotonic() < deadline:
            for intent_id in list(pending):
                got = await self._retrying(
                    "ops", "GetIntent", staking_pb2.GetIntentRequest(intent_id=intent_id)
                )
                last[intent_id] = got.intent
                if STATE_NAME[got.intent.state] in TERMINAL:
                    pending.remove(intent_id)
            if pending:
                await asyncio.sleep(0.5)
        return last


async def _accepted_approvals(stack: devstack.Stack, ids: list[str]) -> dict[str, set[str]]:
    """Who each intent's workflow accepted an approval from (its history's completed approve updates)."""
    client = await Client.connect(stack.settings()["temporal"]["address"])
    out: dict[str, set[str]] = {i: set() for i in ids}
    for intent_id in ids:
        accepted: dict[str, str] = {}  # update id -> approver
        async for e in client.get_workflow_handle(intent_id).fetch_history_events():
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
                a = e.workflow_execution_update_accepted_event_attributes.accepted_request
                if a.input.name == "approve":
                    payload = json.loads(a.input.args.payloads[0].data)
                    accepted[a.meta.update_id] = payload["approver_id"]
            elif e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED:
                attrs = e.workflow_execution_update_completed_event_attributes
                if attrs.meta.update_id in accepted and attrs.outcome.HasField("success"):
                    out[intent_id].add(accepted[attrs.meta.update_id])
    return out


async def _disruption(stack: devstack.Stack, chain_of: dict[str, str]) -> Counter[str]:
    """What the crashes did to the workflows: retried activities and timed-out tasks, by chain and
    kind (so a run shows whether the kills reached the Cosmos intents too)."""
    client = await Client.connect(stack.settings()["temporal"]["address"])
    seen: Counter[str] = Counter()
    for intent_id, chain in chain_of.items():
        async for e in client.get_workflow_handle(intent_id).fetch_history_events():
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                seen[f"{chain} activity retries"] += e.activity_task_started_event_attributes.attempt > 1
            elif e.event_type in _TIMEOUTS:
                seen[f"{chain} {_TIMEOUTS[e.event_type]}"] += 1
    return +seen


_TIMEOUTS = {
    EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: "activity timeouts",
    EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT: "workflow task timeouts",
    EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED: "workflow task failures",
}


def _db(stack: devstack.Stack) -> Any:
    return make_engine(f"sqlite:///{Path(stack.root) / 'custos.db'}")


def _signing_records(stack: devstack.Stack) -> list[SigningRecord]:
    engine = _db(stack)
    try:
        with make_session_factory(engine)() as s:
            return list(s.scalars(select(SigningRecord)))
    finally:
        engine.dispose()


def _tx_key(chain: str, tx: str) -> str:
    """A transaction id as compared across sources: hex hashes lower-case (Cosmos spells them
    upper-case), Solana's base58 signatures as they are (their case is their value)."""
    return tx if chain == SOLANA else tx.lower()


def _check_signatures(
    records: list[SigningRecord], ids: list[str], tx_of: dict[str, str], chain_of: dict[str, str]
) -> dict[str, int]:
    """One first signature per (intent, step) and per (key, chain, nonce) on every chain (the
    nonce is the sequence on Cosmos, the step's replay key on Solana). A replacement (attempt
    > 0) is Solana's alone, for a step whose blockhash expired (``_check_solana`` shows the
    signature it replaces never landed), and names the attempt before it. The intent's last
    signature is the transaction confirmed. Returns each intent's signatures (1 + replacements)."""
    firsts = [r for r in records if r.attempt == 0]
    per_step = Counter((r.intent_id, r.step) for r in firsts)
    per_nonce = Counter((r.key_id, r.chain, r.nonce) for r in firsts)
    assert [k for k, n in per_step.items() if n > 1] == [], "an intent step was signed twice"
    assert [k for k, n in per_nonce.items() if n > 1] == [], "a (key, chain, nonce) was signed twice"
    mine = sorted((r for r in records if r.intent_id in chain_of), key=lambda r: r.attempt)
    by_id = {r.record_id: r for r in mine}
    for r in mine:
        if r.attempt == 0:
            continue
        assert chain_of[r.intent_id] == SOLANA, f"{r.intent_id}: a replacement on {r.chain}"
        before = by_id.get(r.replaces_id or "")
        assert before is not None and (before.intent_id, before.step, before.attempt) == (
            r.intent_id,
            r.step,
            r.attempt - 1,
        ), f"{r.intent_id}: replacement {r.attempt} does not name the signature before it"
    last = {r.intent_id: r for r in mine}  # the highest attempt
    assert sorted(last) == sorted(ids), "an intent has no signing record"
    assert {i: _tx_key(r.chain, r.tx_hash) for i, r in last.items()} == tx_of, (
        "the signed transaction is not the one confirmed"
    )
    return Counter(r.intent_id for r in mine)


def _check_chain(stack: devstack.Stack, demo: Demo, all_tx: set[str], tx_of: dict[str, str]) -> None:
    """Every Ethereum transaction the vault ever sent is one intent's, once, with contiguous nonces."""
    rpc = JsonRpcClient(next(c["rpc_url"] for c in stack.settings()["chains"] if c["name"] == CHAIN))
    vault = demo.vault_address.lower()
    sent: list[tuple[int, str]] = []
    for n in range(int(rpc.call_sync("eth_blockNumber"), 16) + 1):
        block = rpc.call_sync("eth_getBlockByNumber", [hex(n), True])
        sent += [
            (int(t["nonce"], 16), t["hash"]) for t in block["transactions"] if t["from"].lower() == vault
        ]
    nonces = sorted(n for n, _ in sent)
    assert nonces == list(range(len(sent))), f"the vault's nonces have a gap or a repeat: {nonces}"
    assert int(rpc.call_sync("eth_getTransactionCount", [demo.vault_address, "latest"]), 16) == len(sent)
    hashes = [h.lower() for _, h in sent]
    assert sorted(hashes) == sorted(all_tx), "the vault's transactions on chain are not exactly the intents'"
    for intent_id, tx in tx_of.items():
        receipt = rpc.call_sync("eth_getTransactionReceipt", [tx])
        assert receipt is not None and int(receipt["status"], 16) == 1, f"{intent_id}: {tx} did not succeed"


def _cosmos_sent(rest: RestClient, address: str) -> dict[str, tuple[int, int]]:
    """Every transaction ``address`` sent on the Cosmos devnet: tx id -> (sequence, result code).

    The node's search (SDK 0.50 takes ``query=``; ``events=`` is refused) counts a transaction
    once per matching event in ``total`` and removes duplicates within a page only, so the pages
    are walked up to ``total`` and merged by id. The sender and sequence come from the ante
    handler's ``tx.acc_seq`` event (``<address>/<sequence>``), not from the search's match. A
    transaction that failed in its block is found too: its fee deduction names the sender.
    """
    query = quote(f"message.sender='{address}'")
    sent: dict[str, tuple[int, int]] = {}
    page, total = 1, 1
    while (page - 1) * TX_PAGE < total:
        status, answer = rest.request_sync(
            f"/cosmos/tx/v1beta1/txs?query={query}&page={page}&limit={TX_PAGE}&order_by=ORDER_BY_ASC"
        )
        assert status == 200, f"the node's tx search failed: {answer}"
        total = int(answer.get("total") or 0)
        for r in answer.get("tx_responses") or []:
            for seq in _acc_seqs(r):
                who, _, n = seq.rpartition("/")
                if who == address:
                    sent[str(r["txhash"]).upper()] = (int(n), int(r.get("code", 0)))
        page += 1
    return sent


def _acc_seqs(tx_response: dict[str, Any]) -> list[str]:
    return [
        str(a.get("value", ""))
        for e in tx_response.get("events") or []
        if e.get("type") == "tx"
        for a in e.get("attributes") or []
        if a.get("key") == "acc_seq"
    ]


def _check_cosmos(
    stack: devstack.Stack,
    demo: Demo,
    all_tx: set[str],
    tx_of: dict[str, str],
    records: list[SigningRecord],
) -> None:
    """Every Cosmos transaction the vault ever sent is one intent's, included with code 0, each
    sequence 0..n-1 once, the sequence the signer recorded; the account's sequence is n."""
    chain = next(c for c in stack.settings()["chains"] if c["name"] == COSMOS)
    rest = RestClient(chain["rest_url"])
    sent = _cosmos_sent(rest, demo.cosmos_address)
    sequences = sorted(n for n, _ in sent.values())
    assert sequences == list(range(len(sent))), f"the vault's sequences have a gap or a repeat: {sequences}"
    status, info = rest.request_sync(f"/cosmos/auth/v1beta1/account_info/{quote(demo.cosmos_address)}")
    assert status == 200, f"no account for the Cosmos vault: {info}"
    assert int(info["info"]["sequence"]) == len(sent), "the account's sequence is not its transactions' count"
    assert sorted(sent) == sorted(t.upper() for t in all_tx), (
        "the vault's Cosmos transactions are not exactly the intents'"
    )
    failed = {tx: code for tx, (_, code) in sent.items() if code != 0}
    assert failed == {}, f"Cosmos transactions of the vault that failed: {failed}"
    signed = {r.tx_hash.upper(): r.nonce for r in records if r.chain == COSMOS}
    assert {tx: n for tx, (n, _) in sent.items()} == {tx: signed.get(tx) for tx in sent}, (
        "a Cosmos transaction's sequence on chain is not the one the signer recorded"
    )
    assert {t.upper() for t in tx_of.values()} <= set(sent), "a confirmed Cosmos intent is not on chain"


def _check_read_model_and_audit(
    stack: devstack.Stack, ids: list[str], accepted: dict[str, set[str]], signatures: dict[str, int]
) -> dict[str, set[str]]:
    """Transitions without gaps, each audited once (SIGNING and BROADCAST once per signature: a
    Solana step rebuilt after its blockhash expired goes through them again), and every approval
    the workflow accepted in the read model and audited once (whatever answers were lost);
    returns every intent's tx id (see ``_tx_key``) by chain."""
    engine = _db(stack)
    try:
        with make_session_factory(engine)() as s:
            approvals = list(s.scalars(select(ApprovalRow).where(ApprovalRow.intent_id.in_(ids))))
            rows = {r.intent_id: r for r in s.scalars(select(IntentRow))}
            events = list(s.scalars(select(IntentEventRow).where(IntentEventRow.intent_id.in_(ids))))
            records = audit_repo.records_between(s, 1, audit_repo.read_head(s).sequence)
    finally:
        engine.dispose()
    by_intent: dict[str, list[IntentEventRow]] = {i: [] for i in ids}
    for e in events:
        by_intent[e.intent_id].append(e)
    audited = Counter((r.subject, r.action, r.outcome) for r in records)
    for intent_id, evs in by_intent.items():
        evs.sort(key=lambda e: e.sequence)
        row = rows[intent_id]
        assert [e.sequence for e in evs] == list(range(1, row.last_sequence + 1)), f"{intent_id}: a gap"
        rounds = signatures.get(intent_id, 1)
        path = [*STAKE_PATH[:-2], *STAKE_PATH[-2:] * rounds, "CONFIRMED"]
        assert [e.state for e in evs] == path, f"{intent_id}: {[e.state for e in evs]}"
        subject = f"intent:{intent_id}"
        for state, want in Counter(path[1:]).items():
            n = sum(
                v
                for (sub, act, _), v in audited.items()
                if sub == subject and act == f"intent.{state.lower()}"
            )
            assert n == want, f"{intent_id}: {state} audited {n} times"
        assert audited[(subject, "signer.sign", "signed")] == 1, f"{intent_id}: signed audit entries"
        assert audited[(subject, "signer.sign", "replaced")] == rounds - 1, f"{intent_id}: replacements"
        rows_of = sorted(a.approver_id for a in approvals if a.intent_id == intent_id)
        assert accepted[intent_id] == set(APPROVERS), (
            f"{intent_id}: the workflow accepted {accepted[intent_id]}"
        )
        assert rows_of == sorted(accepted[intent_id]), f"{intent_id}: approval rows {rows_of}"
        audited_by = sorted(
            r.actor for r in records if r.subject == subject and r.action == "intent.approved_by"
        )
        assert audited_by == sorted(accepted[intent_id]), f"{intent_id}: intent.approved_by by {audited_by}"
    by_chain: dict[str, set[str]] = {CHAIN: set(), COSMOS: set(), SOLANA: set()}
    for r in rows.values():
        if r.tx_hash:
            by_chain.setdefault(r.chain, set()).add(_tx_key(r.chain, r.tx_hash))
    return by_chain


def _solana_rpc(stack: devstack.Stack) -> JsonRpcClient:
    return JsonRpcClient(str(devstack.solana_ready(stack)["rpc_url"]))


def _solana_balance(rpc: JsonRpcClient, address: str) -> int:
    return int(rpc.call_sync("getBalance", [address, {"commitment": "confirmed"}])["value"])


def _specs(demo: Demo, tag: str) -> list[IntentSpec]:
    """By index modulo 3: Ethereum deposits, Cosmos delegations to validator 1 and Solana stakes
    to the devnet's vote accounts in turn, each with its own stake account: seed ``<tag>-<i>``
    (``tag`` names the run; a seed whose account exists is refused)."""
    v1 = devstack.cosmos_devnet(demo.stack).genesis.validators[0]
    cosmos = IntentSpec(Action.STAKE, COSMOS, "vault-1", COSMOS_STAKE, StakeTarget(v1))
    votes = devstack.solana_ready(demo.stack)["vote_accounts"]
    rent = int(_solana_rpc(demo.stack).call_sync("getMinimumBalanceForRentExemption", [STAKE_ACCOUNT_SPACE]))
    specs = []
    for i in range(INTENTS):
        if i % 3 == 0:
            specs.append(demo.deposit_spec(32)[0])
        elif i % 3 == 1:
            specs.append(cosmos)
        else:
            seed = f"{tag}-{i}".encode("ascii")
            assert len(seed) <= 32, f"seed {seed!r} is longer than Solana's 32 bytes"
            target = StakeTarget(votes[i % len(votes)], params=TargetParams.of({"seed": seed}))
            specs.append(IntentSpec(Action.STAKE, SOLANA, "vault-1", SOLANA_DELEGATED + rent, target))
    return specs


@dataclass(frozen=True)
class StakeAccountState:
    """What the test reads of a stake account's data (StakeStateV2, bincode), independently of
    custos's own reader: Meta{rent reserve, staker, withdrawer, lockup}, Delegation{voter,
    stake, activation epoch, deactivation epoch}."""

    tag: int
    rent_reserve: int
    staker: str
    withdrawer: str
    voter: str
    stake: int
    deactivation: int

    @classmethod
    def read(cls, data: bytes) -> StakeAccountState:
        assert len(data) == STAKE_ACCOUNT_SPACE, f"a stake account of {len(data)} bytes"
        tag, reserve = struct.unpack_from("<IQ", data, 0)
        stake, _activation, deactivation = struct.unpack_from("<QQQ", data, 156)
        return cls(
            tag=tag,
            rent_reserve=reserve,
            staker=str(Pubkey.from_bytes(data[12:44])),
            withdrawer=str(Pubkey.from_bytes(data[44:76])),
            voter=str(Pubkey.from_bytes(data[124:156])),
            stake=stake,
            deactivation=deactivation,
        )


def _stake_account_of(vault: str, spec: IntentSpec) -> str:
    """``create_with_seed(vault, seed, Stake program)``, derived by solders (not by custos)."""
    params = getattr(spec.target, "params", None)
    seed = params.get("seed") if isinstance(params, TargetParams) else None
    assert isinstance(seed, bytes), f"a Solana spec without its seed: {spec}"
    return str(Pubkey.create_with_seed(Pubkey.from_string(vault), seed.decode("ascii"), STAKE_PROGRAM))


def _check_solana(
    stack: devstack.Stack,
    demo: Demo,
    specs: dict[str, IntentSpec],
    tx_of: dict[str, str],
    records: list[SigningRecord],
    balance_before: int,
) -> int:
    """Each Solana intent's transaction landed, confirmed without error, and is the only one of
    its signatures that did (a replacement's predecessor never landed); the stake account it
    names is the one the intent's seed derives, exists, holds the intent's lamports and is
    delegated to the intent's vote account with the vault as staker and withdrawer; and the
    vault paid exactly the stakes plus 5000 lamports per landed transaction. Returns how many
    landed."""
    rpc = _solana_rpc(stack)
    vault = demo.solana_address
    signed = [r for r in records if r.intent_id in specs]
    ids = [r.tx_hash for r in signed]
    found = rpc.call_sync("getSignatureStatuses", [ids, {"searchTransactionHistory": True}])["value"]
    landed = {tx: status for tx, status in zip(ids, found, strict=True) if status is not None}
    assert sorted(landed) == sorted(tx_of.values()), (
        "the Solana signatures that landed are not exactly the intents' confirmed transactions"
        f" (signed {len(signed)} for {len(specs)} intents, landed {len(landed)})"
    )
    for intent_id, tx in tx_of.items():
        spec, status = specs[intent_id], landed[tx]
        assert status["err"] is None, f"{intent_id}: {tx} landed with {status['err']}"
        assert status["confirmationStatus"] in ("confirmed", "finalized"), f"{intent_id}: {status}"
        got = rpc.call_sync(
            "getTransaction",
            [tx, {"encoding": "json", "commitment": "confirmed", "maxSupportedTransactionVersion": 0}],
        )
        assert got is not None and got["meta"]["err"] is None, f"{intent_id}: {tx} not found or failed"
        assert got["meta"]["fee"] == LAMPORTS_PER_SIGNATURE, f"{intent_id}: fee {got['meta']['fee']}"
        names = got["transaction"]["message"]["accountKeys"]
        stake = _stake_account_of(vault, spec)
        assert names[0] == vault and stake in names, f"{intent_id}: {tx} names {names}"
        account = rpc.call_sync("getAccountInfo", [stake, {"encoding": "base64", "commitment": "confirmed"}])
        assert account["value"] is not None, f"{intent_id}: stake account {stake} does not exist"
        value = account["value"]
        assert value["owner"] == str(STAKE_PROGRAM), f"{intent_id}: {stake} is owned by {value['owner']}"
        assert value["lamports"] == spec.amount, f"{intent_id}: {stake} holds {value['lamports']}"
        state = StakeAccountState.read(base64.b64decode(value["data"][0]))
        assert isinstance(spec.target, StakeTarget)
        assert (state.tag, state.voter, state.staker, state.withdrawer) == (
            2,
            spec.target.validator,
            vault,
            vault,
        ), f"{intent_id}: {stake} is not delegated as the intent says: {state}"
        assert state.stake == spec.amount - state.rent_reserve == SOLANA_DELEGATED, f"{intent_id}: {state}"
        assert state.deactivation == 2**64 - 1, f"{intent_id}: {stake} is deactivated"
    paid = balance_before - _solana_balance(rpc, vault)
    staked = sum(s.amount for s in specs.values())
    assert paid == staked + LAMPORTS_PER_SIGNATURE * len(landed), (
        f"the vault paid {paid} lamports for {staked} staked in {len(landed)} transactions"
    )
    return len(landed)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("target", ["worker", "signer", "chain", "staking"])
async def test_every_intent_confirms_once_while_a_component_is_killed(
    target: str, crash_stack: tuple[devstack.Stack, Demo]
) -> None:
    stack, demo = crash_stack
    if not demo.vault_address:
        await demo.setup()
    seed = _seed()
    print(f"\ncrash test ({target}): seed {seed}; CUSTOS_CRASH_SEED={seed} replays this schedule")
    plan = Schedule.draw(random.Random(f"{seed}-{target}"))
    assert demo.cosmos_address, "the crash stack runs no Cosmos devnet"
    assert demo.solana_address, "the crash stack runs no Solana devnet"
    specs = _specs(demo, f"crash-{target}-{seed}")
    balance_before = _solana_balance(_solana_rpc(stack), demo.solana_address)
    driver = Driver(demo)
    every = float(os.environ.get("CUSTOS_CRASH_EXPIRE_EVERY") or 0)
    expiring: asyncio.Task[None] | None = None
    t0 = time.monotonic()
    try:
        chaos = asyncio.create_task(_chaos(stack, target, plan))
        if every > 0:
            expiring = asyncio.create_task(_expire_blockhashes(stack, every))
        ids = await asyncio.gather(
            *(
                driver.run(spec, f"crash-{target}-{seed}-{i}", at)
                for i, (spec, at) in enumerate(zip(specs, plan.submit_at, strict=True))
            )
        )
        story = await chaos
        if expiring is not None:
            expiring.cancel()
            story.append(f"Solana blockhashes expired every {every}s until then")
        final = await driver.settle(ids, SETTLE_TIMEOUT)
    finally:
        if expiring is not None:
            expiring.cancel()
        await driver.close()
    print(f"   {'; '.join(story)}; all settled at {time.monotonic() - t0:.1f}s")
    chain_of = {i: spec.chain for i, spec in zip(ids, specs, strict=True)}
    hits = await _disruption(stack, chain_of)
    print(f"   what the kills hit: {dict(hits)}, {driver.retries} client calls retried on Unavailable")

    states = {i: (STATE_NAME[v.state], v.reason) for i, v in final.items()}
    assert {i: s for i, s in states.items() if s[0] != "CONFIRMED"} == {}, f"seed {seed}: {story}"
    tx_of = {i: _tx_key(chain_of[i], str(v.tx_hash)) for i, v in final.items()}
    records = _signing_records(stack)
    signatures = _check_signatures(records, ids, tx_of, chain_of)
    all_tx = _check_read_model_and_audit(stack, ids, await _accepted_approvals(stack, ids), signatures)
    on = {c: {i: tx for i, tx in tx_of.items() if chain_of[i] == c} for c in (CHAIN, COSMOS, SOLANA)}
    _check_chain(stack, demo, all_tx[CHAIN], on[CHAIN])
    _check_cosmos(stack, demo, all_tx[COSMOS], on[COSMOS], records)
    assert set(on[SOLANA].values()) <= all_tx[SOLANA], (
        "a confirmed Solana intent's tx is not in the read model"
    )
    solana_specs = {i: spec for i, spec in zip(ids, specs, strict=True) if spec.chain == SOLANA}
    landed = _check_solana(stack, demo, solana_specs, on[SOLANA], records, balance_before)
    replaced = sum(n - 1 for i, n in signatures.items() if chain_of[i] == SOLANA)
    sent = {c: len(txs) for c, txs in all_tx.items()}
    print(
        f"   checked: the vault's transactions so far, by chain: {sent}; this run's Solana"
        f" transactions landed: {landed}, replacements signed: {replaced}"
    )
    ok, _, export = await demo.verify_audit()
    try:
        assert ok, "the audit trail does not verify on the server"
        offline = verify_export(export)
        assert offline.ok, offline.reason
    finally:
        shutil.rmtree(export.parent, ignore_errors=True)
