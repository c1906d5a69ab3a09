"""Runs one service process: settings, logging, tracing, server, signals, clean-up.

Each service package has a ``main.py`` with ``SETTINGS`` (its settings class)
and ``async def build(settings) -> Component``: the bindings it serves and what to
close on the way out. ``custos serve <name>`` calls :func:`run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from services.runtime.db import make_engine
from services.runtime.logs import setup_logging
from services.runtime.readiness import Probe, Readiness, require_schema
from services.runtime.server import (
    DenialHook,
    RunningServer,
    ServiceBinding,
    serve_until_signalled,
    start_server,
)
from services.runtime.settings import ServiceSettings, load
from services.runtime.telemetry import setup_telemetry

log = logging.getLogger("custos.runner")


@dataclass
class Component:
    bindings: Sequence[ServiceBinding]
    on_denied: DenialHook | None = None
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    #: What the service needs to do its work (its database, Temporal, its nodes): while one is
    #: down, its health is NOT_SERVING (see ``runtime.readiness``).
    probes: list[Probe] = field(default_factory=list)

    async def close(self) -> None:
        for closer in reversed(self.closers):
            try:
                await closer()
            except Exception:
                log.exception("error while closing")


def settings_for(service: str) -> ServiceSettings:
    module = importlib.import_module(f"services.{service}.main")
    return load(module.SETTINGS)


async def start_service(service: str, settings: ServiceSettings) -> tuple[RunningServer, Component]:
    """Builds ``service`` from its ``main.py`` and serves it; the caller stops both.

    Refuses (FailedPrecondition, one line) a database the migrations have not brought to this
    code's tables. Once serving, its health follows its dependencies every
    ``health_probe_seconds`` (0: SERVING whatever they do).
    """
    module = importlib.import_module(f"services.{service}.main")
    engine = make_engine(settings.database_url)
    try:
        await asyncio.to_thread(require_schema, engine)
    finally:
        engine.dispose()
    component: Component = await module.build(settings)
    try:
        running = await start_server(settings, component.bindings, on_denied=component.on_denied)
    except BaseException:
        await component.close()
        raise
    if component.probes and settings.health_probe_seconds > 0:
        readiness = Readiness(
            running.health, running.names, component.probes, interval=settings.health_probe_seconds
        )
        task = asyncio.create_task(readiness.run_forever(), name=f"custos-{service}-readiness")

        async def stop_probing() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        component.closers.append(stop_probing)  # closed first
    return running, component


async def run_service(service: str) -> None:
    module = importlib.import_module(f"services.{service}.main")
    settings = load(module.SETTINGS)
    setup_logging(settings.log_level, settings.log_format, service)
    setup_telemetry(settings.telemetry, service)
    running, component = await start_service(service, settings)
    try:
        await serve_until_signalled(running)
    finally:
        await component.close()


def main(service: str) -> None:
    asyncio.run(run_service(service))
