"""``custos serve chain``: chain connectivity for the registry's chains."""

from __future__ import annotations

from pydantic import Field

from services.audit.writer import AuditWriter
from services.chain.config import ChainConfig
from services.chain.service import ChainService
from services.chain.servicer import ChainServicer
from services.pb.custos.chain.v1 import chain_pb2, chain_pb2_grpc
from services.runtime.audit_hook import denial_recorder
from services.runtime.db import make_engine, make_session_factory
from services.runtime.runner import Component
from services.runtime.server import ServiceBinding
from services.runtime.settings import ServiceSettings


class ChainSettings(ServiceSettings):
    service = "chain"
    #: The chain registry (``CUSTOS_CHAINS`` as JSON, or ``chains:`` in the settings file).
    chains: list[ChainConfig] = Field(default_factory=list)


SETTINGS = ChainSettings


async def build(settings: ServiceSettings) -> Component:
    assert isinstance(settings, ChainSettings)
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    service = ChainService(settings.chains, sessions)
    binding = ServiceBinding(
        chain_pb2.DESCRIPTOR.services_by_name["ChainService"],
        chain_pb2_grpc.add_ChainServiceServicer_to_server,
        ChainServicer(service),
    )

    async def dispose() -> None:
        engine.dispose()

    return Component(
        [binding], on_denied=denial_recorder(AuditWriter(sessions, actor="svc:chain")), closers=[dispose]
    )
