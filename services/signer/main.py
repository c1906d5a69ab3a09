"""``custos serve signer``: HSM keys and signing that trusts no caller.

The signer takes the approver registry and the active policy only from the
governance log, replayed and verified against the admin keys pinned in its own
trust file (never from the caller, the policy service's answers or the registry
tables), decodes the transaction with its own copy of the chain's family (services.families), and
records each signature with its audit entry in one transaction.
"""

from __future__ import annotations

import asyncio

from pydantic import Field
from sqlalchemy.orm import Session, sessionmaker

from services.audit.hsm_signer import DEFAULT_LABEL as CHECKPOINT_KEY_LABEL
from services.audit.writer import AuditWriter
from services.families.config import ChainConfig
from services.pb.custos.signer.v1 import signer_pb2, signer_pb2_grpc
from services.policy.governance import read_trust_file
from services.runtime.audit_hook import denial_recorder
from services.runtime.db import make_engine, make_session_factory, read_only
from services.runtime.errors import InvalidArgument
from services.runtime.readiness import database_probe
from services.runtime.runner import Component
from services.runtime.server import ServiceBinding
from services.runtime.settings import HsmSettings, ServiceSettings
from services.signer.adapters import audit_in_transaction
from services.signer.anchor import HEAD_LABEL as LEDGER_HEAD_LABEL
from services.signer.errors import HsmTokenShared
from services.signer.hsm import Hsm
from services.signer.service import SignerService
from services.signer.servicer import SignerServicer
from services.signer.trust import GovernanceAnchors, GovernedPolicyView


class SignerSettings(ServiceSettings):
    service = "signer"
    hsm: HsmSettings = Field(default_factory=HsmSettings)
    chains: list[ChainConfig] = Field(default_factory=list)
    #: Threads that run Sign's checks and HSM call (0: on the event loop). One keeps the
    #: loop free for gRPC and the database's round trips, without threads contending.
    decide_threads: int = Field(default=1, ge=0, le=32)
    #: Seconds a group commit waits for Signs still being checked (see signer.commits); 0: never.
    commit_window: float = Field(default=0.005, ge=0, le=0.1)
    #: The token data object that remembers the signing ledger's head (one per installation
    #: sharing a token: installations must not share one).
    ledger_head_label: str = LEDGER_HEAD_LABEL


SETTINGS = SignerSettings


def governed_view(settings: SignerSettings, reads: sessionmaker[Session], hsm: Hsm) -> GovernedPolicyView:
    """The governance log as the signer reads it, against its own trust root."""
    if settings.trust_file is None:
        raise InvalidArgument("the signer needs its trust root: set trust_file (CUSTOS_TRUST_FILE)")
    # the HSM remembers the governance head this installation verified (no rollback)
    return GovernedPolicyView(reads, read_trust_file(settings.trust_file), store=hsm)


def make_service(
    settings: SignerSettings,
    sessions: sessionmaker[Session],
    reads: sessionmaker[Session],
    hsm: Hsm,
    *,
    policy: GovernedPolicyView | None = None,
) -> SignerService:
    """The signer as it runs in production (the benchmarks build theirs with this too).

    ``reads`` serves what only reads: the governance log, the policy documents and the
    conflict check before the HSM is asked (see ``runtime.db.read_only``); ``policy``,
    the governance log's view (:func:`governed_view` when not given).
    """
    policy = policy or governed_view(settings, reads, hsm)
    return SignerService(
        hsm=hsm,
        sessions=sessions,
        reads=reads,
        policy=policy,
        ledger_store=hsm,  # the HSM remembers the head of the signing ledger too
        ledger_label=settings.ledger_head_label,
        audit=audit_in_transaction(AuditWriter(sessions, actor="svc:signer")),
        chains=settings.chains,
        decide_threads=settings.decide_threads,
        commit_window=settings.commit_window,
    )


async def build(settings: ServiceSettings) -> Component:
    assert isinstance(settings, SignerSettings)
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    audit = AuditWriter(sessions, actor="svc:signer")
    hsm = await asyncio.to_thread(Hsm(settings.hsm).open)
    if await asyncio.to_thread(hsm.find_key_ids, CHECKPOINT_KEY_LABEL):
        # Whoever holds the signer's PIN could then sign audit checkpoints: keys by duty.
        await asyncio.to_thread(hsm.close)
        engine.dispose()
        raise HsmTokenShared(
            f"token {hsm.token_label!r} holds the audit checkpoint key: give the signer its own"
        )
    reads = make_session_factory(read_only(engine))
    governance = governed_view(settings, reads, hsm)  # one view: Sign and AnchorGovernance share it
    service = make_service(settings, sessions, reads, hsm, policy=governance)
    binding = ServiceBinding(
        signer_pb2.DESCRIPTOR.services_by_name["SignerService"],
        signer_pb2_grpc.add_SignerServiceServicer_to_server,
        SignerServicer(service, sessions, GovernanceAnchors(governance, audit)),
    )

    async def dispose() -> None:
        await asyncio.to_thread(service.close)  # commits what is queued
        await asyncio.to_thread(hsm.close)
        engine.dispose()

    return Component(
        [binding],
        on_denied=denial_recorder(audit),
        closers=[dispose],
        probes=[database_probe(engine, "signer")],
    )
