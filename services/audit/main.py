"""``custos serve audit``: the trail's query, export, verification and checkpoints.

The audit service holds its own HSM token (``CUSTOS_HSM__*`` of this process only): the
checkpoint key and the memory of the last checkpoint signed live there, and no vault key
does. It refuses to start on a token that holds other keys.
"""

from __future__ import annotations

import asyncio

from pydantic import Field

from services.audit import repository
from services.audit.hsm_signer import DEFAULT_HEAD_LABEL, HsmCheckpointSigner, HsmHeadStore
from services.audit.service import AuditService, CheckpointPolicy
from services.audit.servicer import AuditServicer
from services.audit.writer import AuditWriter
from services.pb.custos.audit.v1 import audit_pb2, audit_pb2_grpc
from services.runtime.audit_hook import denial_recorder
from services.runtime.db import make_engine, make_session_factory, transaction
from services.runtime.readiness import database_probe
from services.runtime.runner import Component
from services.runtime.server import ServiceBinding
from services.runtime.settings import HsmSettings, ServiceSettings
from services.signer.hsm import Hsm


def _audit_token() -> HsmSettings:
    return HsmSettings(token_label="custos-audit")  # noqa: S106 - a label, not a secret


class AuditSettings(ServiceSettings):
    service = "audit"
    #: The audit service's own token (not the signer's vault token).
    hsm: HsmSettings = Field(default_factory=_audit_token)
    checkpoint_every_records: int = Field(default=1000, ge=1)
    #: Seconds between checkpoints while the head moves: records younger than that can be
    #: rewritten unnoticed by someone who can write the database.
    checkpoint_every_seconds: float = Field(default=2.0, gt=0)
    #: Label of the data object on the token that remembers the last checkpoint signed.
    checkpoint_head_label: str = DEFAULT_HEAD_LABEL


SETTINGS = AuditSettings


async def build(settings: ServiceSettings) -> Component:
    assert isinstance(settings, AuditSettings)
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    hsm = await asyncio.to_thread(Hsm(settings.hsm).open)

    def checkpoint_key() -> HsmCheckpointSigner:
        # Replicas starting together on an empty token would each make a key: they take turns.
        with transaction(sessions) as s:
            repository.read_head(s, lock=True)
            return HsmCheckpointSigner.ensure(hsm)

    signer = await asyncio.to_thread(checkpoint_key)
    service = AuditService(
        sessions,
        signer=signer,
        policy=CheckpointPolicy(settings.checkpoint_every_records, settings.checkpoint_every_seconds),
        head_store=HsmHeadStore(hsm, label=settings.checkpoint_head_label),
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
        [binding],
        on_denied=denial_recorder(AuditWriter(sessions, actor="svc:audit")),
        closers=[dispose],
        probes=[database_probe(engine, "audit")],
    )
