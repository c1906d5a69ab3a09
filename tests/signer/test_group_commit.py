"""Group commit: concurrent Signs share transactions, and nothing leaves before its record commits."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from services.audit.models import AuditRecordRow
from services.runtime.db import make_session_factory, read_only
from services.signer.commits import GroupCommitter
from services.signer.errors import AuditUnavailable
from services.signer.models import SigningRecord
from services.signer.service import SignInput, SignOutput
from tests.signer.conftest import SignerRig


def _records(sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        return int(s.scalar(select(func.count()).select_from(SigningRecord)) or 0)


def _distinct(rig: SignerRig, n: int) -> list[SignInput]:
    """``n`` sign requests for distinct intents (own validator and nonce each)."""
    out = []
    for i in range(n):
        validator = secrets.token_bytes(48)
        spec = rig.unstake_spec(validator)
        out.append(rig.request(spec, rig.unstake_tx(validator, nonce=i), intent_id=f"intent-{i}"))
    return out


@pytest.mark.parametrize("rig", [0, 1, 4], indirect=True, ids=["on-loop", "1-thread", "4-threads"])
def test_concurrent_distinct_signs_each_get_their_record_and_audit_entry(rig: SignerRig) -> None:
    requests = _distinct(rig, 24)

    async def burst() -> list[str]:
        outs = await asyncio.gather(*(rig.service.sign(r, actor="w") for r in requests))
        assert not any(o.replayed for o in outs)
        return [o.signing_record_id for o in outs]

    ids = asyncio.run(burst())
    assert len(set(ids)) == 24
    with rig.sessions() as s:
        stored = set(s.scalars(select(SigningRecord.record_id)))
    assert stored == set(ids)
    signed = rig.audit_rows("signed")
    assert len(signed) == 24
    assert {i for i in ids if any(i in row.payload_json for row in signed)} == set(ids)


@pytest.mark.parametrize("rig", [0, 1], indirect=True, ids=["on-loop", "1-thread"])
def test_a_failing_audit_write_refuses_every_call_of_the_batch(rig: SignerRig) -> None:
    requests = _distinct(rig, 12)
    rig.audit.fail = True

    async def burst() -> list[SignOutput | BaseException]:
        return await asyncio.gather(
            *(rig.service.sign(r, actor="w") for r in requests),
            return_exceptions=True,
        )

    results = asyncio.run(burst())
    assert all(isinstance(r, AuditUnavailable) for r in results)
    assert _records(rig.sessions) == 0
    assert rig.audit_rows("signed") == []
    rig.audit.fail = False
    again = asyncio.run(burst())  # the same requests sign now: none had been signed before
    assert all(isinstance(r, SignOutput) and not r.replayed for r in again)


def _blocked_batch(committer: GroupCommitter, works: list[Callable[[Session], object]]) -> list[object]:
    """Submits ``works`` while the commit thread is held, so that they form one batch."""
    started, release = threading.Event(), threading.Event()

    def hold(_: Session) -> None:
        started.set()
        release.wait(10)

    first = committer.submit(hold)
    assert started.wait(10)
    futures = [committer.submit(w) for w in works]
    release.set()
    first.result(10)
    return [f.exception(10) or f.result(10) for f in futures]


def _audit_count(sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        return int(s.scalar(select(func.count()).select_from(AuditRecordRow)) or 0)


def test_one_failing_unit_fails_alone_and_the_rest_of_its_batch_commits(
    session_factory: sessionmaker[Session],
) -> None:
    from services.audit import repository as trail

    committer = GroupCommitter(session_factory)

    def good(i: int) -> Callable[[Session], object]:
        return lambda s: trail.append(s, "svc:test", "test.unit", f"unit:{i}", "ok", {"i": i}).sequence

    def bad(s: Session) -> None:
        trail.append(s, "svc:test", "test.unit", "unit:bad", "ok", {})
        raise RuntimeError("this unit fails")

    try:
        results = _blocked_batch(committer, [good(0), bad, good(1), good(2)])
    finally:
        committer.close()
    assert isinstance(results[1], RuntimeError)
    assert sorted(int(str(results[i])) for i in (0, 2, 3)) == [1, 2, 3]
    assert _audit_count(session_factory) == 3  # the failed unit's entry is not kept


def test_a_result_is_released_only_after_its_transaction_committed(
    session_factory: sessionmaker[Session],
) -> None:
    from services.audit import repository as trail

    committer = GroupCommitter(session_factory)
    reader = make_session_factory(read_only(session_factory.kw["bind"]))
    seen_inside: list[int] = []

    def work(s: Session) -> int:
        record = trail.append(s, "svc:test", "test.unit", "unit:x", "ok", {})
        seen_inside.append(_audit_count(reader))  # another connection: not committed yet
        return record.sequence

    try:
        sequence = committer.run(work)
    finally:
        committer.close()
    assert seen_inside == [0]
    assert sequence == 1 and _audit_count(session_factory) == 1


def test_a_closed_committer_refuses_work(session_factory: sessionmaker[Session]) -> None:
    committer = GroupCommitter(session_factory)
    committer.run(lambda s: None)
    committer.close()
    with pytest.raises(RuntimeError):
        committer.submit(lambda s: None)


def test_units_still_on_their_way_join_the_batch_within_the_window(
    session_factory: sessionmaker[Session],
) -> None:
    """While ``pending`` says more are coming, units handed in one by one share a transaction."""
    coming = threading.Semaphore(0)
    left = 6
    committer = GroupCommitter(session_factory, window=30.0, pending=lambda: left)

    def unit(s: Session) -> str:
        return str(s.info.setdefault("batch", secrets.token_hex(8)))  # one session per batch

    def late_submitter() -> list[Future[str]]:
        nonlocal left
        futures = []
        for _ in range(6):
            coming.acquire(timeout=10)
            left -= 1
            futures.append(committer.submit(unit))
        return futures

    try:
        with ThreadPoolExecutor(1) as pool:
            submitted = pool.submit(late_submitter)
            for _ in range(6):  # one at a time, each after the committer is already waiting
                coming.release()
                time.sleep(0.01)
            transactions = {f.result(10) for f in submitted.result(10)}
    finally:
        committer.close()
    assert len(transactions) == 1  # six units, one commit


def test_a_lone_unit_never_waits_for_the_window(session_factory: sessionmaker[Session]) -> None:
    committer = GroupCommitter(session_factory, window=60.0, pending=lambda: 0)
    try:
        assert committer.submit(lambda s: 7).result(timeout=10) == 7  # not after 60 s
    finally:
        committer.close()
