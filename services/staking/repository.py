"""Persistence of the staking read model. Every write is idempotent."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.runtime.db import utcnow
from services.runtime.errors import InvalidArgument
from services.staking.errors import IntentNotFound
from services.staking.models import ApprovalRow, IntentEventRow, IntentRow
from services.staking.types import Transition

TERMINAL = frozenset({"CONFIRMED", "DENIED", "REJECTED", "EXPIRED", "CANCELLED", "FAILED"})


@dataclass(frozen=True)
class IntentFilter:
    states: Sequence[str] = ()
    action: str = ""
    chain: str = ""
    vault_id: str = ""
    initiator: str = ""
    created_from: datetime | None = None
    created_to: datetime | None = None


def find_by_key(session: Session, initiator: str, key: str) -> IntentRow | None:
    return session.scalar(
        select(IntentRow).where(IntentRow.initiator == initiator, IntentRow.idempotency_key == key)
    )


def unstarted(session: Session, created_before: datetime, limit: int = 100) -> list[IntentRow]:
    """Intents recorded but whose workflow was never marked started (oldest first)."""
    q = (
        select(IntentRow)
        .where(IntentRow.workflow_started == 0, IntentRow.created_at < created_before)
        .order_by(IntentRow.created_at)
        .limit(limit)
    )
    return list(session.scalars(q))


def insert_intent(session: Session, row: IntentRow) -> IntentRow | None:
    """Inserts a new intent with its SUBMITTED event; None if the idempotency key was taken."""
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()  # the intent first: its event refers to it
            session.add(
                IntentEventRow(
                    intent_id=row.intent_id,
                    sequence=1,
                    state="SUBMITTED",
                    detail=f"by {row.initiator}",
                    time=row.created_at,
                )
            )
            session.flush()
    except IntegrityError:
        return None
    return row


def record_event(session: Session, t: Transition) -> IntentRow | None:
    """Applies one transition; returns the intent, or None if it was recorded before (a retry).

    Raises:
        IntentNotFound: no intent has that id.
    """
    row = session.get(IntentRow, t.intent_id, with_for_update=True)
    if row is None:
        raise IntentNotFound(f"no intent {t.intent_id}")
    if session.get(IntentEventRow, (t.intent_id, t.sequence)) is not None:
        return None
    now = utcnow()
    session.add(
        IntentEventRow(intent_id=t.intent_id, sequence=t.sequence, state=t.state, detail=t.detail, time=now)
    )
    if t.sequence > row.last_sequence:
        row.last_sequence = t.sequence
        row.state = t.state
        row.updated_at = now
        if t.state in TERMINAL and t.state != "CONFIRMED":
            row.reason = t.detail
        if t.state == "SIGNING":
            row.summary = t.detail
    if t.tx_hash:
        row.tx_hash = t.tx_hash
    if t.requirement:
        row.requirement_json = json.dumps(
            [{"name": g.name, "threshold": g.threshold, "members": sorted(g.members)} for g in t.requirement],
            sort_keys=True,
        )
    if t.approval_deadline is not None:
        row.approval_deadline = t.approval_deadline
    return row


def record_approval(
    session: Session, intent_id: str, approver_id: str, decision: str, reason: str = ""
) -> bool:
    """Adds the approver's decision; False if they have one recorded (a retry records once)."""
    if session.get(ApprovalRow, (intent_id, approver_id)) is not None:
        return False
    try:
        with session.begin_nested():
            session.add(
                ApprovalRow(intent_id=intent_id, approver_id=approver_id, decision=decision, reason=reason)
            )
            session.flush()
    except IntegrityError:  # a concurrent retry recorded it first
        return False
    return True


def approvals_of(session: Session, intent_id: str) -> list[ApprovalRow]:
    return list(
        session.scalars(
            select(ApprovalRow).where(ApprovalRow.intent_id == intent_id).order_by(ApprovalRow.recorded_at)
        )
    )


def events_of(session: Session, intent_id: str, after: int = 0) -> list[IntentEventRow]:
    return list(
        session.scalars(
            select(IntentEventRow)
            .where(IntentEventRow.intent_id == intent_id, IntentEventRow.sequence > after)
            .order_by(IntentEventRow.sequence)
        )
    )


def _token(row: IntentRow) -> str:
    raw = json.dumps({"c": row.created_at.isoformat(), "i": row.intent_id}).encode()
    return base64.urlsafe_b64encode(raw).decode()


#: Longer than any token :func:`_token` makes (a time and a 128-character id). A longer one is
#: not parsed at all: JSON nested deep enough recurses past the interpreter's limit, and past
#: the C stack where a library has raised that limit (py_ecc sets 100000 on import).
_MAX_TOKEN = 512


def _untoken(token: str) -> tuple[datetime, str]:
    try:
        if len(token) > _MAX_TOKEN:
            raise ValueError("too long")
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return datetime.fromisoformat(data["c"]), str(data["i"])
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument("page_token is not one this service issued") from None


def list_intents(
    session: Session, f: IntentFilter, page_size: int, page_token: str
) -> tuple[list[IntentRow], str]:
    """Newest first, keyset-paginated on (created_at, intent_id)."""
    q = select(IntentRow)
    if f.states:
        q = q.where(IntentRow.state.in_(list(f.states)))
    for col, value in (
        (IntentRow.action, f.action),
        (IntentRow.chain, f.chain),
        (IntentRow.vault_id, f.vault_id),
        (IntentRow.initiator, f.initiator),
    ):
        if value:
            q = q.where(col == value)
    if f.created_from:
        q = q.where(IntentRow.created_at >= f.created_from)
    if f.created_to:
        q = q.where(IntentRow.created_at < f.created_to)
    if page_token:
        created, intent_id = _untoken(page_token)
        q = q.where(
            or_(
                IntentRow.created_at < created,
                and_(IntentRow.created_at == created, IntentRow.intent_id < intent_id),
            )
        )
    rows = list(
        session.scalars(
            q.order_by(IntentRow.created_at.desc(), IntentRow.intent_id.desc()).limit(page_size + 1)
        )
    )
    if len(rows) > page_size:
        return rows[:page_size], _token(rows[page_size - 1])
    return rows, ""
