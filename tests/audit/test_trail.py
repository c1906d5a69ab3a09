"""The trail on a real database (SQLite and PostgreSQL): appends, queries, exports, checkpoints."""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from services.audit import repository
from services.audit.chain import verify_records
from services.audit.errors import AuditUnavailable, NothingToCheckpoint, PayloadInvalid, SecretInPayload
from services.audit.export import parse_export
from services.audit.hsm_signer import HsmCheckpointSigner, HsmHeadStore
from services.audit.main import AuditSettings
from services.audit.models import AuditRecordRow
from services.audit.service import AuditService, EventQuery
from services.audit.verify import main, verify_export, verify_parsed
from services.audit.writer import AuditWriter
from services.runtime.db import make_engine, make_session_factory, transaction
from tests.fixtures.database import sql


def fill(audit: AuditService, n: int) -> None:
    for i in range(n):
        audit.append("svc:staking", "intent.submitted", f"intent:{i % 4}", "ok", {"i": i})


def count(factory: sessionmaker[Session]) -> int:
    with factory() as s:
        return s.scalar(select(func.count()).select_from(AuditRecordRow)) or 0


def test_appends_are_gapless_and_chained(audit: AuditService, session_factory: sessionmaker[Session]) -> None:
    fill(audit, 25)
    with session_factory() as s:
        records = repository.records_between(s, 1, 100)
        head = repository.read_head(s)
    assert [r.sequence for r in records] == list(range(1, 26))
    assert head.sequence == 25 and head.hash == records[-1].hash
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(records))
    result, latest = audit.verify()
    assert result.ok and result.records_checked == 25 and latest is not None and latest.sequence == 20


def test_an_append_joins_the_callers_transaction(session_factory: sessionmaker[Session]) -> None:
    writer = AuditWriter(session_factory, "svc:signer")
    with pytest.raises(RuntimeError), transaction(session_factory) as s:
        writer.record("sign.granted", "intent:a", "ok", {"step": "deposit"}, session=s)
        raise RuntimeError("the signing step failed after the record was written")
    assert count(session_factory) == 0
    with transaction(session_factory) as s:
        first = writer.record("sign.granted", "intent:a", "ok", {"step": "deposit"}, session=s)
        second = writer.record("broadcast.sent", "intent:a", "ok", session=s, actor="svc:worker")
    assert (first.sequence, second.sequence) == (1, 2) and second.prev_hash == first.hash
    assert second.actor == "svc:worker" and count(session_factory) == 2


def _chained(factory: sessionmaker[Session]) -> list[int]:
    with factory() as s:
        records = repository.records_between(s, 1, 1000)
        head = repository.read_head(s)
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(records))
    assert head.sequence == len(records) and (not records or head.hash == records[-1].hash)
    return [r.sequence for r in records]


def test_one_session_over_several_transactions_never_appends_from_an_old_head(
    session_factory: sessionmaker[Session],
) -> None:
    """Appends in one transaction read the head once; the next transaction must read it again."""
    writer, other = AuditWriter(session_factory, "svc:signer"), AuditWriter(session_factory, "svc:worker")
    with session_factory() as s:
        with s.begin():
            writer.record("a", "intent:a", "ok", session=s)
            writer.record("b", "intent:a", "ok", session=s)
        other.record("c", "intent:b", "ok")  # another writer moves the head meanwhile
        with s.begin():
            third = writer.record("d", "intent:a", "ok", session=s)
        assert third.sequence == 4
        with pytest.raises(RuntimeError), s.begin():
            writer.record("e", "intent:a", "ok", session=s)
            raise RuntimeError("rolled back")
        with s.begin():
            assert writer.record("f", "intent:a", "ok", session=s).sequence == 5
    assert _chained(session_factory) == [1, 2, 3, 4, 5]


def test_a_savepoint_rolled_back_takes_its_appends_with_it(session_factory: sessionmaker[Session]) -> None:
    writer = AuditWriter(session_factory, "svc:signer")
    with transaction(session_factory) as s:
        writer.record("a", "intent:a", "ok", session=s)
        savepoint = s.begin_nested()
        writer.record("b", "intent:a", "ok", session=s)
        savepoint.rollback()
        after = writer.record("c", "intent:a", "ok", session=s)
        with s.begin_nested():
            inner = writer.record("d", "intent:a", "ok", session=s)
        last = writer.record("e", "intent:a", "ok", session=s)
    assert (after.sequence, inner.sequence, last.sequence) == (2, 3, 4)
    assert _chained(session_factory) == [1, 2, 3, 4]


def test_secrets_are_refused_and_nothing_is_written(session_factory: sessionmaker[Session]) -> None:
    writer = AuditWriter(session_factory, "svc:signer")
    with pytest.raises(SecretInPayload):
        writer.record("key.created", "key:k1", "ok", {"label": "k1", "pin": "0000"})
    with pytest.raises(PayloadInvalid):
        writer.record("Not An Action", "key:k1", "ok")
    assert count(session_factory) == 0


def test_the_writer_fails_closed_when_the_database_is_unreachable(tmp_path: Path) -> None:
    for url in (f"sqlite:///{tmp_path}/missing/dir/custos.db", "postgresql://127.0.0.1:1/none"):
        engine = make_engine(url, pool_pre_ping=False) if url.startswith("sqlite") else make_engine(url)
        writer = AuditWriter(make_session_factory(engine), "svc:signer")
        with pytest.raises(AuditUnavailable):
            writer.record("sign.granted", "intent:a", "ok")
        engine.dispose()


def test_records_cannot_be_updated_or_deleted_through_the_database(
    audit: AuditService, session_factory: sessionmaker[Session]
) -> None:
    fill(audit, 2)
    for stmt in (
        "UPDATE {audit_records} SET actor = 'x' WHERE sequence = 1",
        "DELETE FROM {audit_records} WHERE sequence = 2",
    ):
        with pytest.raises(DBAPIError, match="append-only"), transaction(session_factory) as s:
            s.execute(text(sql(s, stmt)))
    audit.checkpoint()
    for stmt in ("UPDATE {audit_checkpoints} SET sequence = 9", "DELETE FROM {audit_checkpoints}"):
        with pytest.raises(DBAPIError, match="append-only"), transaction(session_factory) as s:
            s.execute(text(sql(s, stmt)))
    assert audit.verify()[0].ok


def test_queries_filter_and_page(audit: AuditService) -> None:
    fill(audit, 23)
    audit.append("alice", "approval.refused", "intent:1", "refused", {"why": "late"})
    seen: list[int] = []
    token = ""
    while True:
        page, token = audit.query(EventQuery(subject="intent:1"), page_size=2, page_token=token)
        seen += [r.sequence for r in page]
        if not token:
            break
    assert seen == [2, 6, 10, 14, 18, 22, 24]
    only, _ = audit.query(EventQuery(actor="alice"))
    assert [(r.action, r.outcome, r.payload()) for r in only] == [
        ("approval.refused", "refused", {"why": "late"})
    ]
    t = only[0].time
    assert [r.sequence for r in audit.query(EventQuery(start=t, end=t + timedelta(seconds=1)))[0]] == [24]
    with pytest.raises(PayloadInvalid):
        audit.query(EventQuery(subject="intent:2"), page_size=2, page_token=token or "djE6MjoxMjM")


def test_a_forged_page_token_past_the_database_range_is_refused(audit: AuditService) -> None:
    """The token's sequence is the caller's to write (its fingerprint is a public hash): bounded."""
    import base64

    q = EventQuery(subject="intent:1")
    forged = base64.urlsafe_b64encode(f"v1:{2**63}:{q.fingerprint()}".encode()).decode()
    with pytest.raises(PayloadInvalid, match="page_token"):
        audit.query(q, page_token=forged)


def test_checkpoints_are_signed_by_the_hsm_key(
    audit: AuditService, checkpoint_signer: HsmCheckpointSigner
) -> None:
    with pytest.raises(NothingToCheckpoint):
        audit.checkpoint()
    fill(audit, 3)
    cp = audit.checkpoint()
    assert cp.sequence == 3 and cp.key_id == checkpoint_signer.key_id and audit.checkpoint() == cp
    Ed25519PublicKey.from_public_bytes(checkpoint_signer.public_key()).verify(cp.signature, cp.message())
    assert audit.maybe_checkpoint() is None  # nothing new
    fill(audit, 1)
    assert audit.maybe_checkpoint() is None  # 1 record, under the policy's 10
    later = cp.time + timedelta(seconds=audit.policy.every_seconds + 1)
    assert audit.maybe_checkpoint(now=later) is not None


def test_an_export_verifies_offline_and_tells_the_story(
    audit: AuditService,
    tmp_path: Path,
    checkpoint_signer: HsmCheckpointSigner,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fill(audit, 12)
    path = tmp_path / "audit.jsonl"
    path.write_text("\n".join(audit.export_lines()) + "\n")
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines[0]["type"] == "header" and lines[-1] == {
        "type": "trailer",
        "record_count": 12,
        "head_sequence": 12,
        "head_hash": lines[12]["hash"],
    }
    assert [x["sequence"] for x in lines if x["type"] == "checkpoint"] == [10, 12]  # sealed at its end
    result = verify_export(path)
    assert result.ok and result.records_checked == 12 and result.signed_through == 12
    key_id = checkpoint_signer.key_id
    assert main([str(path), "--trust", f"{key_id}={checkpoint_signer.public_key().hex()}"]) == 0
    assert "OK: 12 records" in capsys.readouterr().out
    assert main([str(path), "--trust", f"{checkpoint_signer.key_id}={bytes(32).hex()}"]) == 1


def truncations(lines: list[str]) -> dict[str, tuple[list[str], int]]:
    """Ways to cut a 12-record export, each with the first sequence verification must name."""
    header, records, tail = lines[0], lines[1:13], lines[13:]
    fixed_header = json.loads(header) | {"record_count": 9, "to_sequence": 9}
    trailer = json.loads(tail[-1]) | {
        "record_count": 9,
        "head_sequence": 9,
        "head_hash": json.loads(records[8])["hash"],
    }
    keep = [x for x in tail[:-1] if json.loads(x).get("sequence", 0) <= 9]
    return {
        "records cut off with the rest": ([header, *records[:9]], 10),
        "cut inside a line": ([header, *records[:9], records[9][:40]], 10),
        "trailer cut": (lines[:-1], 13),
        "records removed, counts and last checkpoint rewritten": (
            [json.dumps(fixed_header), *records[:9], *keep, json.dumps(trailer)],
            1,
        ),
        "a record removed in the middle": ([header, *records[:4], *records[5:], *tail], 5),
    }


@pytest.mark.parametrize(
    "case",
    [
        "records cut off with the rest",
        "cut inside a line",
        "trailer cut",
        "records removed, counts and last checkpoint rewritten",
        "a record removed in the middle",
    ],
)
def test_a_truncated_export_is_detected(audit: AuditService, tmp_path: Path, case: str) -> None:
    audit.policy = type(audit.policy)(every_records=1000, every_seconds=3600)
    fill(audit, 12)
    lines = list(audit.export_lines())
    cut, first_bad = truncations(lines)[case]
    path = tmp_path / "cut.jsonl"
    path.write_text("\n".join(cut) + "\n")
    result = verify_export(path)
    assert not result.ok and result.first_bad_sequence == first_bad, result


def test_server_side_verification_sees_what_offline_sees(audit: AuditService) -> None:
    fill(audit, 15)
    lines = list(audit.export_lines(from_sequence=4, to_sequence=9))
    assert json.loads(lines[0])["record_count"] == 7  # on to the checkpoint at 10, which signs 9
    assert verify_parsed(parse_export(lines)).ok
    result, _ = audit.verify(from_sequence=4, to_sequence=9)
    assert result.ok and result.records_checked == 6
    with audit._read() as s:
        records = repository.records_between(s, 1, 15)
        cps = repository.checkpoints_between(s, 0)
    assert verify_records(records, cps, audit.public_keys()).ok


async def _signed_up_to(audit: AuditService, sequence: int, timeout: float) -> float:
    start = asyncio.get_running_loop().time()
    while True:
        _, latest = await asyncio.to_thread(audit.verify)
        if latest is not None and latest.sequence >= sequence:
            return asyncio.get_running_loop().time() - start
        assert asyncio.get_running_loop().time() - start < timeout, f"no checkpoint at {sequence} yet"
        await asyncio.sleep(0.1)


@pytest.mark.asyncio
async def test_by_default_the_head_is_checkpointed_within_seconds_while_it_moves(
    session_factory: sessionmaker[Session], checkpoint_signer: HsmCheckpointSigner, head_store: HsmHeadStore
) -> None:
    assert AuditSettings.model_fields["checkpoint_every_seconds"].default == 2.0
    audit = AuditService(session_factory, signer=checkpoint_signer, head_store=head_store)
    assert audit.policy.every_seconds == 2.0
    stop = asyncio.Event()
    checkpointer = asyncio.create_task(audit.run_checkpointer(stop))
    try:
        await asyncio.to_thread(fill, audit, 3)
        assert await _signed_up_to(audit, 3, timeout=8) < 8
        with session_factory() as s:
            idle = len(repository.checkpoints_between(s, 1))
        await asyncio.sleep(2.5)  # nothing moved: nothing new to sign
        with session_factory() as s:
            assert len(repository.checkpoints_between(s, 1)) == idle
        await asyncio.to_thread(fill, audit, 2)
        await _signed_up_to(audit, 5, timeout=8)
    finally:
        stop.set()
        await checkpointer
