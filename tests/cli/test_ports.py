"""The dev stack's ports: never the same one twice, never one that is taken, never an ephemeral one
(the kernel hands those to the next bind of port 0 and to outgoing connections)."""

from __future__ import annotations

import random
import socket

import pytest

from services.runtime import ports


def test_many_allocations_in_a_row_never_repeat_a_port() -> None:
    seen: list[int] = []
    for _ in range(100):
        seen += ports.allocate(7)  # one stack: five services, Temporal and its UI
    assert len(seen) == len(set(seen)) == 700


def test_no_port_is_from_the_ephemeral_range() -> None:
    low = ports.ephemeral_low()
    assert all(ports.LOWEST <= p < low for p in ports.allocate(50))


def test_a_port_someone_holds_is_never_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        while True:  # a port of the allocator's range, held by another socket (not listening)
            port = random.randrange(ports.LOWEST, ports.ephemeral_low())
            try:
                taken.bind(("127.0.0.1", port))
                break
            except OSError:
                continue

        class TakenFirst(random.Random):
            """Proposes the held port first, then what a random allocator would."""

            first = True

            def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
                if self.first:
                    self.first = False
                    return port
                return super().randrange(start, stop, step)

        got = ports.allocate(3, rng=TakenFirst())
    assert port not in got and len(set(got)) == 3
