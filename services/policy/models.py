"""Policy tables: versions, the approver registry, recorded evaluations, the velocity ledger,
and the governed changes with their log.

The registry tables (approvers, groups, keys) and the versions' ACTIVE status are a
projection of the governance log (``policy_governance_log``), written in the same
transaction as each entry; what the signer trusts is the log, replayed and verified
against the trust root, never these rows.

Exactly one version is ACTIVE: a partial unique index says so to the database
itself, so two concurrent activations cannot both win. Amounts are decimal
strings (a 1024 ETH amount does not fit in 64 bits and SQLite has no exact wide
numeric type); sums are made in Python over the few rows of one vault's window.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from services.runtime.db import Base, UTCDateTime, utcnow


class VersionStatus(StrEnum):
    PROPOSED = "PROPOSED"
    ACTIVE = "ACTIVE"
    SUPERSEDED = "SUPERSEDED"
    REJECTED = "REJECTED"


class LedgerState(StrEnum):
    #: Counted against velocity limits (the intent is approved or further along).
    RESERVED = "RESERVED"
    #: No longer counted (the intent failed, was cancelled or expired before moving funds).
    RELEASED = "RELEASED"


class PolicyVersionRow(Base):
    __tablename__ = "policy_versions"
    __table_args__ = (
        Index(
            "ux_policy_versions_one_active",
            "status",
            unique=True,
            sqlite_where=text("status = 'ACTIVE'"),
            postgresql_where=text("status = 'ACTIVE'"),
        ),
    )

    #: Hex SHA-256 of the canonical form.
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: The YAML as proposed (what reviewers read).
    document: Mapped[str] = mapped_column(Text)
    #: The canonical JSON the version hashes.
    canonical: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16))
    parent_version: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("policy_versions.version"), nullable=True
    )
    proposed_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ApproverRow(Base):
    __tablename__ = "policy_approvers"

    approver_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    groups: Mapped[list[ApproverGroupRow]] = relationship(
        back_populates="approver", cascade="all, delete-orphan", order_by="ApproverGroupRow.group_name"
    )
    keys: Mapped[list[ApproverKeyRow]] = relationship(
        back_populates="approver", cascade="all, delete-orphan", order_by="ApproverKeyRow.created_at"
    )


class ApproverGroupRow(Base):
    __tablename__ = "policy_approver_groups"

    approver_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("policy_approvers.approver_id"), primary_key=True
    )
    group_name: Mapped[str] = mapped_column(String(128), primary_key=True, index=True)

    approver: Mapped[ApproverRow] = relationship(back_populates="groups")


class ApproverKeyRow(Base):
    __tablename__ = "policy_approver_keys"

    #: Derived from the public key (``domain.key_id_for``): one key, one approver.
    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    approver_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("policy_approvers.approver_id"), index=True
    )
    scheme: Mapped[str] = mapped_column(String(16))
    #: DER SubjectPublicKeyInfo.
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoke_reason: Mapped[str | None] = mapped_column(Text, nullable=True)

    approver: Mapped[ApproverRow] = relationship(back_populates="keys")


class RegistryRevisionRow(Base):
    """One row whose ``revision`` moves with every change to the approver registry.

    Database triggers (migration ``policy_0002``) raise it in the same transaction as
    any insert, update or delete on the approver, group and key tables, whoever
    writes them. Equal revisions mean an unchanged registry: the signer re-reads the
    registry only when the revision moved.
    """

    __tablename__ = "policy_registry_revision"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    revision: Mapped[int] = mapped_column(BigInteger)


class EvaluationRow(Base):
    """One evaluation of a recorded intent: what simulations over a time range replay."""

    __tablename__ = "policy_evaluations"
    # the signer's lookup of an intent's recorded evaluation, newest first (policy_0002)
    __table_args__ = (Index("ix_policy_evaluations_lookup", "initiator", "policy_version", "evaluated_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    intent_id: Mapped[str] = mapped_column(String(128), index=True)
    #: ``intent.spec_to_plain`` as canonical JSON.
    spec: Mapped[str] = mapped_column(Text)
    initiator: Mapped[str] = mapped_column(String(128))
    evaluated_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    policy_version: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(8))
    rule_id: Mapped[str] = mapped_column(String(64))


class VelocityRow(Base):
    """One approved intent's amount, counted against its vault's velocity limits on its chain."""

    __tablename__ = "policy_velocity"
    __table_args__ = (Index("ix_policy_velocity_vault_time", "vault_id", "reserved_at"),)

    intent_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    vault_id: Mapped[str] = mapped_column(String(128))
    #: The intent's chain: amounts count only against limits of the same vault and chain (base
    #: units of two chains are never added). "" for a reservation made before chains were kept
    #: whose chain could not be recovered (policy_0005): it counts on every chain of its vault.
    chain: Mapped[str] = mapped_column(String(64), default="")
    action: Mapped[str] = mapped_column(String(16))
    #: Decimal string of base units.
    amount: Mapped[str] = mapped_column(String(78))
    reserved_at: Mapped[datetime] = mapped_column(UTCDateTime())
    state: Mapped[str] = mapped_column(String(16))
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class GovernanceChangeRow(Base):
    """A governed change request and where it stands (the request itself is what admins sign)."""

    __tablename__ = "policy_governance_changes"

    change_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    #: ``ChangeRequest.to_plain()`` as canonical JSON.
    request: Mapped[str] = mapped_column(Text)
    #: SHA-256 of the canonical request: what the admins sign.
    digest: Mapped[bytes] = mapped_column(LargeBinary(32))
    proposer: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    state: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: The log entry that applied it.
    entry_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class GovernanceSignatureRow(Base):
    """One admin's signed decision on a change (one per admin and change)."""

    __tablename__ = "policy_governance_signatures"

    change_id: Mapped[str] = mapped_column(
        String(128),
        ForeignKey("policy_governance_changes.change_id", name="fk_policy_governance_signatures_change"),
        primary_key=True,
    )
    admin_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(String(8))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class GovernanceEntryRow(Base):
    """One entry of the hash-linked governance log (``governance.Entry``), append-only."""

    __tablename__ = "policy_governance_log"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    change_id: Mapped[str] = mapped_column(String(128), unique=True)
    prev_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    #: ``Entry.canonical()``: the bytes ``hash`` covers.
    entry: Mapped[str] = mapped_column(Text)
    applied_at: Mapped[datetime] = mapped_column(UTCDateTime())
