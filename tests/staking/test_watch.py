"""Transitions reach the staking service through RecordTransition, which records them (read model
and audit record, in one transaction) and wakes that process's watchers of the intent.

The staking service is served over real gRPC (plaintext with a trusted identity header); the
worker's real RecordTransition activity calls it through the typed staking client, as the worker
process does, and holds no database of its own. The fallback poll is set to 30 s where only the
wake-up can deliver in time. Temporal and the policy, signer and chain services are never called
here: their clients point at a closed port.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client

from services.audit.models import AuditRecordRow
from services.audit.writer import AuditWriter
from services.chain.client import ChainClient
from services.pb.custos.staking.v1 import staking_pb2, staking_pb2_grpc
from services.policy.client import PolicyClient
from services.runtime.auth import Principal
from services.runtime.db import make_engine, make_session_factory, transaction, utcnow
from services.runtime.errors import Unavailable
from services.runtime.ports import free_port
from services.runtime.server import RunningServer, ServiceBinding, start_server
from services.runtime.settings import ServiceSettings, TLSSettings
from services.signer.client import SignerClient
from services.staking import repository as repo
from services.staking import service as service_module
from services.staking.client import StakingClient
from services.staking.models import IntentRow
from services.staking.service import StakingService
from services.staking.servicer import StakingServicer
from services.staking.types import Transition
from workflows.staking.activities import StakingActivities
from workflows.staking.types import TransitionInput

HEADER = "x-custos-test-identity"
WORKER = ((HEADER, "worker;svc:worker"),)
OPS = ((HEADER, "ops;operator,compliance"),)
WORKER_PRINCIPAL = Principal("worker", frozenset({"svc:worker"}))
#: Where only the wake-up can deliver: the fallback poll is far longer than any wait below.
SLOW_POLL = 30.0
PROMPT = 5.0


@dataclass
class Staking:
    service: StakingService
    server: RunningServer
    nowhere: tuple[PolicyClient, SignerClient, ChainClient]

    def channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(f"127.0.0.1:{self.server.port}")

    def client(self, metadata: tuple[tuple[str, str], ...]) -> StakingClient:
        return StakingClient(self.channel(), metadata=metadata)


@pytest.fixture
async def staking(db_url: str) -> AsyncIterator[Staking]:
    """The staking service as its process runs it, on its own engine (the worker has another)."""
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    nowhere = f"127.0.0.1:{free_port()}"
    clients = (
        PolicyClient(grpc.aio.insecure_channel(nowhere)),
        SignerClient(grpc.aio.insecure_channel(nowhere)),
        ChainClient(grpc.aio.insecure_channel(nowhere)),
    )
    service = StakingService(
        sessions=sessions,
        temporal=await Client.connect(nowhere, lazy=True),
        task_queue="unused",
        policy=clients[0],
        signer=clients[1],
        chain=clients[2],
        audit=AuditWriter(sessions, actor="svc:staking"),
    )
    binding = ServiceBinding(
        staking_pb2.DESCRIPTOR.services_by_name["StakingService"],
        staking_pb2_grpc.add_StakingServiceServicer_to_server,
        StakingServicer(service),
    )
    settings = ServiceSettings(tls=TLSSettings(plaintext=True, trusted_identity_header=HEADER))
    server = await start_server(settings, [binding], listen="127.0.0.1:0")
    try:
        yield Staking(service, server, clients)
    finally:
        await server.stop(0)
        for c in clients:
            await c.close()
        engine.dispose()


@pytest.fixture
def slow_poll(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(service_module, "WATCH_POLL_SECONDS", SLOW_POLL)
    yield


def worker(staking: Staking, client: StakingClient) -> StakingActivities:
    """The worker's activities as the worker process holds them: clients, no database."""
    policy, signer, chain = staking.nowhere
    return StakingActivities(policy=policy, signer=signer, chain=chain, staking=client)


def submitted(sessions: sessionmaker[Session]) -> str:
    """A SUBMITTED intent (sequence 1), as SubmitIntent records it."""
    now = utcnow()
    row = IntentRow(
        intent_id=f"int-{uuid.uuid4().hex}",
        initiator="alice",
        idempotency_key=uuid.uuid4().hex,
        request_digest="00" * 32,
        action="STAKE",
        chain="ethereum-devnet",
        vault_id="vault-1",
        amount="32",
        spec_json="{}",
        state="SUBMITTED",
        digest="00" * 32,
        policy_version="1",
        requirement_json="",
        tx_hash="",
        reason="",
        summary="",
        workflow_started=1,
        last_sequence=1,
        created_at=now,
        updated_at=now,
    )
    with transaction(sessions) as s:
        assert repo.insert_intent(s, row) is not None
    return row.intent_id


async def until(condition: Callable[[], bool], timeout: float = PROMPT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def watch(channel: grpc.aio.Channel, intent_id: str) -> Any:
    stub = staking_pb2_grpc.StakingServiceStub(channel)
    return stub.WatchIntent(staking_pb2.WatchIntentRequest(intent_id=intent_id), metadata=OPS)


async def next_event(call: Any) -> staking_pb2.IntentEvent:
    response = await asyncio.wait_for(call.read(), PROMPT)
    assert isinstance(response, staking_pb2.WatchIntentResponse), response
    return response.event


async def test_a_transition_the_worker_reports_reaches_the_watcher_at_once(
    staking: Staking, session_factory: sessionmaker[Session], slow_poll: None
) -> None:
    intent_id = submitted(session_factory)
    async with staking.channel() as channel, staking.client(WORKER) as client:
        call = watch(channel, intent_id)
        first = await next_event(call)
        assert (first.sequence, first.state) == (1, staking_pb2.INTENT_STATE_SUBMITTED)
        assert staking.service.wakeups.registered() == 1

        activities = worker(staking, client)
        started = time.monotonic()
        await activities.record_transition(TransitionInput(intent_id, 2, "AWAITING_POLICY"))
        second = await next_event(call)
        assert (second.sequence, second.state) == (2, staking_pb2.INTENT_STATE_AWAITING_POLICY)
        assert time.monotonic() - started < PROMPT < SLOW_POLL

        # the terminal transition ends the stream, and the watcher's registration with it
        await activities.record_transition(TransitionInput(intent_id, 3, "CANCELLED", "by ops"))
        assert (await next_event(call)).state == staking_pb2.INTENT_STATE_CANCELLED
        assert await asyncio.wait_for(call.code(), PROMPT) == grpc.StatusCode.OK
    assert staking.service.wakeups.registered() == 0


async def test_a_retried_transition_is_recorded_and_audited_once_with_everything_it_carries(
    staking: Staking, session_factory: sessionmaker[Session]
) -> None:
    intent_id = submitted(session_factory)
    deadline = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    awaiting = TransitionInput(
        intent_id,
        2,
        "AWAITING_APPROVALS",
        "rule ops",
        {
            "requirement": [{"name": "ops", "threshold": 2, "members": ["b", "a"]}],
            "deadline": deadline.isoformat(),
        },
    )
    broadcast = TransitionInput(intent_id, 3, "BROADCAST", "0xab", {"tx_hash": "0x" + "ab" * 32})
    async with staking.client(WORKER) as client:
        activities = worker(staking, client)
        for inp in (awaiting, awaiting, broadcast, broadcast):  # each retried once
            await activities.record_transition(inp)
        assert await client.record_transition(Transition(intent_id, 3, "BROADCAST")) is False
    with session_factory() as s:
        assert [e.sequence for e in repo.events_of(s, intent_id)] == [1, 2, 3]
        row = s.get(IntentRow, intent_id)
        assert row is not None
        assert (row.state, row.last_sequence, row.tx_hash) == ("BROADCAST", 3, "0x" + "ab" * 32)
        assert row.approval_deadline == deadline
        assert row.requirement_json == '[{"members": ["a", "b"], "name": "ops", "threshold": 2}]'
        audited = list(
            s.scalars(select(AuditRecordRow).where(AuditRecordRow.subject == f"intent:{intent_id}"))
        )
    assert [(a.action, a.actor) for a in audited] == [
        ("intent.awaiting_approvals", "worker"),
        ("intent.broadcast", "worker"),
    ]


async def test_a_staking_service_out_of_reach_fails_the_activity_so_that_it_is_retried(
    staking: Staking, session_factory: sessionmaker[Session]
) -> None:
    """Nothing is swallowed: the attempt fails, Temporal retries it, and nothing was recorded."""
    intent_id = submitted(session_factory)
    unreachable = StakingClient(grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}"), metadata=WORKER)
    async with unreachable:
        with pytest.raises(Unavailable):
            await worker(staking, unreachable).record_transition(
                TransitionInput(intent_id, 2, "AWAITING_POLICY")
            )
    with session_factory() as s:
        assert [e.sequence for e in repo.events_of(s, intent_id)] == [1]


async def test_a_wake_up_while_the_watcher_is_busy_is_not_lost(
    staking: Staking, session_factory: sessionmaker[Session], slow_poll: None
) -> None:
    """Recorded while the stream is handing out an event (not waiting): the next wait returns at once."""
    intent_id = submitted(session_factory)
    events = staking.service.watch(intent_id, 0)
    try:
        assert (await anext(events)).sequence == 1  # suspended at its yield, registered
        assert await staking.service.record_transition(
            WORKER_PRINCIPAL, Transition(intent_id, 2, "AWAITING_POLICY")
        )
        assert (await asyncio.wait_for(anext(events), PROMPT)).sequence == 2
    finally:
        await events.aclose()
    assert staking.service.wakeups.registered() == 0


async def test_a_transition_another_replica_records_reaches_the_watcher_by_its_poll(
    staking: Staking, db_url: str, session_factory: sessionmaker[Session]
) -> None:
    """Only the replica that records wakes its watchers; the others' watchers read at their poll."""
    assert service_module.WATCH_POLL_SECONDS == 0.25
    intent_id = submitted(session_factory)
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    other = StakingService(
        sessions=sessions,
        temporal=staking.service._temporal,
        task_queue="unused",
        policy=staking.nowhere[0],
        signer=staking.nowhere[1],
        chain=staking.nowhere[2],
        audit=AuditWriter(sessions, actor="svc:staking"),
    )
    try:
        async with staking.channel() as channel:
            call = watch(channel, intent_id)
            assert (await next_event(call)).sequence == 1
            await other.record_transition(WORKER_PRINCIPAL, Transition(intent_id, 2, "AWAITING_POLICY"))
            assert (await next_event(call)).state == staking_pb2.INTENT_STATE_AWAITING_POLICY
            call.cancel()
    finally:
        engine.dispose()


async def test_cancelled_watchers_leave_no_registration(
    staking: Staking, session_factory: sessionmaker[Session], slow_poll: None
) -> None:
    intent_id = submitted(session_factory)
    wakeups = staking.service.wakeups

    # a client that hangs up mid-stream
    async with staking.channel() as channel:
        calls = [watch(channel, intent_id) for _ in range(3)]
        for call in calls:
            await next_event(call)
        assert wakeups.registered() == 3
        for call in calls:
            call.cancel()
        await until(lambda: wakeups.registered() == 0)

    # a task consuming the watch, cancelled while it waits
    async def consume() -> None:
        async for _ in staking.service.watch(intent_id, 0):
            pass

    task = asyncio.create_task(consume())
    await until(lambda: wakeups.registered() == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert wakeups.registered() == 0
    assert wakeups.wake(intent_id) == 0


async def test_only_the_worker_may_record_transitions_and_malformed_ones_are_refused(
    staking: Staking, session_factory: sessionmaker[Session]
) -> None:
    methods = {m.name for m in staking_pb2.DESCRIPTOR.services_by_name["StakingService"].methods}
    assert set(StakingServicer.ROLES) == methods
    assert StakingServicer.ROLES["RecordTransition"] == frozenset({"svc:worker"})

    intent_id = submitted(session_factory)
    request = staking_pb2.RecordTransitionRequest(
        intent_id=intent_id, sequence=2, state=staking_pb2.INTENT_STATE_FAILED, detail="forged"
    )
    async with staking.channel() as channel:
        stub = staking_pb2_grpc.StakingServiceStub(channel)
        for who in (OPS, ((HEADER, "alice;initiator,approver"),), ((HEADER, "svc-staking;svc:staking"),)):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.RecordTransition(request, metadata=who)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with session_factory() as s:
            assert [e.sequence for e in repo.events_of(s, intent_id)] == [1]
        bad = {
            grpc.StatusCode.INVALID_ARGUMENT: [
                staking_pb2.RecordTransitionRequest(),
                staking_pb2.RecordTransitionRequest(intent_id=intent_id, sequence=2),  # no state
                staking_pb2.RecordTransitionRequest(
                    intent_id=intent_id, sequence=1, state=staking_pb2.INTENT_STATE_FAILED
                ),
            ],
            grpc.StatusCode.NOT_FOUND: [
                staking_pb2.RecordTransitionRequest(
                    intent_id="int-unknown", sequence=2, state=staking_pb2.INTENT_STATE_FAILED
                )
            ],
        }
        for code, requests in bad.items():
            for r in requests:
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await stub.RecordTransition(r, metadata=WORKER)
                assert e.value.code() == code, r
        ok = await stub.RecordTransition(request, metadata=WORKER)
        assert ok == staking_pb2.RecordTransitionResponse(recorded=True)


async def test_a_watch_from_past_any_sequence_is_invalid_argument(
    staking: Staking, session_factory: sessionmaker[Session]
) -> None:
    """Sequences are an INTEGER column: 2**31 failed in PostgreSQL (INTERNAL), 2**63 in both."""
    intent_id = submitted(session_factory)
    async with staking.channel() as channel:
        stub = staking_pb2_grpc.StakingServiceStub(channel)
        for after in (2**31, 2**64 - 1):
            request = staking_pb2.WatchIntentRequest(intent_id=intent_id, after_sequence=after)
            with pytest.raises(grpc.aio.AioRpcError) as e:
                async for _ in stub.WatchIntent(request, metadata=OPS, timeout=5):
                    pass
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
            assert "after_sequence must be between 0 and 2147483647" in (e.value.details() or "")
