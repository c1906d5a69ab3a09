"""Audit fixtures: the checkpoint key on the audit token, and a trail service that remembers its head."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.orm import Session, sessionmaker

from services.audit.hsm_signer import HsmCheckpointSigner, HsmHeadStore
from services.audit.service import AuditService, CheckpointPolicy
from services.signer.hsm import Hsm


@pytest.fixture(scope="session")
def checkpoint_signer(audit_hsm: Hsm) -> HsmCheckpointSigner:
    """The audit checkpoint key, generated in SoftHSM (Ed25519, sensitive, not extractable), under
    the label the audit service gives it: every audit service of the test session uses this one."""
    return HsmCheckpointSigner.ensure(audit_hsm)


@pytest.fixture
def head_store(audit_hsm: Hsm) -> HsmHeadStore:
    """The token's memory of the last checkpoint signed, under a label of this test's own
    (each test has a fresh database, and the token outlives them all)."""
    return HsmHeadStore(audit_hsm, label=f"t-head-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def audit(
    session_factory: sessionmaker[Session], checkpoint_signer: HsmCheckpointSigner, head_store: HsmHeadStore
) -> AuditService:
    policy = CheckpointPolicy(every_records=10, every_seconds=3600)
    return AuditService(session_factory, signer=checkpoint_signer, policy=policy, head_store=head_store)
