"""A database from before checkpoints were chained, migrated and adopted (SQLite and PostgreSQL).

First-format checkpoints named no predecessor, so they prove nothing about one that
was dropped. After the migration they stay as they are and verification passes over
them; the first chained checkpoint is signed only once the whole trail verified
against them one last time, and it names genesis, covering every record before it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from services.audit import repository
from services.audit.chain import CHAINED, LEGACY, legacy_checkpoint_message
from services.audit.errors import ChainBroken
from services.audit.export import parse_export
from services.audit.hsm_signer import HsmCheckpointSigner, HsmHeadStore
from services.audit.service import AuditService, CheckpointPolicy
from services.audit.verify import verify_parsed
from services.audit.writer import AuditWriter
from services.runtime.db import make_engine, make_session_factory, utcnow
from services.runtime.migrate import alembic_config, upgrade


@pytest.fixture
def old_trail(db_url: str, checkpoint_signer: HsmCheckpointSigner) -> Iterator[sessionmaker[Session]]:
    """Ten records with first-format checkpoints at 4 and 8, as the old service left them."""
    command.downgrade(alembic_config(db_url), "audit_0001")
    engine = make_engine(db_url)
    factory = make_session_factory(engine)
    # the old service's tables sat in the default schema (PostgreSQL's schemas came later)
    old = make_session_factory(engine.execution_options(schema_translate_map={"audit": None}))
    writer = AuditWriter(old, "svc:signer")
    for i in range(10):
        writer.record("sign.granted", f"intent:{i % 3}", "ok", {"i": i})
    with old() as s:
        records = repository.records_between(s, 1, 10)
    with engine.begin() as conn:
        for seq in (4, 8):
            now = utcnow()
            message = legacy_checkpoint_message(seq, records[seq - 1].hash, now, checkpoint_signer.key_id)
            conn.execute(
                text(
                    "INSERT INTO audit_checkpoints (sequence, head_hash, time, key_id, public_key, signature)"
                    " VALUES (:s, :h, :t, :k, :p, :sig)"
                ),
                {
                    "s": seq,
                    "h": records[seq - 1].hash,
                    "t": now,
                    "k": checkpoint_signer.key_id,
                    "p": checkpoint_signer.public_key(),
                    "sig": checkpoint_signer.sign(message),
                },
            )
    upgrade(db_url)
    yield factory
    engine.dispose()


def _service(
    factory: sessionmaker[Session], signer: HsmCheckpointSigner, store: HsmHeadStore
) -> AuditService:
    policy = CheckpointPolicy(every_records=1000, every_seconds=3600)
    return AuditService(factory, signer=signer, policy=policy, head_store=store)


def test_an_old_trail_is_adopted_by_a_chained_checkpoint_from_genesis(
    old_trail: sessionmaker[Session], checkpoint_signer: HsmCheckpointSigner, head_store: HsmHeadStore
) -> None:
    with old_trail() as s:
        assert [c.version for c in repository.checkpoints_between(s, 1, version=LEGACY)] == [LEGACY, LEGACY]
    audit = _service(old_trail, checkpoint_signer, head_store)
    before, _ = audit.verify()
    assert not before.ok and before.first_bad_sequence == 1 and "no checkpoint chain" in before.reason
    cp = audit.checkpoint()
    assert (cp.sequence, cp.version, cp.prev_sequence) == (10, CHAINED, 0)
    assert audit.verify()[0].ok
    assert verify_parsed(parse_export(audit.export_lines())).ok
    remembered = head_store.load()
    assert remembered is not None and remembered.sequence == 10


def test_an_old_trail_that_fails_its_old_checkpoints_is_not_adopted(
    old_trail: sessionmaker[Session], checkpoint_signer: HsmCheckpointSigner, head_store: HsmHeadStore
) -> None:
    engine = old_trail.kw["bind"]
    with engine.begin() as conn:  # the owner edits record 6, under the old checkpoint at 8
        if engine.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL search_path TO audit, public"))
            conn.execute(text("ALTER TABLE audit_records DISABLE TRIGGER USER"))
        else:
            conn.execute(text("DROP TRIGGER audit_records_no_update"))
        conn.execute(text("UPDATE audit_records SET actor = 'mallory' WHERE sequence = 6"))
    audit = _service(old_trail, checkpoint_signer, head_store)
    with pytest.raises(ChainBroken) as e:
        audit.checkpoint()
    assert e.value.first_bad_sequence == 6, e.value
    assert head_store.load() is None
