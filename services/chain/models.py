"""Tables of the chain service: per-address nonce cursors, nonce reservations, broadcasts,
and what reconciling the vaults' on-chain history against the signing records found.

``chain_nonce_cursors`` holds one row per (chain, address); locking it serialises
every nonce hand-out for that address across processes. A reservation ties a
nonce to one (intent, step); a broadcast row ties a nonce to the one signed
transaction that used it, so a replay after a restart sends the same bytes, and
no second transaction can ever take the nonce.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from services.runtime.db import Base, UTCDateTime


class NonceCursorRow(Base):
    __tablename__ = "chain_nonce_cursors"

    chain: Mapped[str] = mapped_column(String(64), primary_key=True)
    address: Mapped[str] = mapped_column(String(64), primary_key=True)
    next_nonce: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class NonceReservationRow(Base):
    __tablename__ = "chain_nonce_reservations"
    __table_args__ = (
        UniqueConstraint("chain", "address", "nonce"),
        UniqueConstraint("chain", "intent_id", "step"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    chain: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(64))
    nonce: Mapped[int] = mapped_column(BigInteger)
    intent_id: Mapped[str] = mapped_column(String(128))
    step: Mapped[str] = mapped_column(String(64))
    # RESERVED until a transaction with this nonce is broadcast, then BROADCAST; RELEASED when its
    # intent failed before signing (the next build takes it); REFUSED when the node refused its
    # signed transaction outright (kept for that step). See repository.NonceRepository.
    state: Mapped[str] = mapped_column(String(16))
    tx_hash: Mapped[str | None] = mapped_column(String(128), nullable=True)
    reserved_at: Mapped[datetime] = mapped_column(UTCDateTime())


class BroadcastRow(Base):
    __tablename__ = "chain_broadcasts"
    __table_args__ = (UniqueConstraint("chain", "address", "nonce"),)

    chain: Mapped[str] = mapped_column(String(64), primary_key=True)
    tx_hash: Mapped[str] = mapped_column(String(128), primary_key=True)
    address: Mapped[str] = mapped_column(String(64))
    nonce: Mapped[int] = mapped_column(BigInteger)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    first_sent_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ReconcileCursorRow(Base):
    """How far an address's history is settled: every nonce below ``settled_below`` was mined
    as a custos-signed transaction with the chain's confirmations, or raised an alert."""

    __tablename__ = "chain_reconcile_cursors"

    chain: Mapped[str] = mapped_column(String(64), primary_key=True)
    address: Mapped[str] = mapped_column(String(64), primary_key=True)
    settled_below: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ReconcileAlertRow(Base):
    """A nonce used on chain by a transaction custos did not sign: one alert per nonce, ever.

    Open until an operator acknowledges it (``acknowledged_at``): a transaction signed
    with a vault key outside custos stays a fact even if the chain later drops it.
    """

    __tablename__ = "chain_reconcile_alerts"
    __table_args__ = (UniqueConstraint("chain", "address", "nonce"),)

    alert_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    chain: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(64))
    nonce: Mapped[int] = mapped_column(BigInteger)
    # UNSIGNED_NONCE (no signing record at that nonce) or FOREIGN_TRANSACTION (records, none mined).
    kind: Mapped[str] = mapped_column(String(32))
    vault_id: Mapped[str] = mapped_column(String(128))
    key_id: Mapped[str] = mapped_column(String(64))
    #: The transaction that used the nonce; null when the node could not say which.
    seen_tx_hash: Mapped[str | None] = mapped_column(String(128), nullable=True)
    seen_block: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    seen_to: Mapped[str | None] = mapped_column(String(64), nullable=True)
    seen_value: Mapped[str | None] = mapped_column(String(80), nullable=True)
    #: The hashes custos signed at that nonce (none of them mined).
    signed_tx_hashes: Mapped[list[str]] = mapped_column(JSON)
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime())
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    acknowledged_by: Mapped[str | None] = mapped_column(String(256), nullable=True)
    acknowledge_reason: Mapped[str | None] = mapped_column(String(512), nullable=True)
