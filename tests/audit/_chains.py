"""Chains of records and checkpoints built in memory, for the pure tests."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from services.audit.chain import Checkpoint
from services.audit.records import GENESIS_HASH, AuditRecord, encode_payload, new_record
from services.audit.signing import SoftwareCheckpointSigner

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def chain(n: int) -> list[AuditRecord]:
    out: list[AuditRecord] = []
    prev = GENESIS_HASH
    for i in range(1, n + 1):
        r = new_record(
            sequence=i,
            prev_hash=prev,
            time=T0 + timedelta(seconds=i),
            actor="svc:staking",
            action="intent.submitted",
            subject=f"intent:{i % 3}",
            outcome="ok",
            payload_json=encode_payload({"amount": i * 10**18}),
        )
        out.append(r)
        prev = r.hash
    return out


def checkpoint(
    signer: SoftwareCheckpointSigner, record: AuditRecord, after: Checkpoint | None = None
) -> Checkpoint:
    """A checkpoint of ``record`` chained to ``after`` (genesis if None)."""
    cp = Checkpoint(record.sequence, record.hash, T0, signer.key_id, signer.public_key(), b"")
    if after is not None:
        cp = dataclasses.replace(cp, prev_sequence=after.sequence, prev_digest=after.digest())
    return dataclasses.replace(cp, signature=signer.sign(cp.message()))


def chain_of(signer: SoftwareCheckpointSigner, records: list[AuditRecord], at: list[int]) -> list[Checkpoint]:
    """Chained checkpoints of the records at sequences ``at``."""
    out: list[Checkpoint] = []
    for seq in at:
        out.append(checkpoint(signer, records[seq - 1], out[-1] if out else None))
    return out
