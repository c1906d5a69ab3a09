"""``custos serve audit``: the trail's query, export, verification and checkpoints."""

from __future__ import annotations

import asyncio

from pydantic import Field

from services.audit.hsm_signer import HsmCheckpointSigner
from services.audit.service import AuditService, CheckpointPolicy
from services.audit.servicer import AuditServicer
from services.audit.writer import AuditWriter
from services.pb.custos.audit.v1 import audit_pb2, audit_pb2_grpc
from services.runtime.audit_hook import denial_recorder
from services.runtime.db import make_engine, make_session_factory
from services.runtime.runner import Component
from services.runtime.server import ServiceBinding
from services.runtime.settings import HsmSettings, ServiceSettings
from services.signer.hsm import Hsm


class AuditSettings(ServiceSettings):
    service = "audit"
    hsm: HsmSettings = Field(default_factory=HsmSettings)
    checkpoint_every_records: int = 1000
    checkpoint_every_seconds: float = 300.0


SETTINGS = AuditSettings


async def build(settings: ServiceSettings) -> Component:
    assert isinstance(settings, AuditSettings)
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    hsm = await asyncio.to_thread(Hsm(settings.hsm).open)
    signer = await asyncio.to_thread(HsmCheckpointSigner.ensure, hsm)
    service = AuditService(
        sessions,
        signer=signer,
        policy=CheckpointPolicy(settings.checkpoint_every_records, settings.checkpoint_every_seconds),
    )
    stop = asyncio.Event()
    checkpointer = asyncio.create_task(service.run_checkpointer(stop))
    binding = ServiceBinding(
        audit_pb2.DESCRIPTOR.services_by_name["AuditService"],
        audit_pb2_grpc.add_AuditServiceServicer_to_server,
        AuditServicer(service),
    )

    async def dispose() -> None:
        stop.set()
        await checkpointer
        await asyncio.to_thread(hsm.close)
        engine.dispose()

    return Component(
        [binding], on_denied=denial_recorder(AuditWriter(sessions, actor="svc:audit")), closers=[dispose]
    )
