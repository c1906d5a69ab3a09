"""WatchIntent is pushed across processes: the worker records a transition in the database, then
calls NotifyTransition, which wakes the staking service's watchers to re-read it.

The staking service is served over real gRPC (plaintext with a trusted identity header) on its own
engine; the "worker" writes through its own engine with the real ReadModelRecorder and the real
RecordTransition activity, as the worker process does. The fallback poll is set to 30 s where only
the push can deliver in time. Temporal and the policy, signer and chain services are never called
here: their clients point at a closed port.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client

from services.audit.writer import AuditWriter
from services.chain.client import ChainClient
from services.cli.devstack import free_port
from services.pb.custos.staking.v1 import staking_pb2, staking_pb2_grpc
from services.policy.client import PolicyClient
from services.runtime.db import make_engine, make_session_factory, transaction, utcnow
from services.runtime.server import RunningServer, ServiceBinding, start_server
from services.runtime.settings import ServiceSettings, TLSSettings
from services.signer.client import SignerClient
from services.staking import repository as repo
from services.staking import service as service_module
from services.staking.client import StakingClient
from services.staking.models import IntentRow
from services.staking.readmodel import ReadModelRecorder
from services.staking.service import StakingService
from services.staking.servicer import StakingServicer
from workflows.staking import activities as activities_module
from workflows.staking.activities import Notifier, StakingActivities
from workflows.staking.types import TransitionInput

HEADER = "x-custos-test-identity"
WORKER = ((HEADER, "worker;svc:worker"),)
OPS = ((HEADER, "ops;operator,compliance"),)
#: Where only the push can deliver: the fallback poll is far longer than any wait below.
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


def worker(staking: Staking, sessions: sessionmaker[Session], notifier: Notifier | None) -> StakingActivities:
    """The worker's activities, writing through the worker's own engine."""
    policy, signer, chain = staking.nowhere
    recorder = ReadModelRecorder(sessions, AuditWriter(sessions, actor="svc:worker"))
    return StakingActivities(policy=policy, signer=signer, chain=chain, recorder=recorder, notifier=notifier)


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


async def test_a_transition_the_worker_records_reaches_the_watcher_on_its_notification(
    staking: Staking, session_factory: sessionmaker[Session], slow_poll: None
) -> None:
    intent_id = submitted(session_factory)
    async with staking.channel() as channel, staking.client(WORKER) as notify:
        call = watch(channel, intent_id)
        first = await next_event(call)
        assert (first.sequence, first.state) == (1, staking_pb2.INTENT_STATE_SUBMITTED)
        assert staking.service.wakeups.registered() == 1

        activities = worker(staking, session_factory, notify.notify_transition)
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


async def test_a_wake_up_while_the_watcher_is_busy_is_not_lost(
    staking: Staking, session_factory: sessionmaker[Session], slow_poll: None
) -> None:
    """Notified while the stream is handing out an event (not waiting): the next wait returns at once."""
    intent_id = submitted(session_factory)
    recorder = ReadModelRecorder(session_factory, AuditWriter(session_factory, actor="svc:worker"))
    events = staking.service.watch(intent_id, 0)
    try:
        assert (await anext(events)).sequence == 1  # suspended at its yield, registered
        await recorder(TransitionInput(intent_id, 2, "AWAITING_POLICY"))
        assert staking.service.notify_transition(intent_id) == 1
        assert (await asyncio.wait_for(anext(events), PROMPT)).sequence == 2
    finally:
        await events.aclose()
    assert staking.service.wakeups.registered() == 0


async def test_without_a_notification_the_fallback_poll_still_delivers(
    staking: Staking, session_factory: sessionmaker[Session]
) -> None:
    assert service_module.WATCH_POLL_SECONDS == 0.25
    intent_id = submitted(session_factory)
    async with staking.channel() as channel:
        call = watch(channel, intent_id)
        assert (await next_event(call)).sequence == 1
        await worker(staking, session_factory, None).record_transition(
            TransitionInput(intent_id, 2, "AWAITING_POLICY")
        )
        assert (await next_event(call)).state == staking_pb2.INTENT_STATE_AWAITING_POLICY
        call.cancel()


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
    assert staking.service.notify_transition(intent_id) == 0


async def test_only_the_worker_may_notify(staking: Staking, session_factory: sessionmaker[Session]) -> None:
    methods = {m.name for m in staking_pb2.DESCRIPTOR.services_by_name["StakingService"].methods}
    assert set(StakingServicer.ROLES) == methods
    assert StakingServicer.ROLES["NotifyTransition"] == frozenset({"svc:worker"})

    intent_id = submitted(session_factory)
    request = staking_pb2.NotifyTransitionRequest(intent_id=intent_id, sequence=2)
    async with staking.channel() as channel:
        stub = staking_pb2_grpc.StakingServiceStub(channel)
        for who in (OPS, ((HEADER, "alice;initiator,approver"),), ((HEADER, "svc-staking;svc:staking"),)):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.NotifyTransition(request, metadata=who)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert await stub.NotifyTransition(request, metadata=WORKER) == staking_pb2.NotifyTransitionResponse()
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await stub.NotifyTransition(staking_pb2.NotifyTransitionRequest(), metadata=WORKER)
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT


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


async def test_a_failed_notification_never_fails_the_recorded_transition(
    staking: Staking, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Staking unreachable, the caller refused, or no answer: the transition stays recorded, no error."""
    intent_id = submitted(session_factory)
    monkeypatch.setattr(activities_module, "NOTIFY_TIMEOUT_SECONDS", 0.2)

    async def no_answer(intent_id: str, sequence: int) -> None:
        await asyncio.Event().wait()

    unreachable = StakingClient(grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}"), metadata=WORKER)
    async with unreachable, staking.client(OPS) as refused:
        for sequence, notifier in enumerate(
            (unreachable.notify_transition, refused.notify_transition, no_answer), start=2
        ):
            started = time.monotonic()
            await worker(staking, session_factory, notifier).record_transition(
                TransitionInput(intent_id, sequence, "AWAITING_POLICY")
            )
            assert time.monotonic() - started < 2.0
    with session_factory() as s:
        assert [e.sequence for e in repo.events_of(s, intent_id)] == [1, 2, 3, 4]
