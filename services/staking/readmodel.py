"""Writes workflow transitions into the read model and the audit trail, atomically."""

from __future__ import annotations

import asyncio

from sqlalchemy.orm import Session, sessionmaker

from services.audit.writer import AuditWriter
from services.runtime.db import transaction
from services.staking import repository as repo
from workflows.staking.types import TransitionInput


class ReadModelRecorder:
    """The worker's :data:`workflows.staking.activities.Recorder`."""

    def __init__(self, sessions: sessionmaker[Session], audit: AuditWriter) -> None:
        self._sessions = sessions
        self._audit = audit

    async def __call__(self, inp: TransitionInput) -> None:
        await asyncio.to_thread(self._record, inp)

    def _record(self, inp: TransitionInput) -> None:
        with transaction(self._sessions) as s:
            if repo.record_event(s, inp.intent_id, inp.sequence, inp.state, inp.detail, inp.extra):
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
