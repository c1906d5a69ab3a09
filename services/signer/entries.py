"""What the signer's ledger keeps of one signing record, and the amounts velocity counts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

from services.signer.models import SigningRecord


@dataclass(frozen=True, slots=True)
class Entry:
    """What the ledger keeps of one record: enough to answer, and its hash to check the rest.

    A *lost* entry is a record the HSM token names (its batch's head was written there before
    the commit) that the database does not hold: the signer stopped between the two, or
    someone removed it. Its signature may have been read, so its step and nonce stay bound
    to its payload: only that same transaction may be signed again.
    """

    seq: int
    record_id: str
    intent_id: str
    step: str
    attempt: int
    key_id: str
    chain: str
    nonce: int
    payload_digest: bytes
    signing_digest: bytes
    hash: bytes
    vault_id: str
    action: str
    amount: int
    created_at: datetime
    replaces_id: str | None = None
    lost: bool = False

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for k in ("payload_digest", "signing_digest", "hash"):
            out[k] = out[k].hex()
        out["created_at"] = self.created_at.isoformat()
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Entry:
        values = dict(data)
        for k in ("payload_digest", "signing_digest", "hash"):
            values[k] = bytes.fromhex(values[k])
        values["created_at"] = datetime.fromisoformat(values["created_at"])
        return cls(**values)

    def as_lost(self) -> Entry:
        return replace(self, lost=True)

    def same_transaction(self, intent_id: str, step: str, payload_digest: bytes) -> bool:
        """Whether signing ``payload_digest`` for (intent, step) signs this entry's transaction again."""
        return (self.intent_id, self.step, self.payload_digest) == (intent_id, step, payload_digest)


def entry_of(r: SigningRecord) -> Entry:
    return Entry(
        seq=int(r.ledger_seq),
        record_id=r.record_id,
        intent_id=r.intent_id,
        step=r.step,
        attempt=r.attempt,
        key_id=r.key_id,
        chain=r.chain,
        nonce=int(r.nonce),
        payload_digest=bytes(r.payload_digest),
        signing_digest=bytes(r.signing_digest),
        hash=bytes(r.record_hash),
        vault_id=r.vault_id,
        action=r.action,
        amount=int(r.amount or 0),
        created_at=r.created_at,
        replaces_id=r.replaces_id,
    )


@dataclass(frozen=True)
class SignedAmount:
    """One intent's first signature for a vault: what velocity counts."""

    intent_id: str
    action: str
    amount: int
    created_at: datetime
