"""Reconciliation: every nonce a vault key used on chain must be one custos signed.

A transaction signed with a vault key outside custos (a stolen HSM PIN, an
operator using the token directly) leaves no signing record, and nothing in the
staking flow would notice it. So, for every vault key the signer holds and every
reconcilable chain, the chain service compares the address's on-chain history
with the signer's signing records:

- every nonce below the node's confirmed nonce (the latest block's transaction
  count) must have been used by a transaction custos signed: one of the recorded
  hashes at that nonce (several after a fee bump) is mined;
- a nonce used on chain with no signing record (``UNSIGNED_NONCE``), or whose mined
  transaction is none of the recorded ones (``FOREIGN_TRANSACTION``), is an alert:
  an audit record (``chain.reconcile``, outcome ``alert``, subject the vault), an
  error log line and the ``custos.reconcile.alerts`` metric;
- a signed transaction not confirmed yet (its nonce at or above the confirmed one)
  is pending, not an alert.

An alert stays open until an operator acknowledges it (audited, outcome
``cleared``): the key was used outside custos, and that stays true even if the
chain later drops the transaction; a nonce raises at most one alert, ever.
Clean passes write nothing to the audit trail.

Each address keeps a settled mark: every nonce below it was mined as custos signed
it (with the chain's confirmations) or has its alert, so a pass only reads what
is new. The passes run every ``reconcile_seconds`` in the chain service and on
demand (``ReconcileVaults``); a node or signer outage fails that pass's reads,
is logged and retried at the next pass.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from opentelemetry import metrics
from sqlalchemy.orm import Session, sessionmaker

from services.audit.writer import AuditWriter
from services.chain.errors import (
    ChainError,
    FamilyError,
    NodeUnavailable,
    ReconcileRequestInvalid,
    UnknownChain,
)
from services.chain.models import ReconcileAlertRow
from services.chain.reconcile_repository import ReconcileRepository
from services.chain.types import SeenTransaction
from services.families.config import ChainConfig
from services.runtime.db import utcnow
from services.runtime.errors import CustosError, Unavailable

log = logging.getLogger(__name__)

ACTION = "chain.reconcile"
#: Nonces one pass examines per address: a long history (or a flood of foreign
#: transactions) is worked through over several passes instead of one endless one.
MAX_NONCES_PER_PASS = 1000
_MAX_REASON = 512


class AlertKind(StrEnum):
    UNSIGNED_NONCE = "UNSIGNED_NONCE"
    FOREIGN_TRANSACTION = "FOREIGN_TRANSACTION"


class Status(StrEnum):
    CLEAN = "CLEAN"
    ALERT = "ALERT"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(frozen=True)
class VaultKey:
    """A vault key as the signer lists it (the public key decides its address on each chain)."""

    key_id: str
    vault_id: str
    algorithm: str
    public_key: bytes


@dataclass(frozen=True)
class SignedNonce:
    """One signing record: custos signed ``tx_hash`` with the key at ``nonce``."""

    record_id: str
    nonce: int
    tx_hash: str


@dataclass(frozen=True)
class ReconcileAlert:
    alert_id: str
    kind: AlertKind
    vault_id: str
    key_id: str
    chain: str
    address: str
    nonce: int
    seen: SeenTransaction | None
    signed_tx_hashes: tuple[str, ...]
    raised_at: datetime
    acknowledged_at: datetime | None = None
    acknowledged_by: str = ""
    acknowledge_reason: str = ""


@dataclass(frozen=True)
class VaultReconciliation:
    """What one pass found for one vault key on one chain."""

    vault_id: str
    key_id: str
    chain: str
    address: str
    status: Status
    confirmed_nonce: int = 0
    highest_signed_nonce: int | None = None
    settled_below: int = 0
    pending_nonces: int = 0
    alerts: tuple[ReconcileAlert, ...] = ()
    error: str = ""


class SigningRecordSource(Protocol):
    """The signer's side: its vault keys and what it signed with each (over gRPC in production)."""

    async def vault_keys(self, vault_id: str = "") -> list[VaultKey]: ...

    async def signed_nonces(self, key_id: str, chain: str, min_nonce: int) -> list[SignedNonce]: ...


@runtime_checkable
class AccountHistory(Protocol):
    """The chain's side, one per chain: what a family's adapter reads for reconciliation."""

    config: ChainConfig

    def account_address(self, algorithm: str, public_key: bytes) -> str | None:
        """The key's account on this chain; None when the family does not use such keys."""
        ...

    async def confirmed_nonce(self, address: str) -> int: ...

    async def head(self) -> int: ...

    async def mined_block(self, tx_hash: str) -> int | None: ...

    async def transaction_at(self, address: str, nonce: int, latest: int) -> SeenTransaction | None: ...


def reconcilable(adapters: Iterable[Any]) -> dict[str, AccountHistory]:
    """The chains whose adapter can read account history (Ethereum, Cosmos), by name."""
    return {a.config.name: a for a in adapters if isinstance(a, AccountHistory)}


class Reconciler:
    """Compares each vault key's on-chain nonces with the signing records; alerts on the difference."""

    def __init__(
        self,
        chains: dict[str, AccountHistory],
        signer: SigningRecordSource,
        sessions: sessionmaker[Session],
        audit: AuditWriter,
        *,
        clock: Callable[[], datetime] = utcnow,
        meter: metrics.Meter | None = None,
        max_nonces_per_pass: int = MAX_NONCES_PER_PASS,
    ) -> None:
        self._chains = chains
        self._signer = signer
        self._store = ReconcileRepository(sessions)
        self._audit = audit
        self._clock = clock
        self._max_nonces = max_nonces_per_pass
        meter = meter or metrics.get_meter("custos")
        self._alert_count = meter.create_counter(
            "custos.reconcile.alerts",
            unit="{alert}",
            description="Nonces used on chain by transactions custos did not sign (custos.chain, .kind).",
        )
        self._checks = meter.create_counter(
            "custos.reconcile.checks",
            unit="{check}",
            description="Vault keys reconciled on a chain, by outcome (custos.chain, custos.status).",
        )
        # One pass at a time in this process (the loop and ReconcileVaults share the marks).
        self._lock = asyncio.Lock()

    # --- passes ----------------------------------------------------------------------------

    async def reconcile(self, *, vault_id: str = "", chain: str = "") -> list[VaultReconciliation]:
        """One pass over the vault keys (or one vault's) on every reconcilable chain (or one).

        Raises:
            UnknownChain: ``chain`` is not a reconcilable chain of this service.
            Unavailable: the signer cannot list the vault keys.
        """
        if chain and chain not in self._chains:
            raise UnknownChain(f"chain {chain!r} is not reconciled here", details={"chain": chain})
        chains = {chain: self._chains[chain]} if chain else self._chains
        async with self._lock:
            keys = await self._signer.vault_keys(vault_id)
            out: list[VaultReconciliation] = []
            signer_down = ""
            for name, history in chains.items():
                node_down = ""
                for key in keys:
                    address = history.account_address(key.algorithm, key.public_key)
                    if address is None:
                        continue
                    if node_down or signer_down:
                        result = _unavailable(key, name, address, node_down or signer_down)
                    else:
                        try:
                            result = await self._reconcile_one(key, name, history, address)
                        except NodeUnavailable as e:
                            node_down = e.message
                            log.warning(
                                "reconciliation of %s: node unavailable (%s); next pass retries", name, e
                            )
                            result = _unavailable(key, name, address, e.message)
                        except Unavailable as e:
                            signer_down = e.message
                            log.warning("reconciliation: signer unavailable (%s); next pass retries", e)
                            result = _unavailable(key, name, address, e.message)
                        except CustosError as e:  # e.g. the node answered with an error
                            log.warning("reconciliation of %s on %s failed: %s", address, name, e)
                            result = _unavailable(key, name, address, e.message)
                    self._checks.add(1, {"custos.chain": name, "custos.status": result.status.value})
                    out.append(result)
            return out

    async def _reconcile_one(
        self, key: VaultKey, chain: str, history: AccountHistory, address: str
    ) -> VaultReconciliation:
        # The node's nonce first, the records after: a transaction mined before the nonce
        # was read was signed (and its record committed) before that, so the records read
        # next include it. In the other order a custos transaction mined in between would
        # look foreign.
        confirmed = await history.confirmed_nonce(address)
        latest = await history.head()
        settled = await asyncio.to_thread(self._store.settled_below, chain, address)
        if confirmed < settled:
            return _unavailable(
                key,
                chain,
                address,
                f"the node reports nonce {confirmed} below the settled {settled}: wrong chain or not synced",
            )
        records = await self._signer.signed_nonces(key.key_id, chain, settled)
        signed: dict[int, list[SignedNonce]] = {}
        for record in records:
            signed.setdefault(record.nonce, []).append(record)

        end = min(confirmed, settled + self._max_nonces)
        alerted = await asyncio.to_thread(self._store.alerted_nonces, chain, address, settled, end)
        mark, contiguous = settled, True
        for nonce in range(settled, end):
            if nonce in alerted:
                final = True
            else:
                final = await self._check_nonce(
                    key, chain, history, address, nonce, signed.get(nonce, []), latest
                )
            if contiguous and final:
                mark = nonce + 1
            else:
                contiguous = False
        if mark > settled:
            await asyncio.to_thread(self._store.settle, chain, address, mark, self._clock())

        open_alerts = tuple(
            _alert(row) for row in await asyncio.to_thread(self._store.open_alerts, chain, address)
        )
        return VaultReconciliation(
            vault_id=key.vault_id,
            key_id=key.key_id,
            chain=chain,
            address=address,
            status=Status.ALERT if open_alerts else Status.CLEAN,
            confirmed_nonce=confirmed,
            highest_signed_nonce=max(signed) if signed else None,
            settled_below=mark,
            pending_nonces=sum(1 for n in signed if n >= confirmed),
            alerts=open_alerts,
        )

    async def _check_nonce(
        self,
        key: VaultKey,
        chain: str,
        history: AccountHistory,
        address: str,
        nonce: int,
        signed: list[SignedNonce],
        latest: int,
    ) -> bool:
        """Checks one confirmed nonce; True when it is settled (nothing to look at again)."""
        required = history.config.confirmations
        for record in signed:
            block = await history.mined_block(record.tx_hash)
            if block is not None:
                return latest - block + 1 >= required
        seen = await history.transaction_at(address, nonce, latest)
        ours = {r.tx_hash.lower() for r in signed}
        if seen is not None and seen.tx_hash.lower() in ours:
            # Ours after all: the node had not served its receipt yet.
            return latest - seen.block_number + 1 >= required
        await self._raise(key, chain, address, nonce, signed, seen)
        return True

    async def _raise(
        self,
        key: VaultKey,
        chain: str,
        address: str,
        nonce: int,
        signed: list[SignedNonce],
        seen: SeenTransaction | None,
    ) -> None:
        kind = AlertKind.FOREIGN_TRANSACTION if signed else AlertKind.UNSIGNED_NONCE
        row = ReconcileAlertRow(
            alert_id="alert_" + secrets.token_hex(10),
            chain=chain,
            address=address,
            nonce=nonce,
            kind=kind.value,
            vault_id=key.vault_id,
            key_id=key.key_id,
            seen_tx_hash=seen.tx_hash if seen else None,
            seen_block=seen.block_number if seen else None,
            seen_to=seen.to_address if seen else None,
            seen_value=str(seen.value) if seen else None,
            signed_tx_hashes=sorted({r.tx_hash.lower() for r in signed}),
            raised_at=self._clock(),
        )

        def audit(s: Session, alert: ReconcileAlertRow) -> None:
            self._audit.record(ACTION, f"vault:{alert.vault_id}", "alert", _payload(alert), session=s)

        if not await asyncio.to_thread(self._store.raise_alert, row, audit):
            return  # another pass (here or in another replica) raised it first
        self._alert_count.add(1, {"custos.chain": chain, "custos.kind": kind.value})
        log.error(
            "reconcile ALERT %s: nonce %d of %s (vault %s, key %s) on %s used by %s, not signed by custos",
            row.alert_id,
            nonce,
            address,
            key.vault_id,
            key.key_id,
            chain,
            seen.tx_hash if seen else "a transaction the node could not identify",
        )

    # --- acknowledgement -------------------------------------------------------------------

    async def acknowledge(self, alert_id: str, *, actor: str, reason: str) -> ReconcileAlert:
        """Closes an open alert; the audit record names ``actor`` and the reason.

        Raises:
            ReconcileRequestInvalid: no reason, or one too long.
            AlertNotFound / AlertAlreadyAcknowledged: nothing open to close.
        """
        now = self._clock()

        def audit(s: Session, alert: ReconcileAlertRow) -> None:
            payload = {**_payload(alert), "acknowledged_by": actor, "reason": reason}
            self._audit.record(ACTION, f"vault:{alert.vault_id}", "cleared", payload, session=s, actor=actor)

        try:
            text = reason.strip()
            if not text or len(text) > _MAX_REASON or not text.isprintable():
                raise ReconcileRequestInvalid(f"reason must be 1-{_MAX_REASON} printable characters")
            row = await asyncio.to_thread(
                self._store.acknowledge, alert_id, actor=actor, reason=text, now=now, audit=audit
            )
        except (ChainError, FamilyError) as e:
            known = await asyncio.to_thread(self._store.get, alert_id)
            subject = f"vault:{known.vault_id}" if known else f"alert:{alert_id}"
            payload = {"alert_id": alert_id, "error": type(e).__name__, "reason": e.message}
            await self._audit.arecord(ACTION, subject, "refused", payload, actor=actor)
            raise
        log.warning("reconcile alert %s acknowledged by %s: %s", alert_id, actor, text)
        return _alert(row)

    # --- the loop ----------------------------------------------------------------------------

    async def run_forever(self, interval: float) -> None:
        """A pass every ``interval`` seconds until cancelled; a failed pass is logged and retried."""
        while True:
            await asyncio.sleep(interval)
            try:
                results = await self.reconcile()
            except CustosError as e:  # e.g. the signer is down
                log.warning("reconciliation pass failed (%s); retrying in %g s", e, interval)
                continue
            except Exception:  # a bug or a database error: never the end of the loop
                log.exception("reconciliation pass failed; retrying in %g s", interval)
                continue
            alerts = sum(len(r.alerts) for r in results)
            if alerts:  # a reminder until an operator acknowledges them
                log.warning("reconciliation: %d open alert(s); see ReconcileVaults", alerts)


def _unavailable(key: VaultKey, chain: str, address: str, error: str) -> VaultReconciliation:
    return VaultReconciliation(
        vault_id=key.vault_id,
        key_id=key.key_id,
        chain=chain,
        address=address,
        status=Status.UNAVAILABLE,
        error=error,
    )


def _alert(row: ReconcileAlertRow) -> ReconcileAlert:
    seen = None
    if row.seen_tx_hash is not None:
        seen = SeenTransaction(
            tx_hash=row.seen_tx_hash,
            block_number=row.seen_block or 0,
            to_address=row.seen_to or "",
            value=int(row.seen_value or 0),
        )
    return ReconcileAlert(
        alert_id=row.alert_id,
        kind=AlertKind(row.kind),
        vault_id=row.vault_id,
        key_id=row.key_id,
        chain=row.chain,
        address=row.address,
        nonce=row.nonce,
        seen=seen,
        signed_tx_hashes=tuple(row.signed_tx_hashes),
        raised_at=row.raised_at,
        acknowledged_at=row.acknowledged_at,
        acknowledged_by=row.acknowledged_by or "",
        acknowledge_reason=row.acknowledge_reason or "",
    )


def _payload(row: ReconcileAlertRow) -> dict[str, Any]:
    seen = (
        {
            "tx_hash": row.seen_tx_hash,
            "block_number": row.seen_block,
            "to": row.seen_to,
            "value": row.seen_value,
        }
        if row.seen_tx_hash is not None
        else None
    )
    return {
        "alert_id": row.alert_id,
        "kind": row.kind,
        "chain": row.chain,
        "address": row.address,
        "nonce": row.nonce,
        "key_id": row.key_id,
        "transaction_seen": seen,
        "signed_tx_hashes": list(row.signed_tx_hashes),
    }
