"""One intent, one trace: from SubmitIntent through the workflow and its activities to the policy,
signer (and its HSM call) and chain services; and the metrics the flow records.

Everything runs in this process (tests/telemetry/stack.py) on the real parts: a
Temporal dev server, SoftHSM, anvil, mTLS. The global tracer and meter providers
are the SDK's with in-memory exporters, as exporter ``memory`` installs them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics.export import HistogramDataPoint, NumberDataPoint
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from pkcs11 import Mechanism
from temporalio.testing import WorkflowEnvironment

from services.chain.devnet import Devnet
from services.pb.custos.staking.v1 import staking_pb2
from services.runtime.errors import PermissionDenied
from services.runtime.migrate import upgrade
from services.runtime.settings import TelemetrySettings
from services.runtime.telemetry import Telemetry, setup_telemetry
from services.signer.errors import HsmKeyNotFound
from services.signer.hsm import Hsm
from services.signer.softhsm import TokenConfig
from tests.telemetry.stack import in_process_stack

STAKING = "custos.staking.v1.StakingService"
POLICY = "custos.policy.v1.PolicyService"
SIGNER = "custos.signer.v1.SignerService"
CHAIN = "custos.chain.v1.ChainService"
STATES = (
    "SUBMITTED",
    "AWAITING_POLICY",
    "AWAITING_APPROVALS",
    "APPROVED",
    "SIGNING",
    "BROADCAST",
    "CONFIRMED",
)
#: Calls other people make about an intent: each is its own trace, not the intent's.
OUTSIDE_CALLS = {f"{STAKING}/{rpc}" for rpc in ("GetIntent", "WatchIntent", "ApproveIntent")}
PERMISSION_DENIED = 7


@pytest.fixture(scope="module")
def telemetry() -> Telemetry:
    installed = setup_telemetry(TelemetrySettings(exporter="memory"), "test")
    if installed.spans is None or installed.metrics is None:
        pytest.fail(f"telemetry was set up before this module with exporter {installed.exporter!r}")
    return installed


# --- reading what was exported ------------------------------------------------------------------


def _counts(t: Telemetry, name: str, key: str, **match: str) -> dict[str, float]:
    """Per value of attribute ``key``: a counter's cumulative value, or a histogram's count."""
    assert t.metrics is not None
    data = t.metrics.get_metrics_data()
    out: dict[str, float] = {}
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for m in (m for m in sm.metrics if m.name == name):
                for p in m.data.data_points:
                    attrs = dict(p.attributes or {})
                    if all(attrs.get(k) == v for k, v in match.items()):
                        assert isinstance(p, HistogramDataPoint | NumberDataPoint)
                        value = p.count if isinstance(p, HistogramDataPoint) else p.value
                        out[str(attrs.get(key))] = out.get(str(attrs.get(key)), 0) + value
    return out


def _attr(span: ReadableSpan, name: str) -> object:
    return (span.attributes or {}).get(name)


def _one(spans: Iterable[ReadableSpan], name: str, kind: SpanKind | None = None) -> ReadableSpan:
    found = [s for s in spans if s.name == name and (kind is None or s.kind == kind)]
    assert len(found) == 1, (name, [s.name for s in found])
    return found[0]


def _ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> Iterator[ReadableSpan]:
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        yield span


def _tree(spans: list[ReadableSpan]) -> str:
    """The trace as an indented outline, for failure messages."""
    ids = {s.context.span_id for s in spans}
    children: dict[int | None, list[ReadableSpan]] = {}
    for s in sorted(spans, key=lambda s: s.start_time or 0):
        parent = s.parent.span_id if s.parent is not None and s.parent.span_id in ids else None
        children.setdefault(parent, []).append(s)
    lines: list[str] = []

    def walk(parent: int | None, depth: int) -> None:
        for s in children.get(parent, []):
            lines.append(f"{'  ' * depth}{s.name} [{s.kind.name}] {_attr(s, 'custos.intent_id') or ''}")
            walk(s.context.span_id, depth + 1)

    walk(None, 0)
    return "\n".join(lines)


class Trace:
    """The spans of one trace, with the questions the test asks of them."""

    def __init__(self, spans: Iterable[ReadableSpan], trace_id: int) -> None:
        self.spans = [s for s in spans if s.context.trace_id == trace_id]
        self.by_id = {s.context.span_id: s for s in self.spans}

    def __str__(self) -> str:
        return _tree(self.spans)

    def path(self, span: ReadableSpan) -> list[str]:
        """Names of the span's ancestors, nearest first."""
        return [a.name for a in _ancestors(span, self.by_id)]

    def roots(self) -> list[ReadableSpan]:
        return [s for s in self.spans if s.parent is None or s.parent.span_id not in self.by_id]

    def served(self, rpc: str, below: str, principal: str) -> ReadableSpan:
        """The SERVER span of ``rpc`` under ``below``, whose parent is its caller's CLIENT span."""
        found = [
            s for s in self.spans if s.name == rpc and s.kind == SpanKind.SERVER and below in self.path(s)
        ]
        assert found, f"no {rpc} server span below {below}:\n{self}"
        span = found[0]
        assert span.parent is not None
        caller = self.by_id[span.parent.span_id]
        assert (caller.name, caller.kind) == (rpc, SpanKind.CLIENT)
        assert _attr(span, "custos.principal") == principal
        assert (_attr(span, "rpc.system"), _attr(span, "rpc.service")) == ("grpc", rpc.split("/")[0])
        return span


# --- the flow ---------------------------------------------------------------------------------------


async def test_one_intent_is_one_connected_trace(
    telemetry: Telemetry,
    dev_server_env: WorkflowEnvironment,
    softhsm_token: TokenConfig,
    devnet: Devnet,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CUSTOS_CONFIG", raising=False)  # set by the dev-stack tests of this process
    url = f"sqlite:///{tmp_path / 'custos.db'}"
    upgrade(url)
    intents_before = _counts(telemetry, "custos.intents", "custos.state", **{"custos.action": "STAKE"})
    waits_before = _counts(telemetry, "custos.approval.wait", "custos.action")
    signs_before = _counts(telemetry, "custos.sign.duration", "custos.outcome")
    hsm_errors_before = _counts(telemetry, "custos.hsm.errors", "custos.operation")
    async with in_process_stack(
        tmp_path,
        database_url=url,
        temporal_address=dev_server_env.client.service_client.config.target_host,
        token=softhsm_token,
        devnet=devnet,
    ) as stack:
        await stack.setup()
        assert telemetry.spans is not None
        telemetry.spans.clear()
        intent = await stack.submit(stack.stake_spec())
        intent_id = intent.intent_id
        intent = (await stack.wait_for(intent_id, {"AWAITING_APPROVALS"})).intent
        with pytest.raises(PermissionDenied):  # alice is no approver: refused at the door
            await stack.approve(intent, "olivia", as_person="alice")
        for who in ("olivia", "oscar"):
            await stack.approve(intent, who)
        final = await stack.wait_for(intent_id, {"CONFIRMED", "FAILED", "EXPIRED", "DENIED", "REJECTED"})
        assert final.intent.state == staking_pb2.INTENT_STATE_CONFIRMED, final.intent.reason
        # every workflow and activity span has ended once the workflow has
        await dev_server_env.client.get_workflow_handle(intent_id).result()
    spans = telemetry.spans.get_finished_spans()

    submit = _one(
        (s for s in spans if _attr(s, "custos.intent_id") == intent_id),
        f"{STAKING}/SubmitIntent",
        SpanKind.SERVER,
    )
    assert (_attr(submit, "custos.action"), _attr(submit, "custos.chain")) == ("STAKE", "ethereum-devnet")
    assert _attr(submit, "custos.principal") == "alice"
    t = Trace(spans, submit.context.trace_id)

    # connected: one root (alice's own CLIENT span), and every other span's parent is in the trace
    assert [(r.name, r.kind) for r in t.roots()] == [(f"{STAKING}/SubmitIntent", SpanKind.CLIENT)], str(t)
    assert _attr(t.roots()[0], "custos.intent_id") == intent_id  # from the response

    # SubmitIntent's own checks, then StartWorkflow, are children of its SERVER span
    for rpc in (f"{SIGNER}/GetKey", f"{CHAIN}/ValidateIntent", f"{POLICY}/GetPolicy"):
        t.served(rpc, submit.name, "svc:staking")
    start = _one(t.spans, "StartWorkflow:StakingIntent")
    assert start.parent is not None and start.parent.span_id == submit.context.span_id
    for mark in ("RunWorkflow:StakingIntent", "CompleteWorkflow:StakingIntent"):
        assert t.path(_one(t.spans, mark))[0] == start.name

    # each activity: a RunActivity span naming the intent, started by the workflow
    for activity in ("EvaluatePolicy", "BuildTransaction", "SignTransaction", "BroadcastTransaction"):
        run = _one(t.spans, f"RunActivity:{activity}")
        assert (_attr(run, "custos.intent_id"), _attr(run, "custos.action")) == (intent_id, "STAKE")
        assert t.path(run)[:2] == [f"StartActivity:{activity}", start.name]
    recorded = {_attr(s, "custos.state") for s in t.spans if s.name == "RunActivity:RecordTransition"}
    assert recorded >= set(STATES) - {"SUBMITTED"}

    # ... and their gRPC calls reach each service, the signer's down to the HSM
    evaluate = t.served(f"{POLICY}/EvaluateIntent", "RunActivity:EvaluatePolicy", "svc:worker")
    assert _attr(evaluate, "custos.intent_id") == intent_id
    t.served(f"{CHAIN}/BuildTransaction", "RunActivity:BuildTransaction", "svc:worker")
    sign = t.served(f"{SIGNER}/Sign", "RunActivity:SignTransaction", "svc:worker")
    assert (_attr(sign, "custos.intent_id"), _attr(sign, "custos.step")) == (intent_id, "stake")
    hsm = [s for s in t.spans if s.name == "custos.hsm.sign" and t.path(s)[0] == sign.name]
    assert len(hsm) == 1, str(t)
    assert (
        str(_attr(hsm[0], "custos.key_id")).startswith("key_")
        and _attr(hsm[0], "custos.mechanism") == "ECDSA"
    )
    t.served(f"{CHAIN}/BroadcastTransaction", "RunActivity:BroadcastTransaction", "svc:worker")
    t.served(f"{CHAIN}/GetTransactionStatus", "RunActivity:AwaitConfirmation", "svc:worker")

    # approvals are the approvers' own traces, linked from the workflow's update spans
    approvals = [s for s in spans if s.name == f"{STAKING}/ApproveIntent"]
    served = [s for s in approvals if s.kind == SpanKind.SERVER]
    assert sorted(str(_attr(s, "custos.principal")) for s in served) == ["alice", "olivia", "oscar"]
    # the body of a refused call is never read: only the admitted ones name the intent
    assert {_attr(s, "custos.principal"): _attr(s, "custos.intent_id") for s in served} == {
        "alice": None,
        "olivia": intent_id,
        "oscar": intent_id,
    }
    assert {_attr(s, "custos.intent_id") for s in approvals if s.kind == SpanKind.CLIENT} == {intent_id}
    refused = [
        s
        for s in approvals
        if s.context.trace_id
        == next(a.context.trace_id for a in served if _attr(a, "custos.principal") == "alice")
    ]
    assert {(s.kind, s.status.status_code, _attr(s, "rpc.grpc.status_code")) for s in refused} == {
        (SpanKind.CLIENT, StatusCode.ERROR, PERMISSION_DENIED),
        (SpanKind.SERVER, StatusCode.ERROR, PERMISSION_DENIED),
    }
    accepted = {s.context.trace_id for s in served if _attr(s, "custos.principal") != "alice"}
    assert len(accepted) == 2 and submit.context.trace_id not in accepted
    handled = [s for s in t.spans if s.name == "HandleUpdate:approve"]
    assert {link.context.trace_id for s in handled for link in s.links} == accepted

    # every span about the intent is in its trace, but for other people's calls about it
    everything = {s.context.span_id: s for s in spans}
    for s in spans:
        if intent_id in (_attr(s, "custos.intent_id"), _attr(s, "temporalWorkflowID")):
            if s.context.trace_id != submit.context.trace_id:
                root = ([s, *_ancestors(s, everything)])[-1]
                assert root.name in OUTSIDE_CALLS, (s.name, root.name)

    # metrics: each state once, one approval wait, one signature, no HSM error
    intents = _counts(telemetry, "custos.intents", "custos.state", **{"custos.action": "STAKE"})
    assert {s: intents.get(s, 0) - intents_before.get(s, 0) for s in STATES} == dict.fromkeys(STATES, 1)
    waits = _counts(telemetry, "custos.approval.wait", "custos.action")
    assert waits.get("STAKE", 0) - waits_before.get("STAKE", 0) == 1
    signs = _counts(telemetry, "custos.sign.duration", "custos.outcome")
    assert signs.get("signed", 0) - signs_before.get("signed", 0) == 1
    assert _counts(telemetry, "custos.hsm.errors", "custos.operation") == hsm_errors_before


def test_a_failed_hsm_call_is_counted_and_marked(telemetry: Telemetry, hsm: Hsm) -> None:
    assert telemetry.spans is not None
    before = _counts(telemetry, "custos.hsm.errors", "custos.error", **{"custos.operation": "sign"})
    telemetry.spans.clear()
    with pytest.raises(HsmKeyNotFound):
        hsm.sign_raw(b"\x00" * 16, b"\x11" * 32, Mechanism.ECDSA)
    after = _counts(telemetry, "custos.hsm.errors", "custos.error", **{"custos.operation": "sign"})
    assert after.get("HsmKeyNotFound", 0) - before.get("HsmKeyNotFound", 0) == 1
    span = _one(telemetry.spans.get_finished_spans(), "custos.hsm.sign")
    assert span.status.status_code == StatusCode.ERROR and span.status.description == "HsmKeyNotFound"
    assert _attr(span, "custos.key_id") == "key_" + "00" * 16
