"""Audit trail benchmark: chained appends/s on PostgreSQL and SQLite, verified records/s.

Each append is one transaction, as a service writes it: lock the head row, hash,
insert, move the head, commit. The baseline, measured in the same run on the same
database, is a plain INSERT of the same row into an unchained table with an
auto-increment key, one transaction each: the ratio is what the chain and the head
lock cost. Verification reads the stored chain back and checks every hash and link
(``AuditService.verify``). The last line prints the headline figures.

    python bench/audit.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Engine, text

from services.audit.records import encode_payload
from services.audit.service import AuditService
from services.audit.signing import SoftwareCheckpointSigner
from services.audit.writer import AuditWriter
from services.runtime.db import make_engine, make_session_factory, utcnow
from services.runtime.migrate import upgrade
from tests.fixtures.database import PG_ADMIN_URL, create_pg_database, drop_pg_database

PAYLOAD = {"intent": "0f3c9a", "amount": 32 * 10**18, "policy_version": "v7", "step": "deposit"}
_PLAIN = """CREATE TABLE bench_plain (
  id {pk}, prev_hash BYTEA NOT NULL, hash BYTEA NOT NULL, time TIMESTAMP NOT NULL,
  actor VARCHAR(256) NOT NULL, action VARCHAR(128) NOT NULL, subject VARCHAR(256) NOT NULL,
  outcome VARCHAR(32) NOT NULL, payload_digest BYTEA NOT NULL, payload_json TEXT NOT NULL)"""


def rate(fn: object, seconds: float) -> tuple[float, int]:
    assert callable(fn)
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        fn()
        n += 1
    return n / elapsed, n


def plain_insert(engine: Engine, seconds: float) -> float:
    pk = "INTEGER PRIMARY KEY AUTOINCREMENT" if engine.dialect.name == "sqlite" else "BIGSERIAL PRIMARY KEY"
    with engine.begin() as conn:
        conn.execute(text(_PLAIN.format(pk=pk)))
    row = {
        "p": bytes(32),
        "h": bytes(32),
        "t": utcnow().replace(tzinfo=None),
        "a": "svc:signer",
        "ac": "sign.granted",
        "s": "intent:0f3c9a",
        "o": "ok",
        "d": bytes(32),
        "j": encode_payload(PAYLOAD),
    }
    stmt = text(
        "INSERT INTO bench_plain (prev_hash, hash, time, actor, action, subject, outcome, "
        "payload_digest, payload_json) VALUES (:p, :h, :t, :a, :ac, :s, :o, :d, :j)"
    )

    def one() -> None:
        with engine.begin() as conn:
            conn.execute(stmt, row)

    return rate(one, seconds)[0]


def measure(url: str, seconds: float) -> dict[str, float]:
    upgrade(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    writer = AuditWriter(factory, "svc:signer")
    baseline = plain_insert(engine, seconds)
    appends, n = rate(lambda: writer.record("sign.granted", "intent:0f3c9a", "ok", PAYLOAD), seconds)
    audit = AuditService(factory, signer=SoftwareCheckpointSigner("bench"))
    audit.checkpoint()  # a trail verifies only with a checkpoint chain from its first record
    start = time.perf_counter()
    result, _ = audit.verify()
    verify_rate = result.records_checked / (time.perf_counter() - start)
    assert result.ok and result.records_checked == n, result
    engine.dispose()
    return {"baseline": baseline, "appends": appends, "verify": verify_rate, "records": n}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = measure(f"sqlite:///{tmp}/bench.db", args.seconds)
    pg = create_pg_database(PG_ADMIN_URL)
    try:
        results["postgresql"] = measure(pg, args.seconds)
    finally:
        drop_pg_database(PG_ADMIN_URL, pg)
    for name, r in results.items():
        print(
            f"{name:10s} chained appends {r['appends']:8.0f}/s   plain INSERT {r['baseline']:8.0f}/s"
            f"   ratio {r['appends'] / r['baseline']:.2f}   verify {r['verify']:8.0f} records/s"
            f" ({r['records']:.0f} records)"
        )
    s, p = results["sqlite"], results["postgresql"]
    print(
        f"audit: appends/s PostgreSQL {p['appends']:.0f} "
        f"({p['appends'] / p['baseline']:.2f}x plain INSERT), "
        f"SQLite {s['appends']:.0f} ({s['appends'] / s['baseline']:.2f}x plain INSERT); "
        f"verified records/s {p['verify']:.0f} (PostgreSQL), {s['verify']:.0f} (SQLite)"
    )


if __name__ == "__main__":
    main()
