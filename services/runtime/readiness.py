"""Whether a service can do its work: its schema at start, its dependencies while it runs.

A service whose database, Temporal or chain node is down answers every call with
UNAVAILABLE or INTERNAL; its gRPC health status says so first. :class:`Readiness`
runs each :class:`Probe` of the service every few seconds (one cheap call each, never
two at once) and sets the health of every service the server hosts: NOT_SERVING while
any probe fails, SERVING again once all pass. A failure is logged once, with its reason,
when it starts, and its end once.

:func:`require_schema` runs before a service serves at all: on a database that
``custos db migrate`` has not brought to the schema of this code it refuses to start
with one line naming that command, instead of answering INTERNAL to every call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from services.runtime.errors import FailedPrecondition, Unavailable

log = logging.getLogger("custos.readiness")

#: Seconds a probe may take before it counts as failed.
PROBE_TIMEOUT = 3.0


@dataclass(frozen=True)
class Probe:
    """One dependency: ``check`` returns when it answers, raises (any error) when it does not."""

    name: str
    check: Callable[[], Awaitable[None]]


class Readiness:
    """Sets the server's health from its probes, every ``interval`` seconds.

    A dependency counts as down after ``strikes`` failed rounds in a row (one slow answer
    under load does not take a service out), and as up again at its first answer.
    """

    def __init__(
        self,
        health: Any,
        names: Sequence[str],
        probes: Sequence[Probe],
        *,
        interval: float = 5.0,
        timeout: float = PROBE_TIMEOUT,
        strikes: int = 2,
    ) -> None:
        self._health = health
        self._names = (*names, "")
        self._probes = tuple(probes)
        self._interval = interval
        self._timeout = timeout
        self._strikes = strikes
        self._misses: dict[str, int] = {}
        self._serving: bool | None = None
        #: The dependencies counted as down, with the reason of their last failure.
        self.down: dict[str, str] = {}

    async def _run(self, probe: Probe) -> str:
        try:
            await asyncio.wait_for(probe.check(), self._timeout)
        except TimeoutError:
            return f"no answer within {self._timeout:g}s"
        except Exception as e:  # whatever the dependency's client raises: the probe's verdict
            return _one_line(e)
        return ""

    async def check(self) -> dict[str, str]:
        """One round of every probe; sets the health and returns the dependencies counted as down."""
        from grpc_health.v1 import health_pb2

        reasons = await asyncio.gather(*(self._run(p) for p in self._probes))
        down: dict[str, str] = {}
        for probe, reason in zip(self._probes, reasons, strict=True):
            self._misses[probe.name] = self._misses.get(probe.name, 0) + 1 if reason else 0
            if reason and self._misses[probe.name] >= self._strikes:
                down[probe.name] = reason
                if probe.name not in self.down:
                    log.warning("not serving: %s is down: %s", probe.name, reason)
            elif not reason and probe.name in self.down:
                log.info("%s answers again", probe.name)
        self.down = down
        serving = not down
        if serving != self._serving:
            status = health_pb2.HealthCheckResponse
            for service in self._names:
                await self._health.set(service, status.SERVING if serving else status.NOT_SERVING)
            self._serving = serving
        return down

    async def run_forever(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self._interval)


def _one_line(e: BaseException) -> str:
    text_ = str(getattr(e, "message", "") or e).strip().splitlines()
    return f"{type(e).__name__}: {text_[0][:200]}" if text_ else type(e).__name__


# --- the probes of custos's dependencies ------------------------------------------------------


def database_probe(engine: Engine, service: str) -> Probe:
    """Reads one row of one of ``service``'s tables, as the service would, with short waits for locks.

    Short waits: a database whose lock another session holds (a long migration, a stuck
    transaction) fails the probe as an unreachable one does. On SQLite the probe also takes
    the write lock for a moment (``BEGIN IMMEDIATE``, the way this service's writes begin).
    """
    table = _probe_table(service)
    sqlite = engine.dialect.name == "sqlite"
    wait_ms = int(PROBE_TIMEOUT * 1000 * 0.8)
    name = table.name if sqlite else table.fullname

    def check() -> None:
        with engine.connect() as conn:
            raw = conn.connection.dbapi_connection
            if sqlite:  # on the driver's connection: through SQLAlchemy it would begin a transaction
                raw.execute(f"PRAGMA busy_timeout={wait_ms}")  # type: ignore[union-attr]
            try:
                conn.begin()
                if not sqlite:
                    conn.execute(text(f"SET LOCAL lock_timeout = {wait_ms}"))
                    conn.execute(text(f"SET LOCAL statement_timeout = {wait_ms}"))
                conn.execute(text(f"SELECT 1 FROM {name} LIMIT 1"))  # a model's name, not input
            finally:
                conn.rollback()
                if sqlite:
                    raw.execute("PRAGMA busy_timeout=30000")  # type: ignore[union-attr]

    async def probe() -> None:
        await asyncio.to_thread(check)

    return Probe("the database", probe)


def _probe_table(service: str) -> Any:
    from services.runtime.migrate import load_models

    tables = sorted((t for t in load_models().tables.values() if t.schema == service), key=lambda t: t.name)
    if not tables:
        raise ValueError(f"the {service} service has no table to probe")
    return tables[0]


def temporal_probe(client: Any) -> Probe:
    """Temporal's frontend health check (one RPC, no retries)."""

    async def probe() -> None:
        from datetime import timedelta

        if not await client.service_client.check_health(timeout=timedelta(seconds=PROBE_TIMEOUT)):
            raise Unavailable("the frontend reports it is not serving")

    return Probe("Temporal", probe)


def node_probe(chain: str, head: Callable[[], Awaitable[int]]) -> Probe:
    """The chain's node, asked for its latest block."""

    async def probe() -> None:
        await head()

    return Probe(f"the {chain} node", probe)


# --- the schema ---------------------------------------------------------------------------------


def missing_tables(engine: Engine) -> list[str]:
    """The tables of this code's models the database lacks (all of them on an empty database)."""
    from services.runtime.migrate import load_models

    tables = list(load_models().tables.values())
    sqlite = engine.dialect.name == "sqlite"
    inspector = inspect(engine)
    found: dict[str | None, set[str]] = {}
    missing = []
    for t in tables:
        schema = None if sqlite else t.schema
        if schema not in found:
            found[schema] = set(inspector.get_table_names(schema=schema))
        if t.name not in found[schema]:
            missing.append(t.name if sqlite else t.fullname)
    return sorted(missing)


def require_schema(engine: Engine) -> None:
    """Refuses to serve from a database the migrations have not brought to this code's tables.

    Raises:
        FailedPrecondition: tables are missing; the message names the command that creates them.
        Unavailable: the database cannot be reached.
    """
    try:
        missing = missing_tables(engine)
    except SQLAlchemyError as e:
        raise Unavailable(f"cannot reach the database: {_one_line(getattr(e, 'orig', None) or e)}") from None
    if not missing:
        return
    where = engine.url.render_as_string(hide_password=True)
    what = "is not migrated" if len(missing) == len(_all_tables()) else f"lacks {len(missing)} tables"
    raise FailedPrecondition(
        f"the database {where} {what} ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}): "
        f"run `custos db migrate --url {where}` (on PostgreSQL as the owner role) and start again"
    )


def _all_tables() -> list[str]:
    from services.runtime.migrate import load_models

    return list(load_models().tables)
