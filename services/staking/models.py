"""The staking read model: intents, their transitions, and the approvals they received.

Temporal holds the workflow; these tables hold what listing and watching read,
updated at every transition, so no query ever scans Temporal.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from services.runtime.db import Base, UTCDateTime, utcnow


class IntentRow(Base):
    __tablename__ = "staking_intents"
    __table_args__ = (
        UniqueConstraint("initiator", "idempotency_key"),
        # the reconciler's periodic look for intents whose workflow was never started
        Index("ix_staking_intents_unstarted", "workflow_started", "created_at"),
    )

    intent_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    initiator: Mapped[str] = mapped_column(String(128), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(128))
    # SHA-256 of the submitted spec: the same key with another request is refused.
    request_digest: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16), index=True)
    chain: Mapped[str] = mapped_column(String(64), index=True)
    vault_id: Mapped[str] = mapped_column(String(128), index=True)
    amount: Mapped[str] = mapped_column(String(80))
    spec_json: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(32), index=True)
    digest: Mapped[str] = mapped_column(String(64))
    policy_version: Mapped[str] = mapped_column(String(64))
    requirement_json: Mapped[str] = mapped_column(Text, default="")
    approval_deadline: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    tx_hash: Mapped[str] = mapped_column(String(128), default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    summary: Mapped[str] = mapped_column(Text, default="")
    workflow_started: Mapped[int] = mapped_column(Integer, default=0)
    last_sequence: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IntentEventRow(Base):
    __tablename__ = "staking_intent_events"

    intent_id: Mapped[str] = mapped_column(ForeignKey("staking_intents.intent_id"), primary_key=True)
    sequence: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")
    time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApprovalRow(Base):
    __tablename__ = "staking_approvals"

    intent_id: Mapped[str] = mapped_column(ForeignKey("staking_intents.intent_id"), primary_key=True)
    approver_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    decision: Mapped[str] = mapped_column(String(16))
    #: Why, as the approver gave it with a rejection ("" otherwise).
    reason: Mapped[str] = mapped_column(Text, default="", server_default="")
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
