"""Audit replicas in separate processes share one database and one audit token.

Each appends and checkpoints as fast as it can, all at once: the checkpoints still
form one chain, nobody sees tampering where there is none, and the token ends up
remembering the newest checkpoint (its memory only ever moves forward).
"""

from __future__ import annotations

import itertools
import multiprocessing

from sqlalchemy.orm import Session, sessionmaker

from services.audit import repository
from services.audit.hsm_signer import DEFAULT_LABEL, HsmCheckpointSigner, HsmHeadStore
from services.audit.service import AuditService
from services.signer.softhsm import TokenConfig
from tests.audit._appender import audit_replica, run_all

REPLICAS = 3
APPENDS = 24


def test_replicas_race_to_checkpoint_and_keep_one_chain(
    db_url: str,
    session_factory: sessionmaker[Session],
    audit_token: TokenConfig,
    checkpoint_signer: HsmCheckpointSigner,
    head_store: HsmHeadStore,
) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier, opening = ctx.Barrier(REPLICAS), ctx.Lock()
    token = {
        "label": audit_token.label,
        "pin": audit_token.pin.get_secret_value(),
        "key_label": DEFAULT_LABEL,
    }
    procs = [
        ctx.Process(target=audit_replica, args=(db_url, token, head_store.label, APPENDS, barrier, opening))
        for _ in range(REPLICAS)
    ]
    assert run_all(procs, timeout=180) == [0] * REPLICAS

    audit = AuditService(session_factory, signer=checkpoint_signer, head_store=head_store)
    with session_factory() as s:
        checkpoints = repository.checkpoints_between(s, 1)
        actions = {r.action for r in repository.records_between(s, 1, 10_000)}
    assert "audit.tamper_detected" not in actions
    assert len(checkpoints) >= REPLICAS * APPENDS // 8, "the replicas hardly checkpointed"
    assert checkpoints[0].prev_sequence == 0
    assert all(b.previous == a.link() for a, b in itertools.pairwise(checkpoints))
    remembered = head_store.load()
    assert remembered is not None and remembered.sequence == checkpoints[-1].sequence
    assert remembered.checkpoint_digest == checkpoints[-1].digest()
    result, _ = audit.verify()
    assert result.ok, result
