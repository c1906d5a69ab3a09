"""Logging and OpenTelemetry: set-up once per process, and the spans and instruments custos records.

One trace per intent: the ``SubmitIntent`` server span, the Temporal workflow and
its activities (``TracingInterceptor``), every gRPC call they make (a CLIENT span
in :class:`~services.runtime.client.BaseClient`, a SERVER span in the server's
interceptor, W3C ``traceparent`` in the call metadata) and the HSM call. The
global providers stay the API's no-ops until :func:`setup_telemetry` installs the
SDK's (exporter ``console``, ``otlp`` or ``memory``), and the hot paths check
:func:`tracing_on` first, so with exporter ``none`` tracing costs next to nothing.

Spans and logs never carry secrets: attributes are named under ``custos.`` and
hold identifiers (intent id, key id, chain), never PINs, keys or signatures.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any

from opentelemetry import metrics, propagate, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    InMemoryMetricReader,
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanProcessor,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from services.runtime.errors import CustosError, Internal, InvalidArgument, Unavailable
from services.runtime.settings import TelemetrySettings

log = logging.getLogger("custos.telemetry")

_tracer = trace.get_tracer("custos")  # a proxy: follows the provider installed later
_meter = metrics.get_meter("custos")

INTENTS = _meter.create_counter(
    "custos.intents",
    unit="{intent}",
    description="Intents entering each state (custos.state, custos.action).",
)
APPROVAL_WAIT = _meter.create_histogram(
    "custos.approval.wait",
    unit="s",
    description="Time from AWAITING_APPROVALS to APPROVED.",
    explicit_bucket_boundaries_advisory=[1, 10, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800],
)
SIGN_DURATION = _meter.create_histogram(
    "custos.sign.duration",
    unit="s",
    description="Signer Sign requests, checks and HSM included (custos.outcome, custos.chain).",
    explicit_bucket_boundaries_advisory=[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
)
HSM_ERRORS = _meter.create_counter(
    "custos.hsm.errors", unit="{error}", description="Failed HSM operations (custos.operation, custos.error)."
)


@dataclass(frozen=True)
class Telemetry:
    """What :func:`setup_telemetry` installed; the in-memory parts are set for exporter ``memory``."""

    exporter: str = "none"
    spans: InMemorySpanExporter | None = None
    metrics: InMemoryMetricReader | None = None


_installed: Telemetry | None = None


def setup_telemetry(settings: TelemetrySettings, service: str) -> Telemetry:
    """Installs the global tracer and meter providers for ``custos-<service>``, once per process.

    Later calls return what the first one installed: OpenTelemetry's globals can be
    set only once.
    """
    global _installed
    if _installed is not None:
        return _installed
    if settings.exporter == "none":  # installs nothing: a later call may still install an exporter
        return Telemetry()
    resource = Resource.create(
        {"service.name": f"custos-{service}", "service.namespace": settings.service_namespace}
    )
    memory_spans: InMemorySpanExporter | None = None
    memory_metrics: InMemoryMetricReader | None = None
    processor: SpanProcessor
    reader: MetricReader
    if settings.exporter == "memory":
        memory_spans, memory_metrics = InMemorySpanExporter(), InMemoryMetricReader()
        processor, reader = SimpleSpanProcessor(memory_spans), memory_metrics
    else:
        spans, points = (
            (ConsoleSpanExporter(), ConsoleMetricExporter())
            if settings.exporter == "console"
            else _otlp_exporters(settings.otlp_endpoint)
        )
        # The export interval follows OTEL_METRIC_EXPORT_INTERVAL (default 60 s).
        processor, reader = BatchSpanProcessor(spans), PeriodicExportingMetricReader(points)
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(processor)
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[reader]))
    _installed = Telemetry(settings.exporter, memory_spans, memory_metrics)
    log.info("telemetry: %s exporter for custos-%s", settings.exporter, service)
    return _installed


def _otlp_exporters(endpoint: str) -> tuple[SpanExporter, MetricExporter]:
    try:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise InvalidArgument(
            "telemetry exporter 'otlp' needs the package opentelemetry-exporter-otlp-proto-grpc"
        ) from None
    return OTLPSpanExporter(endpoint=endpoint), OTLPMetricExporter(endpoint=endpoint)


def tracing_on() -> bool:
    """True once :func:`setup_telemetry` has installed an exporter; until then callers skip all span
    work (a plain flag: asking OpenTelemetry for its provider costs microseconds per call)."""
    return _installed is not None and _installed.exporter != "none"


# --- gRPC -----------------------------------------------------------------------------------

_ID_FIELDS = ("intent_id", "vault_id", "chain", "step", "key_id")
_NESTED = ("spec", "intent")


@cache
def _plan(descriptor: Any) -> tuple[tuple[str, ...], bool, tuple[str, ...]]:
    """Which custos id fields a message type has: (string fields, has action, nested messages)."""
    fields = descriptor.fields_by_name
    ids = tuple(
        n
        for n in _ID_FIELDS
        if n in fields and fields[n].type == fields[n].TYPE_STRING and not _many(fields[n])
    )
    action = "action" in fields and fields["action"].type == fields["action"].TYPE_ENUM
    nested = tuple(n for n in _NESTED if n in fields and fields[n].type == fields[n].TYPE_MESSAGE)
    return ids, action, nested


def _many(field: Any) -> bool:
    if hasattr(field, "is_repeated"):  # protobuf >= 5.28; ``label`` is gone in recent versions
        return bool(field.is_repeated)
    return bool(field.label == field.LABEL_REPEATED)


def message_attributes(message: Any, out: dict[str, str] | None = None) -> dict[str, str]:
    """``custos.*`` attributes from a request or response: its ids, and those of its spec or intent."""
    out = {} if out is None else out
    descriptor = getattr(message, "DESCRIPTOR", None)
    if descriptor is None:
        return out
    ids, action, nested = _plan(descriptor)
    for name in ids:
        value = getattr(message, name)
        if value:
            out.setdefault(f"custos.{name}", value)
    if action and message.action:
        enum = descriptor.fields_by_name["action"].enum_type
        out.setdefault("custos.action", enum.values_by_number[message.action].name.removeprefix("ACTION_"))
    for name in nested:
        if message.HasField(name):
            message_attributes(getattr(message, name), out)
    return out


def _rpc_attributes(method: str) -> dict[str, str]:
    service, _, rpc = method.lstrip("/").partition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc}


@contextmanager
def client_span(method: str, request: Any) -> Iterator[tuple[tuple[str, str], ...]]:
    """A CLIENT span around one call to ``/pkg.Service/Method``; yields the metadata to send with it.

    Errors are marked on the span by :func:`mark_error`; the span never records
    the exception's text (it may come from another service).
    """
    attributes: dict[str, Any] = _rpc_attributes(method)
    message_attributes(request, attributes)
    with _tracer.start_as_current_span(
        method.lstrip("/"),
        kind=SpanKind.CLIENT,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        yield tuple(carrier.items())


@contextmanager
def server_span(method: str, metadata: Iterable[tuple[str, Any]] | None, request: Any) -> Iterator[None]:
    """A SERVER span for one RPC, child of the caller's context when its metadata carries one."""
    carrier = {k: v for k, v in metadata or () if isinstance(v, str)}
    attributes: dict[str, Any] = _rpc_attributes(method)
    if request is not None:
        message_attributes(request, attributes)
    with _tracer.start_as_current_span(
        method.lstrip("/"),
        context=propagate.extract(carrier),
        kind=SpanKind.SERVER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ):
        yield


def annotate(**attributes: str) -> None:
    """Sets ``custos.<name>`` attributes on the current span (no-op when not recording)."""
    if not tracing_on():
        return
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes({f"custos.{k}": v for k, v in attributes.items() if v})


def annotate_message(message: Any) -> None:
    """Adds the ids a response carries (e.g. the new intent's id) to the current span."""
    if not tracing_on():
        return
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(message_attributes(message))


def mark_error(code: Any, kind: str) -> None:
    """Marks the current span failed with a gRPC status and the custos error kind (never its text)."""
    if not tracing_on():
        return
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute("rpc.grpc.status_code", int(code.value[0]))
        span.set_status(Status(StatusCode.ERROR, f"{code.name}: {kind}"))


# --- signer and HSM ---------------------------------------------------------------------------


@dataclass
class SignTimer:
    """What :func:`sign_timer` records: the outcome the caller sets (``signed``, ``replayed``)."""

    outcome: str = "signed"


@contextmanager
def sign_timer(chain: str) -> Iterator[SignTimer]:
    """Times one Sign into ``custos.sign.duration``; a refusal is ``refused``, a failure ``error``."""
    timer, started = SignTimer(), time.perf_counter()
    try:
        yield timer
    except (Unavailable, Internal):  # the HSM or the database failed: nothing was decided
        timer.outcome = "error"
        raise
    except CustosError:
        timer.outcome = "refused"
        raise
    except BaseException:
        timer.outcome = "error"
        raise
    finally:
        SIGN_DURATION.record(
            time.perf_counter() - started, {"custos.outcome": timer.outcome, "custos.chain": chain}
        )


@contextmanager
def hsm_operation(operation: str, **attributes: str) -> Iterator[None]:
    """A ``custos.hsm.<operation>`` span; a failure counts in ``custos.hsm.errors``."""
    try:
        if not tracing_on():
            yield
            return
        with _tracer.start_as_current_span(
            f"custos.hsm.{operation}",
            attributes={f"custos.{k}": v for k, v in attributes.items()},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield
            except Exception as e:
                span.set_status(Status(StatusCode.ERROR, type(e).__name__))
                raise
    except Exception as e:
        HSM_ERRORS.add(1, {"custos.operation": operation, "custos.error": type(e).__name__})
        raise
