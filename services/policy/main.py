"""``custos serve policy``: versioned policies, approval requirements and the approver registry."""

from __future__ import annotations

from pydantic import Field

from services.audit.writer import AuditWriter
from services.families.config import ChainConfig
from services.pb.custos.policy.v1 import policy_pb2, policy_pb2_grpc
from services.policy.anchoring import AnchoredGovernance
from services.policy.changes import Governance
from services.policy.governance import read_trust_file
from services.policy.service import PolicyService
from services.policy.servicer import PolicyServicer
from services.runtime.audit_hook import denial_recorder
from services.runtime.db import make_engine, make_session_factory
from services.runtime.readiness import database_probe
from services.runtime.runner import Component
from services.runtime.server import ServiceBinding
from services.runtime.settings import ServiceSettings
from services.signer.client import SignerClient


class PolicySettings(ServiceSettings):
    """The policy service anchors each governed change it applies at the signer
    (``endpoints.signer``), calling with its own ``svc:policy`` certificate."""

    service = "policy"
    #: The chain registry (``CUSTOS_CHAINS`` as JSON, or ``chains:`` in the settings file, which the
    #: chain service and the signer read too): the family of an intent's chain gives the facts
    #: rules see; an intent on a chain outside it is denied.
    chains: list[ChainConfig] = Field(default_factory=list)


SETTINGS = PolicySettings


async def build(settings: ServiceSettings) -> Component:
    assert isinstance(settings, PolicySettings)
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    audit = AuditWriter(sessions, actor="svc:policy")
    # Without a trust root, governed changes are refused (reads and evaluations still work).
    trust = read_trust_file(settings.trust_file) if settings.trust_file else None
    signer = SignerClient.connect(settings) if trust else None
    governance = (
        AnchoredGovernance(Governance(sessions, trust, audit=audit), signer, audit=audit) if trust else None
    )
    binding = ServiceBinding(
        policy_pb2.DESCRIPTOR.services_by_name["PolicyService"],
        policy_pb2_grpc.add_PolicyServiceServicer_to_server,
        PolicyServicer(PolicyService(sessions, audit=audit, chains=settings.chains), governance),
    )

    async def dispose() -> None:
        if signer is not None:
            await signer.close()
        engine.dispose()

    return Component(
        [binding],
        on_denied=denial_recorder(audit),
        closers=[dispose],
        probes=[database_probe(engine, "policy")],
    )
