"""Ports for the processes custos starts (dev stack, devnets), allocated so that no two get the same one.

Binding port 0 and closing the socket hands out an *ephemeral* port: the kernel may give the same
one to the next such bind (``make demo`` once gave the audit service and the Temporal UI one port),
and to any outgoing connection, in the seconds before the process it was meant for binds it.
So ports come from below the kernel's ephemeral range (which outgoing connections never use),
one stack's ports are all held bound at once while they are picked (distinct by construction), and
this process never hands out a port twice. What is left is another program choosing the same
port below the ephemeral range in the seconds before the child binds it.
"""

from __future__ import annotations

import random
import socket
import threading
from contextlib import ExitStack
from pathlib import Path

#: The lowest port handed out: below it are well-known and registered services' habits.
LOWEST = 20_000
_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_given: set[int] = set()
_lock = threading.Lock()


def ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (32768 when it cannot be read)."""
    try:
        return int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def allocate(n: int, *, rng: random.Random | None = None) -> list[int]:
    """``n`` distinct free ports on 127.0.0.1, none handed out before by this process.

    Each candidate is bound (without SO_REUSEADDR) and held until all ``n`` are found, so a port
    another program holds, or one of this batch, is never chosen.
    """
    pick = rng or random.SystemRandom()
    high = ephemeral_low()
    if high - LOWEST < 4 * n:
        raise RuntimeError(f"too few ports below the ephemeral range ({LOWEST}-{high}) for {n}")
    out: list[int] = []
    with _lock, ExitStack() as held:
        tries = 0
        while len(out) < n:
            tries += 1
            if tries > 50 * n:
                raise RuntimeError(f"no {n} free ports found between {LOWEST} and {high}")
            port = pick.randrange(LOWEST, high)
            if port in _given or port in out:
                continue
            s = held.enter_context(socket.socket())
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            out.append(port)
        _given.update(out)
    return out


def free_port() -> int:
    """One port, as :func:`allocate` hands them out."""
    return allocate(1)[0]
