"""Tracing of custos's Temporal clients and worker (kept apart so gRPC-only processes skip temporalio).

``TracingInterceptor`` carries the trace from ``StartWorkflow`` into the workflow
and its activities (workflow spans are zero-length marks, emitted on first
execution only, never on replay); :class:`ActivityAttributes` names the intent
on each activity's span. The activities' gRPC calls then continue the trace.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace
from temporalio import client, worker
from temporalio.contrib.opentelemetry import TracingInterceptor


def temporal_interceptors() -> list[client.Interceptor]:
    """Interceptors for every custos Temporal client; a worker built on the client inherits them.

    With the global tracer provider a no-op (exporter ``none``) they create no spans.
    """
    return [TracingInterceptor(), ActivityAttributes()]


class ActivityAttributes(client.Interceptor, worker.Interceptor):
    """Sets ``custos.intent_id``, ``step``, ``state``, ``action``, ``chain`` and ``vault_id`` on each
    activity's span, from its input (a dataclass with those fields, or with a ``spec`` mapping)."""

    def intercept_activity(
        self, next: worker.ActivityInboundInterceptor
    ) -> worker.ActivityInboundInterceptor:
        return _ActivityAttributesInbound(next)


class _ActivityAttributesInbound(worker.ActivityInboundInterceptor):
    async def execute_activity(self, input: worker.ExecuteActivityInput) -> Any:
        span = trace.get_current_span()  # RunActivity: TracingInterceptor comes first
        if span.is_recording():
            span.set_attributes(activity_attributes(input.args))
        return await super().execute_activity(input)


def activity_attributes(args: Sequence[Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    if not args:
        return out
    arg = args[0]
    for name in ("intent_id", "step", "state"):
        value = getattr(arg, name, None)
        if isinstance(value, str) and value:
            out[f"custos.{name}"] = value
    spec = getattr(arg, "spec", None)
    if isinstance(spec, Mapping):
        for name in ("action", "chain", "vault_id"):
            value = spec.get(name)
            if isinstance(value, str) and value:
                out[f"custos.{name}"] = value
    return out
