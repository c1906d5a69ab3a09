"""Group commit: the signing records and audit entries of concurrent calls share one transaction.

A commit costs a disk sync (SQLite's WAL fsync, PostgreSQL's WAL flush) and, for the
audit trail, the lock on its head row. Paid once per signature it caps the signer at
a few hundred signatures a second; paid once per batch it is shared by every call
that arrived while the previous batch was committing.

One thread per process owns the committing. A caller hands in a unit of work (a
function of the open session) and blocks until the transaction that ran it has
committed, or failed. A batch is whatever is queued when the previous commit
returns, and, while other calls are still on their way (``pending`` counts the
calls that are deciding and will submit shortly), whatever arrives within a short
``window`` after the first unit. Without that window the signer's checks, which run
one call at a time, hand over one unit per commit: every signature then paid its own
transaction and disk sync (measured: 1.0 unit per batch at 16 calls in flight).
A lone caller never waits: with nothing pending it commits at once.

Failure semantics, which the signer's "recorded before returned" rests on:

* a unit's result is released only after the transaction that ran it committed and
  ``after_commit`` returned;
* when a batch fails (any unit raised, or the commit did), nothing of it is kept, and
  each of its units is run again alone, in its own transaction, so that each caller
  gets its own outcome: the unit at fault fails, the others commit. If the database
  itself is failing, every one of them fails.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from services.runtime.db import transaction

log = logging.getLogger(__name__)

#: How often a waiting batch looks again whether more units are still coming.
_POLL = 0.0005

T = TypeVar("T")

#: A unit of work: runs inside the batch's open transaction; must be safe to run again.
Work = Callable[[Session], T]


@dataclass
class _Job(Generic[T]):
    work: Work[T]
    future: Future[T] = field(default_factory=Future)


class GroupCommitter:
    """Commits units of work from many threads in shared transactions, one committing thread.

    Args:
        sessions: Sessions on the database the units write to.
        max_batch: Most units in one transaction (bounds the time the write lock is held).
        window: Longest wait, in seconds, for more units after the first of a batch,
            and only while ``pending()`` says more are coming (0: never wait).
        pending: How many units are on their way (default: none).
        before_commit: Called inside each transaction after its units ran, with the session's
            ``info``; if it raises, the transaction rolls back as if a unit had (the signer writes
            its ledger head to the HSM token here, before the database holds the batch).
        after_commit: Called, before the callers are released, with the committed session's
            ``info`` (what the units left there for after the commit: the signer's ledger entries).
            If it raises, the batch stays committed and every caller gets its error instead of
            its result (the signer: no signature leaves before its record is anchored).
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        max_batch: int = 64,
        window: float = 0.0,
        pending: Callable[[], int] = lambda: 0,
        before_commit: Callable[[dict[str, Any]], None] | None = None,
        after_commit: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self._sessions = sessions
        self._max_batch = max_batch
        self._window = window
        self._pending = pending
        self._before_commit = before_commit
        self._after_commit = after_commit
        self._queue: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()

    def submit(self, work: Work[T]) -> Future[T]:
        """Queues ``work``; the future resolves once its transaction committed (or failed)."""
        job: _Job[T] = _Job(work)
        with self._lock:
            if self._closed:
                raise RuntimeError("the committer is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="signer-commit", daemon=True)
                self._thread.start()
            self._queue.put(job)
        return job.future

    def run(self, work: Work[T]) -> T:
        """:meth:`submit` and wait: returns ``work``'s result once committed, or raises its error."""
        return self.submit(work).result()

    def close(self) -> None:
        """Commits what is queued, then stops the thread."""
        with self._lock:
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._queue.put(None)
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                return
            batch: list[_Job[Any]] = [first]
            deadline = time.monotonic() + self._window
            while len(batch) < self._max_batch:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    wait = deadline - time.monotonic()
                    if wait <= 0 or self._pending() <= 0:
                        break
                    try:
                        job = self._queue.get(timeout=min(wait, _POLL))
                    except queue.Empty:
                        continue  # look again at what is pending and how long is left
                if job is None:
                    stop = True
                    break
                batch.append(job)
            try:
                self._commit(batch)
            except BaseException as e:  # never leave a caller waiting
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(e)
                log.exception("the commit thread failed")

    def _commit(self, batch: list[_Job[Any]]) -> None:
        try:
            with transaction(self._sessions) as session:
                results = [job.work(session) for job in batch]
                info = session.info
                if self._before_commit is not None:
                    self._before_commit(info)
        except Exception as e:
            if len(batch) == 1:
                batch[0].future.set_exception(e)
                return
            for job in batch:  # each alone: the one at fault fails, the others commit
                self._commit([job])
            return
        if self._after_commit is not None:
            try:
                self._after_commit(info)
            except Exception as e:  # committed, but not released: each caller gets the hook's error
                log.error("the after-commit hook failed: %s", type(e).__name__)
                for job in batch:
                    job.future.set_exception(e)
                return
        for job, result in zip(batch, results, strict=True):
            job.future.set_result(result)
