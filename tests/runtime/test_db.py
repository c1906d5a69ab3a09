"""SQLite sessions: writers serialise with BEGIN IMMEDIATE; readers take no write lock."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from services.runtime.db import make_engine, make_session_factory, reading, transaction


def test_an_open_reader_does_not_hold_the_write_lock(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    engine, other = make_engine(url), make_engine(url)
    try:
        with transaction(make_session_factory(engine)) as s:
            s.execute(text("CREATE TABLE t (v INTEGER)"))
        wrote = threading.Event()

        def write() -> None:
            with transaction(make_session_factory(other)) as s:
                s.execute(text("INSERT INTO t VALUES (1)"))
            wrote.set()

        with reading(make_session_factory(engine)) as r:
            assert r.execute(text("SELECT count(*) FROM t")).scalar_one() == 0  # the read transaction is open
            writer = threading.Thread(target=write)
            writer.start()
            # with BEGIN IMMEDIATE here the writer would wait for this session (busy timeout 30 s)
            assert wrote.wait(10), "the writer waited for a reader"
            assert r.execute(text("SELECT count(*) FROM t")).scalar_one() == 0  # a stable snapshot
        writer.join()
        with reading(make_session_factory(engine)) as r:
            assert r.execute(text("SELECT count(*) FROM t")).scalar_one() == 1
    finally:
        engine.dispose()
        other.dispose()


def test_a_plain_session_still_takes_the_write_lock_first(tmp_path: Path) -> None:
    """Sessions outside :func:`reading` begin IMMEDIATE: a second writer waits, it never fails midway."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    engine = make_engine(url)
    try:
        factory = make_session_factory(engine)
        with transaction(factory) as s:
            s.execute(text("CREATE TABLE t (v INTEGER)"))
        with factory() as s:
            s.execute(text("SELECT 1"))
            raw = s.connection().connection.dbapi_connection
            assert raw is not None and raw.in_transaction
            # another connection cannot start a write while this one holds the reserved lock
            probe = sqlite3.connect(tmp_path / "x.db", timeout=0.1, isolation_level=None)
            try:
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    probe.execute("BEGIN IMMEDIATE")
            finally:
                probe.close()
    finally:
        engine.dispose()
