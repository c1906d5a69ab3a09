"""Persistence of nonce reservations and broadcasts (one aggregate: an address's nonces).

Every operation first locks the (chain, address) cursor row: ``SELECT ... FOR
UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` (see ``runtime.db.make_engine``) on
SQLite. So two builds for one vault, in any process, never get the same nonce.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from services.chain.errors import BroadcastRejected, IntentInvalid
from services.chain.models import BroadcastRow, NonceCursorRow, NonceReservationRow
from services.runtime.db import transaction

RESERVED = "RESERVED"
BROADCAST = "BROADCAST"


class NonceRepository:
    """Hands out nonces per (chain, address) and records what was broadcast with them."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._sessions = session_factory

    @staticmethod
    def _lock_cursor(session: Session, chain: str, address: str, now: datetime) -> NonceCursorRow:
        dialect = session.get_bind().dialect.name
        values = {"chain": chain, "address": address, "next_nonce": 0, "updated_at": now}
        if dialect == "postgresql":
            session.execute(postgresql.insert(NonceCursorRow).values(values).on_conflict_do_nothing())
        else:
            session.execute(sqlite.insert(NonceCursorRow).values(values).on_conflict_do_nothing())
        row = session.scalars(
            select(NonceCursorRow)
            .where(NonceCursorRow.chain == chain, NonceCursorRow.address == address)
            .with_for_update()
        ).one()
        return row

    def reserve(
        self,
        *,
        chain: str,
        address: str,
        intent_id: str,
        step: str,
        chain_nonce: int,
        now: datetime,
        release_after: timedelta,
    ) -> int:
        """The nonce for (intent, step): the same one when asked again.

        Args:
            chain_nonce: The node's pending nonce for the address: every nonce below
                it is taken on chain, so nothing below it is handed out.
            release_after: A reservation older than this that was never broadcast
                is given to the next intent instead of leaving a gap that would
                block the address forever.
        """
        with transaction(self._sessions) as s:
            cursor = self._lock_cursor(s, chain, address, now)
            mine = s.scalars(
                select(NonceReservationRow).where(
                    NonceReservationRow.chain == chain,
                    NonceReservationRow.intent_id == intent_id,
                    NonceReservationRow.step == step,
                )
            ).one_or_none()
            if mine is not None:
                if mine.address != address:
                    raise IntentInvalid(
                        f"intent {intent_id} step {step} already holds a nonce of another address"
                    )
                return mine.nonce
            stale = s.scalars(
                select(NonceReservationRow)
                .where(
                    NonceReservationRow.chain == chain,
                    NonceReservationRow.address == address,
                    NonceReservationRow.state == RESERVED,
                    NonceReservationRow.nonce >= chain_nonce,
                    NonceReservationRow.reserved_at < now - release_after,
                )
                .order_by(NonceReservationRow.nonce)
                .limit(1)
            ).one_or_none()
            if stale is not None:
                stale.intent_id, stale.step, stale.reserved_at = intent_id, step, now
                return stale.nonce
            nonce = max(cursor.next_nonce, chain_nonce)
            cursor.next_nonce, cursor.updated_at = nonce + 1, now
            s.add(
                NonceReservationRow(
                    chain=chain,
                    address=address,
                    nonce=nonce,
                    intent_id=intent_id,
                    step=step,
                    state=RESERVED,
                    tx_hash=None,
                    reserved_at=now,
                )
            )
            return nonce

    def record_broadcast(
        self, *, chain: str, tx_hash: str, address: str, nonce: int, raw: bytes, now: datetime
    ) -> bool:
        """Records that ``raw`` is being sent; True if it was recorded before.

        Raises:
            BroadcastRejected: another transaction was already broadcast with this nonce.
        """
        with transaction(self._sessions) as s:
            cursor = self._lock_cursor(s, chain, address, now)
            if s.get(BroadcastRow, (chain, tx_hash)) is not None:
                return True
            other = s.scalars(
                select(BroadcastRow).where(
                    BroadcastRow.chain == chain, BroadcastRow.address == address, BroadcastRow.nonce == nonce
                )
            ).one_or_none()
            if other is not None:
                raise BroadcastRejected(
                    f"nonce {nonce} of {address} was already used by {other.tx_hash}",
                    details={"tx_hash": other.tx_hash},
                )
            s.add(
                BroadcastRow(
                    chain=chain, tx_hash=tx_hash, address=address, nonce=nonce, raw=raw, first_sent_at=now
                )
            )
            reservation = self._reservation_at(s, chain, address, nonce)
            if reservation is not None:
                reservation.state, reservation.tx_hash = BROADCAST, tx_hash
            if cursor.next_nonce <= nonce:
                cursor.next_nonce, cursor.updated_at = nonce + 1, now
            return False

    def forget_broadcast(self, *, chain: str, tx_hash: str, address: str, nonce: int) -> None:
        """Undoes ``record_broadcast`` after the node refused the transaction outright."""
        with transaction(self._sessions) as s:
            s.execute(
                delete(BroadcastRow).where(BroadcastRow.chain == chain, BroadcastRow.tx_hash == tx_hash)
            )
            reservation = self._reservation_at(s, chain, address, nonce)
            if reservation is not None and reservation.tx_hash == tx_hash:
                reservation.state, reservation.tx_hash = RESERVED, None

    def broadcast(self, chain: str, tx_hash: str) -> BroadcastRow | None:
        with self._sessions() as s:
            return s.get(BroadcastRow, (chain, tx_hash))

    @staticmethod
    def _reservation_at(s: Session, chain: str, address: str, nonce: int) -> NonceReservationRow | None:
        return s.scalars(
            select(NonceReservationRow).where(
                NonceReservationRow.chain == chain,
                NonceReservationRow.address == address,
                NonceReservationRow.nonce == nonce,
            )
        ).one_or_none()
