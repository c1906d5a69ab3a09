"""Logging and OpenTelemetry set-up, one call per process.

Spans and logs never carry secrets: attributes are named under ``custos.`` and
hold identifiers (intent id, key id, chain), never PINs, keys or signatures.
"""

from __future__ import annotations

import logging
import sys

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.runtime.settings import TelemetrySettings

_configured = False


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def setup_tracing(settings: TelemetrySettings, service: str) -> InMemorySpanExporter | None:
    """Installs the global tracer provider; returns the in-memory exporter when asked for one."""
    global _configured
    if _configured or settings.exporter == "none":
        return None
    resource = Resource.create(
        {"service.name": f"custos-{service}", "service.namespace": settings.service_namespace}
    )
    provider = TracerProvider(resource=resource)
    memory: InMemorySpanExporter | None = None
    exporter: SpanExporter
    if settings.exporter == "memory":
        memory = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(memory))
    elif settings.exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint)
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _configured = True
    return memory
