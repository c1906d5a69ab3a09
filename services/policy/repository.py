"""Persistence of the policy service: one repository per aggregate, on an open session.

The velocity reservation is the one operation that must be race-free across
processes, so it owns its transaction (:func:`reserve_velocity`): it takes a
per-vault lock (a transaction-scoped PostgreSQL advisory lock; on SQLite the
engine's ``BEGIN IMMEDIATE`` serialises writers), sums the window of the vault on
the intent's chain (amounts of two chains are never added), and records the
reservation before committing. Two intents racing for the last room under a cap
cannot both pass.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, or_, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from services.policy.domain import ApproverInfo, ApproverKeyInfo, SignatureScheme, VelocityLimit
from services.policy.errors import VelocityConflict, VelocityExceeded
from services.policy.models import (
    ApproverGroupRow,
    ApproverKeyRow,
    ApproverRow,
    EvaluationRow,
    LedgerState,
    PolicyVersionRow,
    VelocityRow,
    VersionStatus,
)
from services.runtime.db import transaction

# First key of the two-key advisory lock: names "policy velocity" among custos's locks.
_VELOCITY_LOCK_CLASS = 0x706F6C76  # "polv"


class PolicyVersions:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, version: str) -> PolicyVersionRow | None:
        return self.session.get(PolicyVersionRow, version)

    def active(self, *, for_update: bool = False) -> PolicyVersionRow | None:
        q = select(PolicyVersionRow).where(PolicyVersionRow.status == VersionStatus.ACTIVE)
        if for_update:
            q = q.with_for_update()
        return self.session.scalars(q).one_or_none()

    def list(self, *, limit: int, offset: int) -> list[PolicyVersionRow]:
        q = (
            select(PolicyVersionRow)
            .order_by(PolicyVersionRow.created_at.desc(), PolicyVersionRow.version)
            .limit(limit)
            .offset(offset)
        )
        return list(self.session.scalars(q))

    def add(self, row: PolicyVersionRow) -> PolicyVersionRow:
        self.session.add(row)
        self.session.flush()
        return row


def approver_info(row: ApproverRow) -> ApproverInfo:
    return ApproverInfo(
        approver_id=row.approver_id,
        display_name=row.display_name,
        groups=frozenset(g.group_name for g in row.groups),
        keys=tuple(
            ApproverKeyInfo(
                key_id=k.key_id,
                scheme=SignatureScheme(k.scheme),
                public_key=k.public_key,
                created_at=k.created_at,
                revoked_at=k.revoked_at,
            )
            for k in row.keys
        ),
        created_at=row.created_at,
    )


class Approvers:
    def __init__(self, session: Session) -> None:
        self.session = session

    def _query(self) -> Select[ApproverRow]:
        return select(ApproverRow).options(selectinload(ApproverRow.groups), selectinload(ApproverRow.keys))

    def get(self, approver_id: str, *, for_update: bool = False) -> ApproverRow | None:
        q = self._query().where(ApproverRow.approver_id == approver_id)
        if for_update:
            q = q.with_for_update()
        return self.session.scalars(q).one_or_none()

    def key(self, key_id: str) -> ApproverKeyRow | None:
        return self.session.get(ApproverKeyRow, key_id)

    def list(self, *, group: str = "", limit: int, offset: int) -> list[ApproverRow]:
        q = self._query().order_by(ApproverRow.approver_id).limit(limit).offset(offset)
        if group:
            q = q.where(
                ApproverRow.approver_id.in_(
                    select(ApproverGroupRow.approver_id).where(ApproverGroupRow.group_name == group)
                )
            )
        return list(self.session.scalars(q))

    def add(self, row: ApproverRow) -> ApproverRow:
        self.session.add(row)
        self.session.flush()
        return row

    def snapshot(self) -> dict[str, ApproverInfo]:
        """The whole registry as the evidence check reads it."""
        return {r.approver_id: approver_info(r) for r in self.session.scalars(self._query())}

    def directory(self) -> dict[str, frozenset[str]]:
        """Registry group -> approver ids."""
        out: dict[str, set[str]] = {}
        for g in self.session.scalars(select(ApproverGroupRow)):
            out.setdefault(g.group_name, set()).add(g.approver_id)
        return {k: frozenset(v) for k, v in out.items()}


class Evaluations:
    def __init__(self, session: Session) -> None:
        self.session = session

    def record(self, row: EvaluationRow) -> None:
        self.session.add(row)
        self.session.flush()

    def latest_for(self, intent_id: str, policy_version: str) -> EvaluationRow | None:
        q = (
            select(EvaluationRow)
            .where(EvaluationRow.intent_id == intent_id, EvaluationRow.policy_version == policy_version)
            .order_by(EvaluationRow.evaluated_at.desc(), EvaluationRow.id.desc())
            .limit(1)
        )
        return self.session.scalars(q).one_or_none()

    def latest_matching(self, spec_json: str, initiator: str, policy_version: str) -> EvaluationRow | None:
        q = (
            select(EvaluationRow)
            .where(
                EvaluationRow.spec == spec_json,
                EvaluationRow.initiator == initiator,
                EvaluationRow.policy_version == policy_version,
            )
            .order_by(EvaluationRow.evaluated_at.desc(), EvaluationRow.id.desc())
            .limit(1)
        )
        return self.session.scalars(q).one_or_none()

    def in_range(self, start: datetime, end: datetime, *, limit: int = 10_000) -> list[EvaluationRow]:
        """The latest evaluation of each intent evaluated in [start, end), oldest first."""
        q = (
            select(EvaluationRow)
            .where(EvaluationRow.evaluated_at >= start, EvaluationRow.evaluated_at < end)
            .order_by(EvaluationRow.evaluated_at, EvaluationRow.id)
        )
        latest: dict[str, EvaluationRow] = {}
        for row in self.session.scalars(q):
            latest.pop(row.intent_id, None)  # re-insert: keep order of the latest evaluation
            latest[row.intent_id] = row
            if len(latest) > limit:
                break
        return list(latest.values())


# --- velocity ledger -----------------------------------------------------------------------


@dataclass(frozen=True)
class Reservation:
    intent_id: str
    vault_id: str
    chain: str
    action: str
    amount: int
    reserved_at: datetime
    state: LedgerState


def _reservation(row: VelocityRow) -> Reservation:
    return Reservation(
        row.intent_id,
        row.vault_id,
        row.chain,
        row.action,
        int(row.amount),
        row.reserved_at,
        LedgerState(row.state),
    )


def velocity_used(
    session: Session,
    *,
    vault_id: str,
    chain: str,
    action: str | None,
    window_seconds: int,
    at: datetime,
    exclude_intent: str | None = None,
) -> int:
    """Amount counted for ``vault_id`` on ``chain`` (and ``action`` when given) in (at - window, ...].

    A reservation of unknown chain (made before chains were kept, see ``VelocityRow.chain``)
    counts on every chain of its vault: it may be this one's."""
    q = select(VelocityRow.amount).where(
        VelocityRow.vault_id == vault_id,
        or_(VelocityRow.chain == chain, VelocityRow.chain == ""),
        VelocityRow.state == LedgerState.RESERVED,
        VelocityRow.reserved_at > at - timedelta(seconds=window_seconds),
    )
    if action is not None:
        q = q.where(VelocityRow.action == action)
    if exclude_intent is not None:
        q = q.where(VelocityRow.intent_id != exclude_intent)
    return sum(int(a) for a in session.scalars(q))


def _lock_vault(session: Session, vault_id: str) -> None:
    if session.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(vault_id.encode()).digest()[:4], "big", signed=True)
        session.execute(text("SELECT pg_advisory_xact_lock(:c, :k)"), {"c": _VELOCITY_LOCK_CLASS, "k": key})
    # SQLite: the transaction began with BEGIN IMMEDIATE (runtime.db), which already
    # excludes every other writer until it ends.


def reserve_velocity(
    factory: sessionmaker[Session],
    *,
    intent_id: str,
    vault_id: str,
    chain: str,
    action: str,
    amount: int,
    at: datetime,
    limits: Sequence[VelocityLimit],
    on_reserved: Callable[[Session, Reservation], None] | None = None,
) -> Reservation:
    """Counts ``amount`` against ``vault_id`` on ``chain`` for ``intent_id`` if every limit leaves room.

    ``on_reserved`` runs inside the reserving transaction (its audit record), only when a
    new reservation is made.

    Idempotent per intent: reserving again with the same vault, chain, action and amount
    returns the existing reservation and counts nothing twice. Raises
    :class:`VelocityExceeded` when a limit would be exceeded, and
    :class:`VelocityConflict` when the intent already holds a different or a
    released reservation.
    """
    for attempt in range(3):
        try:
            with transaction(factory) as session:
                _lock_vault(session, vault_id)
                existing = session.get(VelocityRow, intent_id)
                if existing is not None:
                    return _replay(existing, vault_id, chain, action, amount)
                for limit in limits:
                    if limit.action is not None and limit.action != action:
                        continue
                    used = velocity_used(
                        session,
                        vault_id=vault_id,
                        chain=chain,
                        action=limit.action,
                        window_seconds=limit.window_seconds,
                        at=at,
                    )
                    if used + amount > limit.max_amount:
                        scope = f"{action} from vault {vault_id!r}" if limit.action else f"vault {vault_id!r}"
                        scope += f" on {chain!r}"
                        raise VelocityExceeded(
                            f"velocity: {scope} would reach {used + amount} within {limit.window_seconds}s, "
                            f"above the limit of {limit.max_amount} ({used} already counted)",
                            details={
                                "intent_id": intent_id,
                                "vault_id": vault_id,
                                "chain": chain,
                                "used": str(used),
                                "limit": str(limit.max_amount),
                                "window_seconds": limit.window_seconds,
                            },
                        )
                row = VelocityRow(
                    intent_id=intent_id,
                    vault_id=vault_id,
                    chain=chain,
                    action=action,
                    amount=str(amount),
                    reserved_at=at,
                    state=LedgerState.RESERVED,
                )
                session.add(row)
                session.flush()
                made = _reservation(row)
                if on_reserved is not None:
                    on_reserved(session, made)
                return made
        except IntegrityError:
            # The same intent reserved concurrently on another vault lock: read it back.
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _replay(row: VelocityRow, vault_id: str, chain: str, action: str, amount: int) -> Reservation:
    if row.state != LedgerState.RESERVED:
        raise VelocityConflict(f"the velocity reservation of intent {row.intent_id!r} was released")
    if (row.vault_id, row.action, int(row.amount)) != (vault_id, action, amount) or row.chain not in (
        chain,
        "",  # made before chains were kept: the same intent, on the chain it names now
    ):
        raise VelocityConflict(
            f"intent {row.intent_id!r} already reserved {row.amount} for {row.action} "
            f"from vault {row.vault_id!r} on {row.chain or 'its chain'!r}"
        )
    return _reservation(row)


def release_velocity(
    factory: sessionmaker[Session],
    *,
    intent_id: str,
    at: datetime,
    on_released: Callable[[Session, Reservation], None] | None = None,
) -> bool:
    """Stops counting the intent's reservation (idempotent). False when it had none.

    ``on_released`` runs inside the releasing transaction, only when this call released it.
    """
    with transaction(factory) as session:
        row = session.get(VelocityRow, intent_id)
        if row is None:
            return False
        if row.state == LedgerState.RESERVED:
            row.state = LedgerState.RELEASED
            row.released_at = at
            if on_released is not None:
                session.flush()
                on_released(session, _reservation(row))
        return True


def reservations(session: Session, intent_ids: Iterable[str]) -> list[Reservation]:
    rows = session.scalars(select(VelocityRow).where(VelocityRow.intent_id.in_(list(intent_ids))))
    return [_reservation(r) for r in rows]
