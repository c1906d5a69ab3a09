"""Records workflow transitions in the read model and the audit trail, in one transaction.

The staking service is the only writer of its tables: the worker reports each
transition through ``RecordTransition`` and this module applies it. Applying the same
(intent, sequence) twice changes nothing, so a retried activity or a call whose answer
was lost (a killed staking process) records once.

Each new transition also counts in ``custos.intents`` (by state and action), and
APPROVED records how long the intent waited for its approvals
(``custos.approval.wait``, from the two events' times in the read model).
"""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from services.audit.writer import AuditWriter
from services.runtime.db import transaction
from services.runtime.telemetry import APPROVAL_WAIT, INTENTS
from services.staking import repository as repo
from services.staking.types import Transition


class ReadModel:
    """Applies transitions (blocking: run it in a thread)."""

    def __init__(self, sessions: sessionmaker[Session], audit: AuditWriter) -> None:
        self._sessions = sessions
        self._audit = audit

    def record(self, t: Transition, actor: str) -> bool:
        """Applies ``t`` with its audit record (by ``actor``); False if it was recorded before.

        Raises:
            IntentNotFound: no intent has that id.
        """
        action = ""
        waited: float | None = None
        with transaction(self._sessions) as s:
            row = repo.record_event(s, t)
            if row is None:
                return False
            action = row.action
            if t.state == "APPROVED":
                waited = _approval_wait(s, t.intent_id)
            outcome = (
                "refused"
                if t.state in ("DENIED", "REJECTED")
                else ("failed" if t.state in ("FAILED", "EXPIRED") else "ok")
            )
            payload: dict[str, object] = {"state": t.state, "sequence": t.sequence, "detail": t.detail}
            if t.tx_hash:
                payload["tx_hash"] = t.tx_hash
            self._audit.record(
                f"intent.{t.state.lower()}", f"intent:{t.intent_id}", outcome, payload, session=s, actor=actor
            )
        # counted once the transition is committed, never for a retried call
        INTENTS.add(1, {"custos.state": t.state, "custos.action": action})
        if waited is not None:
            APPROVAL_WAIT.record(waited, {"custos.action": action})
        return True


def _approval_wait(s: Session, intent_id: str) -> float | None:
    """Seconds between the intent's AWAITING_APPROVALS and APPROVED events."""
    times = {e.state: e.time for e in repo.events_of(s, intent_id)}
    if "AWAITING_APPROVALS" not in times or "APPROVED" not in times:
        return None
    return max((times["APPROVED"] - times["AWAITING_APPROVALS"]).total_seconds(), 0.0)
