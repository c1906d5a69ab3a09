"""Runs in a child process (multiprocessing "spawn"): appends records as one service would."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from services.audit.writer import AuditWriter
from services.runtime.db import make_engine, make_session_factory

BARRIER_TIMEOUT = 60.0  # a sibling that died before the barrier breaks it instead of hanging the rest


def append_many(url: str, actor: str, count: int, barrier: Any) -> None:
    engine = make_engine(url)
    writer = AuditWriter(make_session_factory(engine), actor)
    writer.record("process.started", f"process:{actor}", "ok")  # connect before the race starts
    barrier.wait(BARRIER_TIMEOUT)
    for i in range(count - 1):
        writer.record("step.done", f"intent:{i % 7}", "ok", {"i": i})
    engine.dispose()


def audit_replica(
    url: str, token: dict[str, str], head_label: str, count: int, barrier: Any, opening: Any
) -> None:
    """An audit replica: appends and checkpoints, sharing the token and the database with the others.

    The replicas open the token one at a time (``opening``): SoftHSM's file store is not safe to
    read while another process writes it, and logging in writes it (seen here: NoSuchToken).
    """
    from pydantic import SecretStr

    from services.audit.hsm_signer import HsmCheckpointSigner, HsmHeadStore
    from services.audit.service import AuditService, CheckpointPolicy
    from services.runtime.settings import HsmSettings
    from services.signer.hsm import Hsm

    engine = make_engine(url)
    with opening:
        hsm = Hsm(HsmSettings(token_label=token["label"], pin=SecretStr(token["pin"]))).open()
        signer = HsmCheckpointSigner.ensure(hsm, label=token["key_label"])
    audit = AuditService(
        make_session_factory(engine),
        signer=signer,
        policy=CheckpointPolicy(every_records=3, every_seconds=3600),
        head_store=HsmHeadStore(hsm, label=head_label),
    )
    barrier.wait(BARRIER_TIMEOUT)
    for i in range(count):
        audit.append("svc:audit", "step.done", f"intent:{i % 5}", "ok", {"i": i})
        if i % 4 == 0:
            audit.checkpoint()
    hsm.close()
    engine.dispose()


def run_all(procs: Sequence[Any], timeout: float) -> list[int | None]:
    """Starts the processes, waits up to ``timeout`` for all, kills stragglers, returns the exit codes.

    A straggler left alive would keep pytest from exiting (multiprocessing joins its children at exit).
    """
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
    return [p.exitcode for p in procs]
