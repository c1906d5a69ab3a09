"""Wakes this process's ``WatchIntent`` streams when it records a transition of their intent.

The worker reports each transition through ``RecordTransition`` to one staking
replica, which records it and wakes its own watchers here. A wake-up carries nothing
the watcher trusts: a woken watcher re-reads the events from the database, the source
of truth. Watchers on the other replicas are not woken: they find the transition at
their fallback poll, so a replica only ever costs them latency.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager


class TransitionWakeups:
    """One :class:`asyncio.Event` per watching stream, keyed by intent id; one event loop only."""

    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Event]] = {}

    @contextmanager
    def listen(self, intent_id: str) -> Iterator[asyncio.Event]:
        """Registers a watcher of ``intent_id`` until the block exits, however it exits.

        Register before the first read: a transition committed between the read and the
        wait then leaves the event set, so the wait returns at once (no lost wake-up).
        """
        event = asyncio.Event()
        self._waiting.setdefault(intent_id, set()).add(event)
        try:
            yield event
        finally:
            waiting = self._waiting.get(intent_id)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._waiting[intent_id]

    def wake(self, intent_id: str) -> int:
        """Wakes every watcher of ``intent_id``; returns how many there were."""
        waiting = self._waiting.get(intent_id, set())
        for event in waiting:
            event.set()
        return len(waiting)

    def registered(self) -> int:
        """How many watchers are registered, over all intents (a cancelled stream leaves none)."""
        return sum(len(w) for w in self._waiting.values())
