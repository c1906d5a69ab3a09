"""``custos serve chain``: chain connectivity for the registry's chains, and vault reconciliation."""

from __future__ import annotations

import asyncio
import contextlib

from pydantic import Field

from services.audit.writer import AuditWriter
from services.chain.reconcile import Reconciler, reconcilable
from services.chain.service import ChainService
from services.chain.servicer import ChainServicer
from services.chain.signer_view import SignerView
from services.families.config import ChainConfig
from services.pb.custos.chain.v1 import chain_pb2, chain_pb2_grpc
from services.runtime.audit_hook import denial_recorder
from services.runtime.db import make_engine, make_session_factory
from services.runtime.readiness import database_probe, node_probe
from services.runtime.runner import Component
from services.runtime.server import ServiceBinding
from services.runtime.settings import ServiceSettings
from services.signer.client import SignerClient


class ChainSettings(ServiceSettings):
    service = "chain"
    #: The chain registry (``CUSTOS_CHAINS`` as JSON, or ``chains:`` in the settings file).
    chains: list[ChainConfig] = Field(default_factory=list)
    #: Seconds between reconciliation passes of the vaults' on-chain history against the
    #: signer's records (``CUSTOS_RECONCILE_SECONDS``); 0 runs them only on demand.
    reconcile_seconds: float = Field(default=30.0, ge=0)


SETTINGS = ChainSettings


async def build(settings: ServiceSettings) -> Component:
    assert isinstance(settings, ChainSettings)
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    service = ChainService(settings.chains, sessions)
    audit = AuditWriter(sessions, actor="svc:chain")
    signer = SignerClient.connect(settings)
    reconciler = Reconciler(
        reconcilable(service.adapter(c.name) for c in service.list_chains()),
        SignerView(signer),
        sessions,
        audit,
    )
    binding = ServiceBinding(
        chain_pb2.DESCRIPTOR.services_by_name["ChainService"],
        chain_pb2_grpc.add_ChainServiceServicer_to_server,
        ChainServicer(service, reconciler),
    )
    loop = (
        asyncio.create_task(reconciler.run_forever(settings.reconcile_seconds), name="custos-reconcile")
        if settings.reconcile_seconds
        else None
    )

    async def dispose() -> None:
        if loop is not None:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        await signer.close()
        engine.dispose()

    nodes = [
        node_probe(c.name, head)
        for c in service.list_chains()
        if (head := getattr(service.adapter(c.name), "head", None)) is not None
    ]
    return Component(
        [binding],
        on_denied=denial_recorder(audit),
        closers=[dispose],
        probes=[database_probe(engine, "chain"), *nodes],
    )
