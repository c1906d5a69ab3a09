"""JSON log lines (``CUSTOS_LOG_FORMAT=json``): trace and intent ids, nothing else of the process."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import json
import logging

import pytest
from click.testing import CliRunner
from opentelemetry.sdk.trace import TracerProvider
from temporalio import activity
from temporalio.testing import ActivityEnvironment

from services.cli.main import cli
from services.pb.custos.staking.v1 import staking_pb2
from services.runtime.logs import CURRENT_INTENT, JsonFormatter
from services.runtime.server import _parser
from services.runtime.settings import ServiceSettings


def _line(message: str, *args: object) -> dict[str, str]:
    record = logging.LogRecord("custos.test", logging.WARNING, __file__, 1, message, args, None)
    return dict(json.loads(JsonFormatter("staking").format(record)))


def test_a_line_carries_the_trace_and_span_of_the_current_span() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("SubmitIntent") as span:
        line = _line("submitted %s", "x")
    ctx = span.get_span_context()
    assert line["trace_id"] == format(ctx.trace_id, "032x") and line["span_id"] == format(ctx.span_id, "016x")
    assert (line["level"], line["logger"], line["message"], line["service"]) == (
        "WARNING",
        "custos.test",
        "submitted x",
        "staking",
    )
    assert "trace_id" not in _line("outside any span")


def test_a_request_s_intent_id_is_on_the_lines_of_its_call() -> None:
    request = staking_pb2.GetIntentRequest(intent_id="intent-42")
    parse = _parser("/custos.staking.v1.StakingService/GetIntent", staking_pb2.GetIntentRequest.FromString)

    def serve() -> dict[str, str]:
        parse(request.SerializeToString())
        return _line("read")

    assert contextvars.copy_context().run(serve)["intent_id"] == "intent-42"
    assert CURRENT_INTENT.get() == ""  # another call's context is untouched


def test_an_activity_s_lines_carry_its_intent_workflow_id() -> None:
    @activity.defn
    async def record() -> dict[str, str]:
        return _line("recorded")

    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id="intent-7")
    assert asyncio.run(env.run(record))["intent_id"] == "intent-7"


def test_log_format_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUSTOS_LOG_FORMAT", "json")
    assert ServiceSettings().log_format == "json"
    monkeypatch.setenv("CUSTOS_LOG_FORMAT", "xml")
    with pytest.raises(ValueError):
        ServiceSettings()


def test_custos_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("custos ") and result.output.strip() != "custos unknown"
