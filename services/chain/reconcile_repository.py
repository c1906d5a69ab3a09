"""Persistence of reconciliation: how far each address is settled, and the alerts raised.

An alert and its audit record commit in one transaction, and the unique (chain,
address, nonce) decides which of several chain-service replicas raises it: the
others' inserts fail and they record nothing. Settling only moves forward.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from services.chain.errors import AlertAlreadyAcknowledged, AlertNotFound
from services.chain.models import ReconcileAlertRow, ReconcileCursorRow
from services.runtime.db import reading, transaction

AuditStep = Callable[[Session, ReconcileAlertRow], None]
"""Writes the audit record of an alert's change in the session that changes it."""


class ReconcileRepository:
    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._sessions = session_factory

    def settled_below(self, chain: str, address: str) -> int:
        with reading(self._sessions) as s:
            row = s.get(ReconcileCursorRow, (chain, address))
            return row.settled_below if row is not None else 0

    def settle(self, chain: str, address: str, below: int, now: datetime) -> None:
        """Moves the address's settled mark up to ``below`` (never down)."""
        with transaction(self._sessions) as s:
            insert = postgresql.insert if s.get_bind().dialect.name == "postgresql" else sqlite.insert
            stmt = insert(ReconcileCursorRow).values(
                chain=chain, address=address, settled_below=below, updated_at=now
            )
            s.execute(
                stmt.on_conflict_do_update(
                    index_elements=["chain", "address"],
                    set_={
                        "settled_below": stmt.excluded.settled_below,
                        "updated_at": stmt.excluded.updated_at,
                    },
                    where=ReconcileCursorRow.settled_below < stmt.excluded.settled_below,
                )
            )

    def alerted_nonces(self, chain: str, address: str, start: int, end: int) -> set[int]:
        """Nonces in [start, end) with an alert, open or acknowledged."""
        with reading(self._sessions) as s:
            return set(
                s.scalars(
                    select(ReconcileAlertRow.nonce).where(
                        ReconcileAlertRow.chain == chain,
                        ReconcileAlertRow.address == address,
                        ReconcileAlertRow.nonce >= start,
                        ReconcileAlertRow.nonce < end,
                    )
                )
            )

    def raise_alert(self, alert: ReconcileAlertRow, audit: AuditStep) -> bool:
        """Stores ``alert`` with its audit record; False when that nonce already has an alert."""
        try:
            with transaction(self._sessions) as s:
                s.add(alert)
                s.flush()
                audit(s, alert)
        except IntegrityError:
            return False
        return True

    def open_alerts(self, chain: str, address: str) -> list[ReconcileAlertRow]:
        with reading(self._sessions) as s:
            return list(
                s.scalars(
                    select(ReconcileAlertRow)
                    .where(
                        ReconcileAlertRow.chain == chain,
                        ReconcileAlertRow.address == address,
                        ReconcileAlertRow.acknowledged_at.is_(None),
                    )
                    .order_by(ReconcileAlertRow.nonce)
                )
            )

    def get(self, alert_id: str) -> ReconcileAlertRow | None:
        with reading(self._sessions) as s:
            return s.get(ReconcileAlertRow, alert_id)

    def acknowledge(
        self, alert_id: str, *, actor: str, reason: str, now: datetime, audit: AuditStep
    ) -> ReconcileAlertRow:
        """Closes an open alert, with its audit record.

        Raises:
            AlertNotFound: no alert has that id.
            AlertAlreadyAcknowledged: it was closed before.
        """
        with transaction(self._sessions) as s:
            alert = s.get(ReconcileAlertRow, alert_id, with_for_update=True)
            if alert is None:
                raise AlertNotFound(f"no reconciliation alert {alert_id!r}", details={"alert_id": alert_id})
            if alert.acknowledged_at is not None:
                raise AlertAlreadyAcknowledged(
                    f"alert {alert_id} was acknowledged by {alert.acknowledged_by}",
                    details={"alert_id": alert_id},
                )
            alert.acknowledged_at, alert.acknowledged_by, alert.acknowledge_reason = now, actor, reason
            s.flush()
            audit(s, alert)
            return alert
