"""AuditService over gRPC: proto <-> domain only; the logic is in ``service.py``.

No RPC changes or deletes a record: there is none that could. Internal services
would append (their identity becoming the record's actor), but each writes its own
records to the database, so no one may; compliance and operators read, export and
verify, and compliance checkpoints.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from itertools import islice
from typing import Any, ClassVar

from services.audit.chain import Checkpoint
from services.audit.errors import PayloadInvalid
from services.audit.records import AuditRecord
from services.audit.service import AuditService, EventQuery
from services.pb.custos.audit.v1 import audit_pb2, audit_pb2_grpc
from services.runtime.auth import current_principal
from services.runtime.convert import bounded_int, datetime_to_ts, optional_datetime

_READERS = frozenset({"compliance", "operator"})
_LINES_PER_HOP = 500


def event_to_pb(r: AuditRecord) -> audit_pb2.AuditEvent:
    return audit_pb2.AuditEvent(
        sequence=r.sequence,
        prev_hash=r.prev_hash,
        hash=r.hash,
        time=datetime_to_ts(r.time),
        actor=r.actor,
        action=r.action,
        subject=r.subject,
        outcome=r.outcome,
        payload_digest=r.payload_digest,
        payload_json=r.payload_json,
    )


def checkpoint_to_pb(cp: Checkpoint | None) -> audit_pb2.Checkpoint | None:
    if cp is None:
        return None
    return audit_pb2.Checkpoint(
        sequence=cp.sequence,
        head_hash=cp.head_hash,
        time=datetime_to_ts(cp.time),
        key_id=cp.key_id,
        public_key=cp.public_key,
        signature=cp.signature,
        prev_sequence=cp.prev_sequence,
        prev_digest=cp.prev_digest,
    )


def _payload(text: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        raise PayloadInvalid("payload_json is not valid JSON") from None
    if not isinstance(value, dict):
        raise PayloadInvalid("payload_json must be a JSON object")
    return value


def _query(f: audit_pb2.EventFilter) -> EventQuery:
    return EventQuery(
        subject=f.subject,
        actor=f.actor,
        action=f.action,
        start=optional_datetime(f.time, "start", "filter.time.start"),
        end=optional_datetime(f.time, "end", "filter.time.end"),
    )


def _range(request: audit_pb2.ExportEventsRequest | audit_pb2.VerifyChainRequest) -> tuple[int, int]:
    return (
        bounded_int(request.from_sequence, "from_sequence"),
        bounded_int(request.to_sequence, "to_sequence"),
    )


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    ROLES: ClassVar[dict[str, frozenset[str]]] = {
        # closed: every component writes its own records to the database (services.audit.writer)
        "AppendEvent": frozenset(),
        "QueryEvents": _READERS,
        "ExportEvents": _READERS,
        "VerifyChain": _READERS,
        "CreateCheckpoint": frozenset({"compliance"}),
    }

    def __init__(self, service: AuditService) -> None:
        self._service = service

    async def AppendEvent(
        self, request: audit_pb2.AppendEventRequest, context: Any
    ) -> audit_pb2.AppendEventResponse:
        actor = current_principal().identity
        record = await asyncio.to_thread(
            self._service.append,
            actor,
            request.action,
            request.subject,
            request.outcome,
            _payload(request.payload_json),
        )
        return audit_pb2.AppendEventResponse(event=event_to_pb(record))

    async def QueryEvents(
        self, request: audit_pb2.QueryEventsRequest, context: Any
    ) -> audit_pb2.QueryEventsResponse:
        records, token = await asyncio.to_thread(
            self._service.query, _query(request.filter), request.page_size, request.page_token
        )
        return audit_pb2.QueryEventsResponse(events=[event_to_pb(r) for r in records], next_page_token=token)

    async def ExportEvents(
        self, request: audit_pb2.ExportEventsRequest, context: Any
    ) -> AsyncIterator[audit_pb2.ExportEventsResponse]:
        lines = self._service.export_lines(*_range(request))
        while True:
            chunk = await asyncio.to_thread(lambda: list(islice(lines, _LINES_PER_HOP)))
            if not chunk:
                return
            for line in chunk:
                yield audit_pb2.ExportEventsResponse(line=line)

    async def VerifyChain(
        self, request: audit_pb2.VerifyChainRequest, context: Any
    ) -> audit_pb2.VerifyChainResponse:
        result, latest = await asyncio.to_thread(self._service.verify, *_range(request))
        return audit_pb2.VerifyChainResponse(
            ok=result.ok,
            records_checked=result.records_checked,
            first_bad_sequence=result.first_bad_sequence or 0,
            reason=result.reason,
            latest_checkpoint=checkpoint_to_pb(latest),
        )

    async def CreateCheckpoint(
        self, request: audit_pb2.CreateCheckpointRequest, context: Any
    ) -> audit_pb2.CreateCheckpointResponse:
        cp = await asyncio.to_thread(lambda: self._service.checkpoint(verify_all=True))
        return audit_pb2.CreateCheckpointResponse(checkpoint=checkpoint_to_pb(cp))
