"""Several processes appending at once produce one gapless chain that verifies."""

from __future__ import annotations

import itertools
import multiprocessing
from collections import Counter

from sqlalchemy.orm import Session, sessionmaker

from services.audit import repository
from services.audit.service import AuditService
from services.audit.signing import SoftwareCheckpointSigner
from tests.audit._appender import append_many, run_all

PROCESSES = 4
APPENDS = 50


def test_concurrent_processes_never_fork_or_skip(db_url: str, session_factory: sessionmaker[Session]) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    procs = [
        ctx.Process(target=append_many, args=(db_url, f"svc:writer{i}", APPENDS, barrier))
        for i in range(PROCESSES)
    ]
    assert run_all(procs, timeout=120) == [0] * PROCESSES

    total = PROCESSES * APPENDS
    with session_factory() as s:
        records = repository.records_between(s, 1, total + 10)
        head = repository.read_head(s)
    assert [r.sequence for r in records] == list(range(1, total + 1))
    assert head.sequence == total and head.hash == records[-1].hash
    assert Counter(r.actor for r in records) == {f"svc:writer{i}": APPENDS for i in range(PROCESSES)}
    actors_in_a_row = sum(a.actor != b.actor for a, b in itertools.pairwise(records))
    assert actors_in_a_row > PROCESSES, "the processes did not actually interleave"

    audit = AuditService(session_factory, signer=SoftwareCheckpointSigner("dev"))
    audit.checkpoint()
    result, latest = audit.verify()
    assert result.ok and result.records_checked == total and latest is not None and latest.sequence == total
