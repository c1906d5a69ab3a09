"""Runs in a child process (multiprocessing "spawn"): appends records as one service would."""

from __future__ import annotations

from typing import Any

from services.audit.writer import AuditWriter
from services.runtime.db import make_engine, make_session_factory


def append_many(url: str, actor: str, count: int, barrier: Any) -> None:
    engine = make_engine(url)
    writer = AuditWriter(make_session_factory(engine), actor)
    writer.record("process.started", f"process:{actor}", "ok")  # connect before the race starts
    barrier.wait()
    for i in range(count - 1):
        writer.record("step.done", f"intent:{i % 7}", "ok", {"i": i})
    engine.dispose()
