"""Tampering with the table directly (raw SQL, triggers disabled, as a database owner could).

Each case runs inside one transaction on one PostgreSQL connection that verification
reads through, and is rolled back afterwards, so every case starts from the same
clean chain of N records (checkpointed at 15 and 30). Positions are random; the
seed is in every failure message.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import sessionmaker

from services.audit import repository
from services.audit.errors import ChainBroken
from services.audit.hsm_signer import HsmCheckpointSigner
from services.audit.records import AuditRecord, encode_payload, new_record
from services.audit.service import AuditService, CheckpointPolicy
from services.runtime.db import make_engine, make_session_factory, utcnow
from tests.fixtures.database import create_pg_database, drop_pg_database

N = 40
ROUNDS = 3
SEED = random.randrange(2**32)


@pytest.fixture(scope="module")
def pg_chain(pg_server: str, checkpoint_signer: HsmCheckpointSigner) -> Iterator[Engine]:
    from services.runtime.migrate import upgrade

    url = create_pg_database(pg_server)
    engine = make_engine(url)
    try:
        upgrade(url)
        audit = AuditService(
            make_session_factory(engine), signer=checkpoint_signer, policy=CheckpointPolicy(every_records=15)
        )
        for i in range(N):
            actor = f"svc:{['staking', 'policy', 'signer'][i % 3]}"
            audit.append(actor, "step.done", f"intent:{i % 5}", "ok", {"i": i, "amount": 32 * 10**18})
        assert audit.verify()[0].ok
        yield engine
    finally:
        engine.dispose()
        drop_pg_database(pg_server, url)


class Tamper:
    def __init__(self, engine: Engine, signer: HsmCheckpointSigner) -> None:
        self.engine, self.signer = engine, signer

    def check(self, tamper: Callable[[Connection, list[AuditRecord]], None]) -> tuple[int | None, str]:
        with self.engine.connect() as conn:
            trans = conn.begin()
            try:
                # the tampering SQL below names the trail's tables as its owner's session would
                conn.execute(text("SET LOCAL search_path TO audit"))
                conn.execute(text("ALTER TABLE audit_records DISABLE TRIGGER USER"))
                # A savepoint per session, so a refused checkpoint does not roll the tampering back.
                factory = sessionmaker(bind=conn, join_transaction_mode="create_savepoint")
                with factory() as s:
                    records = repository.records_between(s, 1, N)
                tamper(conn, records)
                audit = AuditService(factory, signer=self.signer)
                result, _ = audit.verify()
                assert result.ok is (result.first_bad_sequence is None)
                if not result.ok:
                    # The key never vouches for a tampered record: either it refuses to sign, or
                    # what it signs leaves the tampering exactly as visible as before.
                    try:
                        audit.checkpoint()
                    except ChainBroken:
                        pass
                    else:
                        assert audit.verify()[0].first_bad_sequence == result.first_bad_sequence
                return result.first_bad_sequence, result.reason
            finally:
                trans.rollback()


@pytest.fixture
def tamper(pg_chain: Engine, checkpoint_signer: HsmCheckpointSigner) -> Tamper:
    return Tamper(pg_chain, checkpoint_signer)


def rng(name: str) -> random.Random:
    return random.Random(f"{SEED}:{name}")


def forge(sequence: int, prev: bytes) -> AuditRecord:
    return new_record(
        sequence=sequence,
        prev_hash=prev,
        time=utcnow(),
        actor="mallory",
        action="sign.granted",
        subject="intent:x",
        outcome="ok",
        payload_json=encode_payload({"amount": 1}),
    )


def insert_row(conn: Connection, r: AuditRecord) -> None:
    conn.execute(
        text(
            "INSERT INTO audit_records (sequence, prev_hash, hash, time, actor, action, subject, outcome, "
            "payload_digest, payload_json) VALUES (:s, :p, :h, :t, :a, :ac, :su, :o, :d, :j)"
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


def test_the_clean_chain_verifies(tamper: Tamper) -> None:
    assert tamper.check(lambda conn, records: None) == (None, "ok")


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_a_changed_row_is_named(tamper: Tamper, round_: int) -> None:
    r = rng(f"change{round_}")
    k = r.randint(1, N)
    column, value = r.choice(
        [
            ("actor", "'mallory'"),
            ("action", "'sign.refused'"),
            ("subject", "'intent:other'"),
            ("outcome", "'refused'"),
            ("time", "time + interval '1 second'"),
            ("payload_json", '\'{"amount":"1"}\''),
            ("prev_hash", "hash"),
        ]
    )

    def change(conn: Connection, records: list[AuditRecord]) -> None:
        conn.execute(text(f"UPDATE audit_records SET {column} = {value} WHERE sequence = {k}"))

    bad, reason = tamper.check(change)
    assert bad == k, f"seed {SEED}: changed {column} of {k}, got {bad}: {reason}"


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_a_deleted_row_is_named(tamper: Tamper, round_: int) -> None:
    k = rng(f"delete{round_}").randint(1, N)

    def delete(conn: Connection, records: list[AuditRecord]) -> None:
        conn.execute(text(f"DELETE FROM audit_records WHERE sequence = {k}"))

    bad, reason = tamper.check(delete)
    assert bad == k, f"seed {SEED}: deleted {k}, got {bad}: {reason}"


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_an_inserted_row_is_named(tamper: Tamper, round_: int) -> None:
    k = rng(f"insert{round_}").randint(1, N + 1)

    def insert(conn: Connection, records: list[AuditRecord]) -> None:
        prev = records[k - 2].hash if k > 1 else bytes(32)
        # Make room: renumber k.. up by one (through negatives: the primary key is checked per row).
        conn.execute(text(f"UPDATE audit_records SET sequence = -sequence WHERE sequence >= {k}"))
        conn.execute(text("UPDATE audit_records SET sequence = 1 - sequence WHERE sequence < 0"))
        insert_row(conn, forge(k, prev))
        if k <= N:
            conn.execute(text(f"UPDATE audit_head SET sequence = {N + 1}"))

    bad, reason = tamper.check(insert)
    assert bad == k, f"seed {SEED}: inserted at {k}, got {bad}: {reason}"


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_reordered_rows_are_named(tamper: Tamper, round_: int) -> None:
    i, j = sorted(rng(f"reorder{round_}").sample(range(1, N + 1), 2))

    def reorder(conn: Connection, records: list[AuditRecord]) -> None:
        conn.execute(text(f"UPDATE audit_records SET sequence = -1 WHERE sequence = {i}"))
        conn.execute(text(f"UPDATE audit_records SET sequence = {i} WHERE sequence = {j}"))
        conn.execute(text(f"UPDATE audit_records SET sequence = {j} WHERE sequence = -1"))

    bad, reason = tamper.check(reorder)
    assert bad == i, f"seed {SEED}: swapped {i} and {j}, got {bad}: {reason}"


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_a_rehashed_tail_is_caught_by_the_checkpoints(tamper: Tamper, round_: int) -> None:
    k = rng(f"rehash{round_}").randint(1, 30)  # checkpoints at 15 and 30 cover 1..30

    def rehash(conn: Connection, records: list[AuditRecord]) -> None:
        conn.execute(text(f"DELETE FROM audit_records WHERE sequence >= {k}"))
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
            insert_row(conn, r)
            prev = r.hash
        conn.execute(text("UPDATE audit_head SET hash = :h"), {"h": prev})

    bad, reason = tamper.check(rehash)
    expected = 1 if k <= 15 else 16
    assert bad == expected, f"seed {SEED}: rewrote from {k}, got {bad}: {reason}"
