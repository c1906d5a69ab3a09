"""The signer's audit port implemented with the audit trail's writer."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from services.audit.writer import AuditWriter as TrailWriter
from services.signer.ports import AuditWriter, AuditWriterFactory


class _SessionAudit:
    """The audit trail's writer joined to the signer's open transaction."""

    def __init__(self, writer: TrailWriter, session: Session) -> None:
        self._writer = writer
        self._session = session

    def record(self, actor: str, action: str, subject: str, outcome: str, payload: dict[str, Any]) -> None:
        self._writer.record(action, subject, outcome, payload, session=self._session, actor=actor)


def audit_in_transaction(writer: TrailWriter) -> AuditWriterFactory:
    """Binds ``writer`` to each transaction the signer opens (record and entry commit together)."""

    def bind(session: Session) -> AuditWriter:
        return _SessionAudit(writer, session)

    return bind
