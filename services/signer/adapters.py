"""The signer's ports implemented with the real components: audit writer, Ethereum decoder."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from sqlalchemy.orm import Session

from services.audit.writer import AuditWriter as TrailWriter
from services.chain.ethereum.adapter import EthereumAdapter, PlannedCall
from services.runtime.intent import IntentSpec
from services.signer.errors import FeeAboveCap, TransactionMismatch
from services.signer.ports import AuditWriter, AuditWriterFactory, CheckedTransaction


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


class EthereumIntentCheck:
    """(c) of Sign: the chain service's own decoder, run inside the signer process.

    Decodes the bytes independently of whoever built them, re-plans the call the
    intent turns into (which re-verifies deposit data), and compares contract,
    action, amount, target and value: a deposit sends exactly its amount; an exit or a
    consolidation sends only the system contract's request fee, bounded by the chain's
    ``max_request_fee_wei`` (nobody approved more). The network fee is bounded by the
    chain's ``max_fee_wei``.
    """

    def __init__(self, adapters: Mapping[str, EthereumAdapter], *, plan_cache: int = 1024) -> None:
        self._adapters = dict(adapters)
        # Planning an intent validates its BLS pubkeys and deposit data (milliseconds); it is a
        # pure function of (chain, intent, sender), so each is planned once, not per signature.
        self._plan = lru_cache(maxsize=plan_cache)(self._plan_uncached)

    def _plan_uncached(self, chain: str, spec: IntentSpec, sender: str) -> PlannedCall:
        return self._adapters[chain].plan(spec, sender)

    def check(self, *, chain: str, unsigned_tx: bytes, spec: IntentSpec, sender: str) -> CheckedTransaction:
        adapter = self._adapters.get(chain)
        if adapter is None:
            raise TransactionMismatch(f"no decoder for chain {chain!r}")
        if spec.chain != chain:
            raise TransactionMismatch(f"intent is for {spec.chain!r}, transaction for {chain!r}")
        decoded = adapter.decode(unsigned_tx, sender=sender)
        planned = self._plan(chain, spec, sender)
        differences = []
        if decoded.to_address.lower() != "0x" + planned.to.hex():
            differences.append("recipient contract")
        if decoded.action != spec.action:
            differences.append("action")
        if decoded.amount != spec.amount:
            differences.append("amount")
        if decoded.target != spec.target:
            differences.append("validator or deposit data")
        if not planned.pays_request_fee and decoded.value != planned.value:
            differences.append("value")
        if differences:
            raise TransactionMismatch(f"transaction differs from the intent in: {', '.join(differences)}")
        config = adapter.config
        if planned.pays_request_fee and decoded.value > config.max_request_fee_wei:
            raise TransactionMismatch(
                f"the transaction sends {decoded.value} wei as a request fee, above the chain's cap of "
                f"{config.max_request_fee_wei}",
                details={"value": str(decoded.value), "cap": str(config.max_request_fee_wei)},
            )
        ceiling = decoded.fees.max_fee_per_gas * decoded.fees.gas_limit
        if ceiling > config.max_fee_wei:
            raise FeeAboveCap(
                f"the transaction may pay {ceiling} wei in fees, above the chain's cap {config.max_fee_wei}",
                details={"fee_ceiling": str(ceiling), "cap": str(config.max_fee_wei)},
            )
        return CheckedTransaction(fee_ceiling=ceiling, nonce=decoded.nonce)
