"""Audit fixtures: the checkpoint key in the session's SoftHSM token, and a trail service."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session, sessionmaker

from services.audit.hsm_signer import HsmCheckpointSigner
from services.audit.service import AuditService, CheckpointPolicy
from services.signer.hsm import Hsm


@pytest.fixture(scope="session")
def checkpoint_signer(hsm: Hsm) -> HsmCheckpointSigner:
    """The audit checkpoint key, generated in SoftHSM (Ed25519, sensitive, not extractable)."""
    return HsmCheckpointSigner.ensure(hsm, label="custos-audit-test")


@pytest.fixture
def audit(session_factory: sessionmaker[Session], checkpoint_signer: HsmCheckpointSigner) -> AuditService:
    policy = CheckpointPolicy(every_records=10, every_seconds=3600)
    return AuditService(session_factory, signer=checkpoint_signer, policy=policy)
