"""Signer tables: the keys it holds in the HSM, and one signing record per signature.

The unique constraints ARE the slashing protection: one signature per
(intent, step, attempt), one per (key, chain, nonce) and attempt. A replacement
(a fee bump of the same intent step) is a new attempt that names the record it
replaces; it is the only way a second signature for the same step can exist.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from services.runtime.db import Base, UTCDateTime, utcnow


class SignerKey(Base):
    __tablename__ = "signer_keys"
    __table_args__ = (
        UniqueConstraint("label"),
        UniqueConstraint("hsm_id"),
        UniqueConstraint("vault_id", "purpose", "algorithm"),
    )

    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    label: Mapped[str] = mapped_column(String(128))
    #: CKA_ID of the key pair on the token.
    hsm_id: Mapped[bytes] = mapped_column(LargeBinary(32))
    vault_id: Mapped[str] = mapped_column(String(128))
    algorithm: Mapped[str] = mapped_column(String(16))
    purpose: Mapped[str] = mapped_column(String(32))
    public_key: Mapped[bytes] = mapped_column(LargeBinary(65))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SigningRecord(Base):
    __tablename__ = "signer_signing_records"
    __table_args__ = (
        UniqueConstraint("intent_id", "step", "attempt"),
        UniqueConstraint("key_id", "chain", "nonce", "attempt"),
        CheckConstraint("attempt >= 0", name="attempt_non_negative"),
        CheckConstraint("(attempt = 0) = (replaces_id IS NULL)", name="replacement_names_original"),
        # the signer's velocity read: a vault's first signatures in a window (signer_0002)
        Index("ix_signer_signing_records_vault_time", "vault_id", "created_at"),
    )

    record_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    intent_id: Mapped[str] = mapped_column(String(128))
    step: Mapped[str] = mapped_column(String(64))
    #: 0 for the original signature; n for the n-th replacement (fee bump).
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    key_id: Mapped[str] = mapped_column(ForeignKey("signer_keys.key_id"))
    chain: Mapped[str] = mapped_column(String(64))
    #: The account nonce the transaction uses (below 2**63 on every chain we sign for).
    nonce: Mapped[int] = mapped_column(BigInteger)
    intent_digest: Mapped[bytes] = mapped_column(LargeBinary(32))
    #: SHA-256 of the exact unsigned payload (what "same request" means).
    payload_digest: Mapped[bytes] = mapped_column(LargeBinary(32))
    #: What the HSM signed (e.g. the EIP-1559 signing hash).
    #: What the HSM signed: a digest (ECDSA) or a whole message (EdDSA), as the family says.
    signing_digest: Mapped[bytes] = mapped_column(LargeBinary)
    signature: Mapped[bytes] = mapped_column(LargeBinary(128))
    signed_tx: Mapped[bytes] = mapped_column(LargeBinary)
    tx_hash: Mapped[str] = mapped_column(String(130))
    replacement: Mapped[bool] = mapped_column(Boolean, default=False)
    replaces_id: Mapped[str | None] = mapped_column(
        ForeignKey("signer_signing_records.record_id"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    #: The intent's vault, action and amount (decimal base units): the signer's own velocity
    #: ledger is its signing records, which only it writes.
    vault_id: Mapped[str] = mapped_column(String(128), default="")
    action: Mapped[str] = mapped_column(String(16), default="")
    amount: Mapped[str] = mapped_column(String(78), default="0")
    #: Its place in the signer's ledger: records form a hash chain (``services.signer.ledger``),
    #: so a record removed or altered by whoever can write the database is noticed.
    ledger_seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    prev_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    record_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
