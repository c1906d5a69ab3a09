"""Writes workflow transitions into the read model and the audit trail, atomically.

Each new transition also counts in ``custos.intents`` (by state and action), and
APPROVED records how long the intent waited for its approvals
(``custos.approval.wait``, from the two events' times in the read model).
"""

from __future__ import annotations

import asyncio

from sqlalchemy.orm import Session, sessionmaker

from services.audit.writer import AuditWriter
from services.runtime.db import transaction
from services.runtime.telemetry import APPROVAL_WAIT, INTENTS
from services.staking import repository as repo
from services.staking.models import IntentRow
from workflows.staking.types import TransitionInput


class ReadModelRecorder:
    """The worker's :data:`workflows.staking.activities.Recorder`."""

    def __init__(self, sessions: sessionmaker[Session], audit: AuditWriter) -> None:
        self._sessions = sessions
        self._audit = audit

    async def __call__(self, inp: TransitionInput) -> None:
        await asyncio.to_thread(self._record, inp)

    def _record(self, inp: TransitionInput) -> None:
        action = ""
        waited: float | None = None
        with transaction(self._sessions) as s:
            if repo.record_event(s, inp.intent_id, inp.sequence, inp.state, inp.detail, inp.extra):
                row = s.get(IntentRow, inp.intent_id)
                action = row.action if row is not None else ""
                if inp.state == "APPROVED":
                    waited = _approval_wait(s, inp.intent_id)
                outcome = (
                    "refused"
                    if inp.state in ("DENIED", "REJECTED")
                    else ("failed" if inp.state in ("FAILED", "EXPIRED") else "ok")
                )
                payload: dict[str, object] = {
                    "state": inp.state,
                    "sequence": inp.sequence,
                    "detail": inp.detail,
                }
                if inp.extra.get("tx_hash"):
                    payload["tx_hash"] = inp.extra["tx_hash"]
                self._audit.record(
                    f"intent.{inp.state.lower()}", f"intent:{inp.intent_id}", outcome, payload, session=s
                )
        if action:  # counted once the transition is committed, never for a retried activity
            INTENTS.add(1, {"custos.state": inp.state, "custos.action": action})
        if waited is not None:
            APPROVAL_WAIT.record(waited, {"custos.action": action})


def _approval_wait(s: Session, intent_id: str) -> float | None:
    """Seconds between the intent's AWAITING_APPROVALS and APPROVED events."""
    times = {e.state: e.time for e in repo.events_of(s, intent_id)}
    if "AWAITING_APPROVALS" not in times or "APPROVED" not in times:
        return None
    return max((times["APPROVED"] - times["AWAITING_APPROVALS"]).total_seconds(), 0.0)
