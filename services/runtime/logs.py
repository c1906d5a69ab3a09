"""Process logging: lines for people, or one JSON object a line for a log collector.

JSON lines carry the OpenTelemetry trace and span ids of the current span (when tracing is
on) and the intent the work is for: the ``intent_id`` of the request being served, or the
workflow id of the Temporal activity running (the intent id, for an intent workflow).
They carry what the log call says and nothing else of the process: custos never logs PINs,
keys or signatures, and the formatter adds no request bodies, settings or environment.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Literal

from opentelemetry import trace

#: The intent the current request is about (set by the server once a request is parsed).
CURRENT_INTENT: ContextVar[str] = ContextVar("custos_intent", default="")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def intent_in_context() -> str:
    """The intent id of the request or Temporal activity this code runs for ('' if none)."""
    intent = CURRENT_INTENT.get()
    if intent:
        return intent
    from temporalio import activity

    if activity.in_activity():
        return activity.info().workflow_id or ""
    return ""


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "trace_id", "span_id", "intent_id", "exc"}``."""

    def __init__(self, service: str = "") -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, str] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self._service:
            out["service"] = self._service
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            out["trace_id"] = format(span.trace_id, "032x")
            out["span_id"] = format(span.span_id, "016x")
        intent = intent_in_context()
        if intent:
            out["intent_id"] = intent
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(
    level: str = "INFO", log_format: Literal["text", "json"] = "text", service: str = ""
) -> None:
    """Logs to stderr at ``level``, as text lines or (``json``) one object a line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
