"""A signer serving AnchorGovernance (and Sign) over real gRPC: a real governance log read through
its own trust root, its head kept on the real SoftHSM token, the real audit trail.

The caller's identity comes in a header the server trusts (as behind a mesh), standing for
the mTLS certificate a service presents: ``client("svc:policy")`` calls as the policy service.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from services.audit.writer import AuditWriter
from services.families.config import ChainConfig
from services.pb.custos.signer.v1 import signer_pb2, signer_pb2_grpc
from services.policy.governance import TrustRoot
from services.runtime.server import RunningServer, ServiceBinding, start_server
from services.runtime.settings import ServiceSettings, TLSSettings
from services.signer.adapters import audit_in_transaction
from services.signer.client import SignerClient
from services.signer.hsm import Hsm
from services.signer.service import SignerService
from services.signer.servicer import SignerServicer
from services.signer.trust import GovernanceAnchors, GovernedPolicyView
from tests.fixtures.database import sql
from tests.signer.conftest import CHAIN, CHAIN_ID

HEADER = "x-custos-test-identity"


def signer_over(sessions: sessionmaker[Session], hsm: Hsm, view: GovernedPolicyView) -> SignerService:
    """A signer process's service, judging approvals by ``view``."""
    chain = ChainConfig(name=CHAIN, chain_id=CHAIN_ID, rpc_url="http://127.0.0.1:9")
    return SignerService(
        hsm=hsm,
        sessions=sessions,
        policy=view,
        audit=audit_in_transaction(AuditWriter(sessions, "svc:signer")),
        chains=[chain],
    )


@dataclass
class ServingSigner:
    view: GovernedPolicyView
    service: SignerService
    server: RunningServer
    #: The token object its head is kept under (a restarted signer of the installation reads it).
    label: str

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def client(self, role: str = "svc:policy") -> SignerClient:
        return SignerClient(
            grpc.aio.insecure_channel(self.target), metadata=((HEADER, f"{role}-test;{role}"),)
        )


@asynccontextmanager
async def serving_signer(
    sessions: sessionmaker[Session], hsm: Hsm, trust: TrustRoot, *, label: str = "", port: int = 0
) -> AsyncIterator[ServingSigner]:
    """A signer process: a fresh view of the log (a replay from genesis), the head on the token
    under ``label`` (a new one by default), serving on ``port`` (any free one by default)."""
    label = label or f"test-head-{secrets.token_hex(4)}"
    view = GovernedPolicyView(sessions, trust, store=hsm, head_label=label)
    service = signer_over(sessions, hsm, view)
    anchors = GovernanceAnchors(view, AuditWriter(sessions, "svc:signer"))
    binding = ServiceBinding(
        descriptor=signer_pb2.DESCRIPTOR.services_by_name["SignerService"],
        add_to_server=signer_pb2_grpc.add_SignerServiceServicer_to_server,
        servicer=SignerServicer(service, sessions, anchors),
    )
    settings = ServiceSettings(tls=TLSSettings(plaintext=True, trusted_identity_header=HEADER))
    server = await start_server(settings, [binding], listen=f"127.0.0.1:{port}")
    try:
        yield ServingSigner(view, service, server, label)
    finally:
        await server.stop(0)
        service.close()


def delete_log_entry(sessions: sessionmaker[Session], seq: int) -> None:
    """Deletes entry ``seq`` of the governance log, its append-only triggers off for it, as the
    database owner can (the triggers are back afterwards)."""
    with sessions.begin() as s:
        if s.get_bind().dialect.name == "sqlite":
            (create,) = s.execute(
                text("SELECT sql FROM sqlite_master WHERE name = 'policy_governance_log_no_delete'")
            ).one()
            s.execute(text("DROP TRIGGER policy_governance_log_no_delete"))
            s.execute(text(f"DELETE FROM policy_governance_log WHERE seq = {int(seq)}"))
            s.execute(text(create))
        else:
            table = sql(s, "{policy_governance_log}")
            s.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER policy_governance_log_append_only"))
            s.execute(text(f"DELETE FROM {table} WHERE seq = {int(seq)}"))
            s.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER policy_governance_log_append_only"))
