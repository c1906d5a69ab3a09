"""Persistence of nonce reservations and broadcasts (one aggregate: an address's nonces).

Every operation first locks the (chain, address) cursor row: ``SELECT ... FOR
UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` (see ``runtime.db.make_engine``) on
SQLite. So two builds for one vault, in any process, never get the same nonce.

A reservation is RESERVED by its (intent, step) until a signed transaction is sent
with its nonce (BROADCAST). An intent that fails before signing gives it back
(RELEASED): the next build of the address takes the lowest such nonce the chain has
not used before a new one. A nonce whose signed transaction the node refused outright
is REFUSED: it stays with its step, whose corrected transaction (a fee bump, the only
other payload the signer allows at that nonce) may still use it; no other intent ever
gets it, since the signer would refuse that intent's transaction.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from services.chain.errors import BroadcastRejected, IntentInvalid
from services.chain.models import BroadcastRow, NonceCursorRow, NonceReservationRow
from services.runtime.db import transaction

RESERVED = "RESERVED"
BROADCAST = "BROADCAST"
RELEASED = "RELEASED"
REFUSED = "REFUSED"


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

        Otherwise the lowest nonce at or above ``chain_nonce`` that was released, or
        reserved longer than ``release_after`` and never sent with, before a new one.

        Args:
            chain_nonce: The node's pending nonce for the address: every nonce below
                it is taken on chain, so nothing below it is handed out.
            release_after: A reservation older than this that was never broadcast
                is given to the next intent instead of leaving a gap that would
                block the address forever (its intent died without releasing it).
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
                if mine.state == RELEASED:  # asked again after giving it back: its own again
                    mine.state, mine.reserved_at = RESERVED, now
                return mine.nonce
            free = s.scalars(
                select(NonceReservationRow)
                .where(
                    NonceReservationRow.chain == chain,
                    NonceReservationRow.address == address,
                    NonceReservationRow.nonce >= chain_nonce,
                    or_(
                        NonceReservationRow.state == RELEASED,
                        and_(
                            NonceReservationRow.state == RESERVED,
                            NonceReservationRow.reserved_at < now - release_after,
                        ),
                    ),
                )
                .order_by(NonceReservationRow.nonce)
                .limit(1)
            ).one_or_none()
            if free is not None:
                free.intent_id, free.step, free.state, free.reserved_at = intent_id, step, RESERVED, now
                return free.nonce
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

    def record_sent(self, *, chain: str, tx_hash: str, address: str, raw: bytes, now: datetime) -> bool:
        """Records that ``raw`` is being sent on a chain without nonces (Solana); True if it was
        recorded before. No cursor, no reservation: the signer's ledger holds one signature per
        replay key, and a step may have two signed transactions (the family's replacement after
        an expired blockhash), so the row's ``nonce`` is a key of the transaction's own (63 bits
        of its id's hash), unique per address as the table requires."""
        key = int.from_bytes(hashlib.sha256(tx_hash.encode()).digest()[:8], "big") >> 1
        values = {
            "chain": chain,
            "tx_hash": tx_hash,
            "address": address,
            "nonce": key,
            "raw": raw,
            "first_sent_at": now,
        }
        with transaction(self._sessions) as s:
            insert = postgresql.insert if s.get_bind().dialect.name == "postgresql" else sqlite.insert
            # Two sends of the same bytes at once: one row, the other finds it (no IntegrityError).
            result = s.execute(insert(BroadcastRow).values(values).on_conflict_do_nothing())
            return bool(result.rowcount == 0)  # type: ignore[attr-defined]

    def forget_broadcast(self, *, chain: str, tx_hash: str, address: str, nonce: int) -> None:
        """Undoes ``record_broadcast`` after the node refused the transaction outright.

        The nonce is free for another transaction of the same step, but stays REFUSED:
        it is signed, so it is neither released nor handed to another intent as stale.
        """
        with transaction(self._sessions) as s:
            s.execute(
                delete(BroadcastRow).where(BroadcastRow.chain == chain, BroadcastRow.tx_hash == tx_hash)
            )
            reservation = self._reservation_at(s, chain, address, nonce)
            if reservation is not None and reservation.tx_hash == tx_hash:
                reservation.state = REFUSED

    def release(self, *, chain: str, intent_id: str, now: datetime) -> tuple[list[int], list[int]]:
        """Gives back the intent's reservations on ``chain`` that nothing was sent with.

        Returns the nonces released now and those kept: a nonce a signed transaction was
        sent with (BROADCAST, or REFUSED by the node) is never given back, because that
        transaction stays valid until the nonce is used and the signer refuses any other
        intent's transaction for it, so whoever took it next would fail in its place.
        """
        with transaction(self._sessions) as s:
            mine = select(NonceReservationRow).where(
                NonceReservationRow.chain == chain, NonceReservationRow.intent_id == intent_id
            )
            for address in sorted({r.address for r in s.scalars(mine)}):
                self._lock_cursor(s, chain, address, now)
            released: list[int] = []
            kept: list[int] = []
            for row in s.scalars(mine):  # read again under the locks
                if row.state == RESERVED:
                    row.state = RELEASED
                    released.append(row.nonce)
                elif row.state in (BROADCAST, REFUSED):
                    kept.append(row.nonce)
            return sorted(released), sorted(kept)

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
