"""AuditServicer: roles per RPC, and proto <-> domain for every RPC."""

from __future__ import annotations

import json

import grpc
import pytest

from services.audit.errors import (
    AuditTokenShared,
    ChainBroken,
    HeadNotExtended,
    HeadUnreadable,
    NothingToCheckpoint,
    PayloadInvalid,
)
from services.audit.export import parse_export
from services.audit.service import AuditService
from services.audit.servicer import AuditServicer
from services.audit.verify import verify_parsed
from services.pb.custos.audit.v1 import audit_pb2
from services.runtime.auth import Principal, reset_principal, set_principal
from services.runtime.grpc_errors import status_for


def test_roles_cover_every_rpc_and_nobody_appends() -> None:
    rpcs = {m.name for m in audit_pb2.DESCRIPTOR.services_by_name["AuditService"].methods}
    assert set(AuditServicer.ROLES) == rpcs
    assert AuditServicer.ROLES["AppendEvent"] == frozenset()  # each component writes its own records
    for rpc in ("QueryEvents", "ExportEvents", "VerifyChain"):
        assert AuditServicer.ROLES[rpc] == {"compliance", "operator"}


@pytest.mark.asyncio
async def test_the_rpcs_round_trip(audit: AuditService) -> None:
    servicer = AuditServicer(audit)
    token = set_principal(Principal("signer-1", frozenset({"svc:signer"})))
    try:
        for i in range(3):
            resp = await servicer.AppendEvent(
                audit_pb2.AppendEventRequest(
                    action="sign.granted", subject="intent:a", outcome="ok", payload_json=json.dumps({"n": i})
                ),
                None,
            )
        assert resp.event.sequence == 3 and resp.event.actor == "signer-1"
        with pytest.raises(PayloadInvalid):
            await servicer.AppendEvent(
                audit_pb2.AppendEventRequest(action="x", outcome="ok", payload_json="[1]"), None
            )
    finally:
        reset_principal(token)
    page = await servicer.QueryEvents(
        audit_pb2.QueryEventsRequest(filter=audit_pb2.EventFilter(subject="intent:a"), page_size=2), None
    )
    assert [e.sequence for e in page.events] == [1, 2] and page.next_page_token
    cp = (await servicer.CreateCheckpoint(audit_pb2.CreateCheckpointRequest(), None)).checkpoint
    assert cp.sequence == 3 and len(cp.signature) == 64 and len(cp.public_key) == 32
    verified = await servicer.VerifyChain(audit_pb2.VerifyChainRequest(), None)
    assert verified.ok and verified.records_checked == 3 and verified.latest_checkpoint.sequence == 3
    lines = [r.line async for r in servicer.ExportEvents(audit_pb2.ExportEventsRequest(), None)]
    assert verify_parsed(parse_export(lines)).ok


def test_refusals_to_sign_are_failed_precondition_never_internal() -> None:
    for error in (
        ChainBroken("a checkpoint is missing", first_bad_sequence=10),
        HeadNotExtended("the last checkpoint signed was dropped", first_bad_sequence=20),
        AuditTokenShared("the token holds a vault key"),
        HeadUnreadable("the token's memory is unreadable"),
        NothingToCheckpoint("a later checkpoint covers it"),
    ):
        assert status_for(error) == grpc.StatusCode.FAILED_PRECONDITION, error
