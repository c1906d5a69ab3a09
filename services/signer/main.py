"""``custos serve signer``: HSM keys and signing that trusts no caller.

The signer reads the policy version and approver registry from the database
itself (not from the caller, nor from the policy service's answers), decodes the
transaction with its own copy of the chain decoder, and records each signature
with its audit entry in one transaction.
"""

from __future__ import annotations

import asyncio

from pydantic import Field

from services.audit.writer import AuditWriter
from services.chain.config import ChainConfig as ChainEntry
from services.chain.ethereum.adapter import EthereumAdapter
from services.pb.custos.signer.v1 import signer_pb2, signer_pb2_grpc
from services.policy.service import PolicyService
from services.runtime.audit_hook import denial_recorder
from services.runtime.db import make_engine, make_session_factory
from services.runtime.runner import Component
from services.runtime.server import ServiceBinding
from services.runtime.settings import HsmSettings, ServiceSettings
from services.signer.adapters import EthereumIntentCheck, audit_in_transaction
from services.signer.hsm import Hsm
from services.signer.service import ChainConfig, SignerService
from services.signer.servicer import SignerServicer


class SignerSettings(ServiceSettings):
    service = "signer"
    hsm: HsmSettings = Field(default_factory=HsmSettings)
    chains: list[ChainEntry] = Field(default_factory=list)


SETTINGS = SignerSettings


async def build(settings: ServiceSettings) -> Component:
    assert isinstance(settings, SignerSettings)
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    audit = AuditWriter(sessions, actor="svc:signer")
    hsm = await asyncio.to_thread(Hsm(settings.hsm).open)
    ethereum = {c.name: c for c in settings.chains if c.family.value.lower() == "ethereum"}
    service = SignerService(
        hsm=hsm,
        sessions=sessions,
        policy=PolicyService(sessions),
        decoder=EthereumIntentCheck({name: EthereumAdapter(c) for name, c in ethereum.items()}),
        audit=audit_in_transaction(audit),
        chains=ChainConfig(ethereum={name: c.evm_chain_id for name, c in ethereum.items()}),
    )
    binding = ServiceBinding(
        signer_pb2.DESCRIPTOR.services_by_name["SignerService"],
        signer_pb2_grpc.add_SignerServiceServicer_to_server,
        SignerServicer(service),
    )

    async def dispose() -> None:
        await asyncio.to_thread(hsm.close)
        engine.dispose()

    return Component([binding], on_denied=denial_recorder(audit), closers=[dispose])
