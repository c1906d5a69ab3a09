"""The review's attacks, played against the real audit service on SQLite and PostgreSQL.

Someone who owns the database (triggers dropped, as an owner can) rewrites the trail and
then asks the service to vouch for it. Each case passed unnoticed before checkpoints
named their predecessor and the HSM remembered the last checkpoint signed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from services.audit import repository
from services.audit.errors import ChainBroken
from services.audit.export import parse_export
from services.audit.hsm_signer import HsmCheckpointSigner, HsmHeadStore
from services.audit.records import new_record
from services.audit.service import AuditService, CheckpointPolicy
from services.audit.verify import verify_parsed
from services.runtime.errors import FailedPrecondition

_TABLES = ("audit_records", "audit_checkpoints", "audit_head")


def _audit_search_path(dbapi_conn: Any, _record: Any) -> None:
    with dbapi_conn.cursor() as cur:
        cur.execute("SET search_path TO audit, public")
    dbapi_conn.commit()


class Owner:
    """The attacker: raw SQL with the database owner's rights."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        if engine.dialect.name == "postgresql":  # the tables live in the audit schema there
            engine.dispose()
            event.listen(engine, "connect", _audit_search_path)
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                for table in ("audit_records", "audit_checkpoints"):
                    conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
            else:
                for table in ("audit_records", "audit_checkpoints"):
                    for verb in ("update", "delete"):
                        conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_{verb}"))

    def sql(self, statement: str, **params: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(text(statement), params)

    def rehash_from(self, k: int) -> None:
        """Rewrites record ``k`` (a new actor) and re-hashes it and every record after it."""
        with self.engine.begin() as conn:
            factory = sessionmaker(bind=conn)
            with factory() as s:
                head = repository.read_head(s)
                records = repository.records_between(s, 1, head.sequence)
            conn.execute(text("DELETE FROM audit_records WHERE sequence >= :k"), {"k": k})
            prev = records[k - 2].hash if k > 1 else bytes(32)
            for old in records[k - 1 :]:
                r = new_record(
                    sequence=old.sequence,
                    prev_hash=prev,
                    time=old.time,
                    actor="mallory" if old.sequence == k else old.actor,
                    action=old.action,
                    subject=old.subject,
                    outcome=old.outcome,
                    payload_json=old.payload_json,
                )
                conn.execute(
                    text(
                        "INSERT INTO audit_records (sequence, prev_hash, hash, time, actor, action, subject,"
                        " outcome, payload_digest, payload_json) VALUES (:s, :p, :h, :t, :a, :ac, :su, :o,"
                        " :d, :j)"
                    ),
                    {
                        "s": r.sequence,
                        "p": r.prev_hash,
                        "h": r.hash,
                        "t": r.time,
                        "a": r.actor,
                        "ac": r.action,
                        "su": r.subject,
                        "o": r.outcome,
                        "d": r.payload_digest,
                        "j": r.payload_json,
                    },
                )
                prev = r.hash
            conn.execute(text("UPDATE audit_head SET hash = :h"), {"h": prev})

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        """A copy of the trail's tables, as a backup would hold them."""
        with self.engine.connect() as conn:
            return {t: [dict(r._mapping) for r in conn.execute(text(f"SELECT * FROM {t}"))] for t in _TABLES}

    def restore(self, copy: dict[str, list[dict[str, Any]]]) -> None:
        with self.engine.begin() as conn:
            for table, rows in copy.items():
                conn.execute(text(f"DELETE FROM {table}"))
                for row in rows:
                    cols = ", ".join(row)
                    conn.execute(
                        text(f"INSERT INTO {table} ({cols}) VALUES ({', '.join(':' + c for c in row)})"), row
                    )


@dataclass
class Trail:
    audit: AuditService
    factory: sessionmaker[Session]
    owner: Owner

    def grow(self, n: int) -> None:
        for i in range(n):
            self.audit.append("svc:signer", "sign.granted", f"intent:{i % 3}", "ok", {"amount": 32 * 10**18})

    def standard(self) -> None:
        """Records 1..25: checkpoints at 10 and 20, records 21..25 not yet checkpointed."""
        self.grow(10)
        assert self.audit.checkpoint().sequence == 10
        self.grow(10)
        assert self.audit.checkpoint().sequence == 20
        self.grow(5)
        assert self.audit.verify()[0].ok

    def last_action(self) -> str:
        with self.factory() as s:
            head = repository.read_head(s)
            return repository.records_between(s, head.sequence, head.sequence)[0].action

    def export_verifies(self) -> bool:
        try:
            lines = list(self.audit.export_lines())
        except ChainBroken:
            return False
        return verify_parsed(parse_export(lines)).ok


@pytest.fixture
def trail(
    engine: Engine,
    session_factory: sessionmaker[Session],
    checkpoint_signer: HsmCheckpointSigner,
    head_store: HsmHeadStore,
) -> Iterator[Trail]:
    policy = CheckpointPolicy(every_records=1000, every_seconds=3600)  # checkpoints only when asked
    audit = AuditService(session_factory, signer=checkpoint_signer, policy=policy, head_store=head_store)
    yield Trail(audit, session_factory, Owner(engine))


def refused(trail: Trail, caplog: pytest.LogCaptureFixture, first_bad: int) -> None:
    """The service will not sign over it: a typed refusal naming ``first_bad``, an alert and a record."""
    with caplog.at_level(logging.WARNING, logger="custos.audit"), pytest.raises(ChainBroken) as e:
        trail.audit.checkpoint()
    assert e.value.first_bad_sequence == first_bad, e.value
    assert any("ALERT" in r.getMessage() for r in caplog.records)
    assert trail.last_action() == "audit.tamper_detected"
    tamper = json.loads(_last_payload(trail))
    assert tamper["first_bad_sequence"] == str(first_bad) and tamper["reason"] == e.value.message


def _last_payload(trail: Trail) -> str:
    with trail.factory() as s:
        head = repository.read_head(s)
        return repository.records_between(s, head.sequence, head.sequence)[0].payload_json


def test_deleting_every_checkpoint_and_rehashing_is_caught(
    trail: Trail, caplog: pytest.LogCaptureFixture
) -> None:
    trail.standard()
    trail.owner.sql("DELETE FROM audit_checkpoints")
    trail.owner.rehash_from(5)
    result, _ = trail.audit.verify()
    assert not result.ok and result.first_bad_sequence == 1, result
    refused(trail, caplog, 1)
    assert not trail.export_verifies()


def test_a_deleted_last_checkpoint_is_caught(trail: Trail, caplog: pytest.LogCaptureFixture) -> None:
    trail.standard()
    trail.owner.sql("DELETE FROM audit_checkpoints WHERE sequence = 20")
    result, _ = trail.audit.verify()
    assert not result.ok and result.first_bad_sequence == 20, result
    refused(trail, caplog, 20)
    assert not trail.export_verifies()


def test_rehashing_under_the_last_checkpoint_then_asking_for_a_new_one_is_refused(
    trail: Trail, caplog: pytest.LogCaptureFixture
) -> None:
    trail.standard()
    trail.owner.sql("DELETE FROM audit_checkpoints WHERE sequence = 20")
    trail.owner.rehash_from(15)
    refused(trail, caplog, 11)
    result, _ = trail.audit.verify()
    assert not result.ok and result.first_bad_sequence == 11, result
    assert not trail.export_verifies()


def test_a_dropped_checkpoint_cannot_be_re_signed(trail: Trail, caplog: pytest.LogCaptureFixture) -> None:
    trail.standard()
    trail.owner.sql("DELETE FROM audit_checkpoints WHERE sequence = 10")
    with pytest.raises(FailedPrecondition):
        trail.audit.checkpoint(at=10)  # what an export ending at 10 asked for before
    with pytest.raises(ChainBroken) as e:
        trail.audit.checkpoint(verify_all=True)  # CreateCheckpoint
    assert e.value.first_bad_sequence == 10, e.value
    result, _ = trail.audit.verify()
    assert not result.ok and result.first_bad_sequence == 10, result
    assert not trail.export_verifies()


def test_swapped_checkpoints_in_an_export_are_caught(trail: Trail) -> None:
    trail.standard()
    lines = list(trail.audit.export_lines())
    at = [i for i, line in enumerate(lines) if json.loads(line)["type"] == "checkpoint"]
    assert len(at) == 3  # 10, 20 and the seal at 25
    swapped = list(lines)
    swapped[at[0]], swapped[at[1]] = lines[at[1]], lines[at[0]]
    assert verify_parsed(parse_export(lines)).ok
    result = verify_parsed(parse_export(swapped))
    assert not result.ok and result.first_bad_sequence == 10, result


def test_a_restored_old_copy_is_caught(trail: Trail, caplog: pytest.LogCaptureFixture) -> None:
    trail.grow(10)
    trail.audit.checkpoint()
    trail.grow(5)
    backup = trail.owner.snapshot()  # head 15, checkpointed at 10
    trail.grow(5)
    trail.audit.checkpoint()  # at 20
    trail.grow(5)
    trail.owner.restore(backup)
    result, _ = trail.audit.verify()
    assert not result.ok and result.first_bad_sequence == 16, result
    refused(trail, caplog, 16)
    trail.grow(10)  # the services append on top of the old copy
    result, _ = trail.audit.verify()
    assert not result.ok and result.first_bad_sequence == 11, result
    with pytest.raises(ChainBroken):
        trail.audit.checkpoint()
    assert not trail.export_verifies()


def test_a_crash_before_the_token_learnt_the_last_checkpoint_is_not_tampering(
    trail: Trail, head_store: HsmHeadStore
) -> None:
    """The token is told after the commit: a crash in between leaves it behind, never ahead."""
    trail.grow(10)
    first = trail.audit.checkpoint()
    behind = head_store.load()
    trail.grow(10)
    trail.audit.checkpoint()
    assert behind is not None and behind.sequence == first.sequence
    head_store.store(behind)  # as if the process died between the commit of 20 and the token write
    trail.grow(5)
    assert trail.audit.verify()[0].ok
    latest = trail.audit.checkpoint()
    assert latest.sequence == 25 and latest.prev_sequence == 20
    remembered = head_store.load()
    assert remembered is not None and remembered.sequence == 25
    assert trail.last_action() != "audit.tamper_detected"
