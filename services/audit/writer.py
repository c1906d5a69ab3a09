"""The one-line way for any component to record a step, failing closed.

    audit = AuditWriter(session_factory, actor="svc:signer")
    audit.record("sign.granted", f"intent:{intent_id}", "ok", {"step": step}, session=session)

With ``session`` the record joins the caller's open transaction, so the step and
its record commit (or roll back) together; without it the record commits on its
own. Any failure to write raises :class:`AuditUnavailable` and the caller must
not carry out the step. A payload holding a secret raises ``SecretInPayload``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from services.audit import repository
from services.audit.errors import AuditUnavailable
from services.audit.records import AuditRecord, validate_fields
from services.runtime.db import transaction


class AuditWriter:
    """Appends records for one component (``actor``, e.g. ``svc:signer``)."""

    def __init__(self, session_factory: sessionmaker[Session], actor: str) -> None:
        validate_fields(actor, "writer", "", "ok")
        self._factory = session_factory
        self.actor = actor

    def record(
        self,
        action: str,
        subject: str,
        outcome: str,
        payload: Mapping[str, Any] | None = None,
        *,
        session: Session | None = None,
        actor: str | None = None,
    ) -> AuditRecord:
        """Appends one record; ``actor`` overrides the writer's own (e.g. the person who asked).

        Raises:
            AuditUnavailable: the record could not be written; do not carry out the step.
            SecretInPayload: the payload holds something that must never be recorded.
            PayloadInvalid: a field is malformed.
        """
        who = actor or self.actor
        try:
            if session is not None:
                return repository.append(session, who, action, subject, outcome, payload)
            with transaction(self._factory) as own:
                return repository.append(own, who, action, subject, outcome, payload)
        except SQLAlchemyError as e:
            # The driver's message may quote the statement's parameters: name the error only.
            cause = type(getattr(e, "orig", None) or e).__name__
            raise AuditUnavailable(f"the audit trail cannot be written ({cause})") from e
        except OSError as e:
            raise AuditUnavailable(f"the audit trail cannot be written ({type(e).__name__})") from e

    async def arecord(
        self,
        action: str,
        subject: str,
        outcome: str,
        payload: Mapping[str, Any] | None = None,
        *,
        actor: str | None = None,
    ) -> AuditRecord:
        """:meth:`record` in its own transaction, off the event loop."""
        return await asyncio.to_thread(self.record, action, subject, outcome, payload, actor=actor)
