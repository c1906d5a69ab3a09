"""``custos serve staking``: the public entry for staking intents."""

from __future__ import annotations

import asyncio
import contextlib

from services.audit.writer import AuditWriter
from services.chain.client import ChainClient
from services.pb.custos.staking.v1 import staking_pb2, staking_pb2_grpc
from services.policy.client import PolicyClient
from services.runtime.audit_hook import denial_recorder
from services.runtime.db import make_engine, make_session_factory
from services.runtime.readiness import database_probe, temporal_probe
from services.runtime.runner import Component
from services.runtime.server import ServiceBinding
from services.runtime.settings import ServiceSettings
from services.runtime.temporal import connect as connect_temporal
from services.signer.client import SignerClient
from services.staking.service import StakingService
from services.staking.servicer import StakingServicer


class StakingSettings(ServiceSettings):
    service = "staking"


SETTINGS = StakingSettings


async def build(settings: ServiceSettings) -> Component:
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    audit = AuditWriter(sessions, actor="svc:staking")
    # TracingInterceptor: StartWorkflow and the approval updates carry the caller's trace
    temporal = await connect_temporal(settings.temporal)
    policy, signer, chain = (
        PolicyClient.connect(settings),
        SignerClient.connect(settings),
        ChainClient.connect(settings),
    )
    service = StakingService(
        sessions=sessions,
        temporal=temporal,
        task_queue=settings.temporal.task_queue,
        policy=policy,
        signer=signer,
        chain=chain,
        audit=audit,
    )
    binding = ServiceBinding(
        staking_pb2.DESCRIPTOR.services_by_name["StakingService"],
        staking_pb2_grpc.add_StakingServiceServicer_to_server,
        StakingServicer(service),
    )

    reconciler = asyncio.create_task(service.reconcile_forever(), name="staking-reconciler")

    async def stop_reconciler() -> None:
        reconciler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reconciler

    async def dispose() -> None:
        engine.dispose()

    return Component(
        [binding],
        on_denied=denial_recorder(audit),
        # closed in reverse: the reconciler stops before the clients it uses
        closers=[dispose, policy.close, signer.close, chain.close, stop_reconciler],
        probes=[database_probe(engine, "staking"), temporal_probe(temporal)],
    )
