"""custos.chain.v1.ChainService over gRPC: proto <-> domain, nothing else."""

from __future__ import annotations

from typing import Any, ClassVar

from services.chain.errors import IntentInvalid, ReconcileNotConfigured
from services.chain.reconcile import AlertKind, ReconcileAlert, Reconciler, Status, VaultReconciliation
from services.chain.service import ChainService
from services.chain.types import ChainEvent, DecodedTransaction, TransactionStatus, TxState
from services.families.config import ChainConfig, ChainFamily
from services.pb.custos.chain.v1 import chain_pb2, chain_pb2_grpc
from services.runtime.auth import current_principal
from services.runtime.convert import (
    action_to_pb,
    datetime_to_ts,
    fill_target,
    require_id,
    spec_from_pb,
    spec_to_pb,
)

_WORKER = frozenset({"svc:worker"})

_FAMILY_TO_PB = {
    ChainFamily.ETHEREUM: chain_pb2.CHAIN_FAMILY_ETHEREUM,
    ChainFamily.COSMOS: chain_pb2.CHAIN_FAMILY_COSMOS,
    ChainFamily.SOLANA: chain_pb2.CHAIN_FAMILY_SOLANA,
}
_STATE_TO_PB = {
    TxState.NOT_FOUND: chain_pb2.TRANSACTION_STATE_NOT_FOUND,
    TxState.PENDING: chain_pb2.TRANSACTION_STATE_PENDING,
    TxState.CONFIRMED: chain_pb2.TRANSACTION_STATE_CONFIRMED,
    TxState.FAILED: chain_pb2.TRANSACTION_STATE_FAILED,
    TxState.EXPIRED: chain_pb2.TRANSACTION_STATE_EXPIRED,
}

_ALERT_KIND_TO_PB = {
    AlertKind.UNSIGNED_NONCE: chain_pb2.RECONCILE_ALERT_KIND_UNSIGNED_NONCE,
    AlertKind.FOREIGN_TRANSACTION: chain_pb2.RECONCILE_ALERT_KIND_FOREIGN_TRANSACTION,
}
_RECONCILE_STATUS_TO_PB = {
    Status.CLEAN: chain_pb2.RECONCILE_STATUS_CLEAN,
    Status.ALERT: chain_pb2.RECONCILE_STATUS_ALERT,
    Status.UNAVAILABLE: chain_pb2.RECONCILE_STATUS_UNAVAILABLE,
}


def chain_to_pb(config: ChainConfig) -> chain_pb2.Chain:
    unit, exponent = config.display()
    return chain_pb2.Chain(
        name=config.name,
        family=_FAMILY_TO_PB[config.family],
        chain_id=str(config.chain_id),
        confirmations=config.confirmations,
        unbonding_seconds=config.unbonding_seconds,
        max_fee=str(config.max_fee_wei),
        denom=config.denom,
        display_unit=unit,
        display_exponent=exponent,
    )


def decoded_to_pb(d: DecodedTransaction) -> chain_pb2.DecodedTransaction:
    out = chain_pb2.DecodedTransaction(
        chain=d.chain,
        action=action_to_pb(d.action),
        from_address=d.from_address,
        to_address=d.to_address,
        value=str(d.value),
        amount=str(d.amount),
        nonce=d.nonce,
        fee_ceiling=str(d.fee_ceiling),
        signing_digest=d.signing_digest,
        summary=d.summary,
        step=d.step,
    )
    fill_target(out, d.target)
    return out


def event_to_pb(e: ChainEvent) -> chain_pb2.ChainEvent:
    return chain_pb2.ChainEvent(name=e.name, contract=e.contract, log_index=e.log_index, fields=e.fields)


def status_to_pb(s: TransactionStatus) -> chain_pb2.GetTransactionStatusResponse:
    return chain_pb2.GetTransactionStatusResponse(
        state=_STATE_TO_PB[s.state],
        confirmations=s.confirmations,
        confirmations_required=s.confirmations_required,
        block_number=s.block_number,
        failure_reason=s.failure_reason,
        events=[event_to_pb(e) for e in s.events],
    )


def alert_to_pb(a: ReconcileAlert) -> chain_pb2.ReconcileAlert:
    out = chain_pb2.ReconcileAlert(
        alert_id=a.alert_id,
        kind=_ALERT_KIND_TO_PB[a.kind],
        vault_id=a.vault_id,
        key_id=a.key_id,
        chain=a.chain,
        address=a.address,
        nonce=a.nonce,
        signed_tx_hashes=a.signed_tx_hashes,
        raised_at=datetime_to_ts(a.raised_at),
        acknowledged_by=a.acknowledged_by,
        acknowledge_reason=a.acknowledge_reason,
    )
    if a.seen is not None:
        out.seen.CopyFrom(
            chain_pb2.SeenTransaction(
                tx_hash=a.seen.tx_hash,
                block_number=a.seen.block_number,
                to_address=a.seen.to_address,
                value=str(a.seen.value),
            )
        )
    if a.acknowledged_at is not None:
        out.acknowledged_at.CopyFrom(datetime_to_ts(a.acknowledged_at))
    return out


def reconciliation_to_pb(r: VaultReconciliation) -> chain_pb2.VaultReconciliation:
    out = chain_pb2.VaultReconciliation(
        vault_id=r.vault_id,
        key_id=r.key_id,
        chain=r.chain,
        address=r.address,
        status=_RECONCILE_STATUS_TO_PB[r.status],
        confirmed_nonce=r.confirmed_nonce,
        settled_below=r.settled_below,
        pending_nonces=r.pending_nonces,
        alerts=[alert_to_pb(a) for a in r.alerts],
        error=r.error,
    )
    if r.highest_signed_nonce is not None:
        out.highest_signed_nonce = r.highest_signed_nonce
    return out


def _optional_id(value: str, field: str) -> str:
    return require_id(value, field) if value else ""


def _require_bytes(value: bytes, field: str) -> bytes:
    if not value:
        raise IntentInvalid(f"{field} is required")
    return value


class ChainServicer(chain_pb2_grpc.ChainServiceServicer):
    ROLES: ClassVar[dict[str, frozenset[str]]] = {
        "ListChains": _WORKER,
        # the staking service checks chain-specific data before anyone is asked to approve
        "ValidateIntent": frozenset({"svc:staking"}),
        "BuildTransaction": _WORKER,
        # closed: the signer decodes with its own copy of the decoder, trusting no service's
        "DecodeTransaction": frozenset(),
        "BroadcastTransaction": _WORKER,
        "GetTransactionStatus": _WORKER,
        # people look at reconciliation; only an operator closes an alert
        "ReconcileVaults": frozenset({"operator", "compliance"}),
        "AcknowledgeReconcileAlert": frozenset({"operator"}),
        # the staking workflow gives back what a failed intent reserved
        "ReleaseNonce": _WORKER,
        # the staking workflow follows a family's wait (an unbonding) on the chain
        "GetWaitStatus": _WORKER,
    }

    def __init__(self, service: ChainService, reconciler: Reconciler | None = None) -> None:
        self._service = service
        self._reconciler = reconciler

    def _reconciliation(self) -> Reconciler:
        if self._reconciler is None:
            raise ReconcileNotConfigured("this chain service does not reconcile vaults")
        return self._reconciler

    async def ListChains(
        self, request: chain_pb2.ListChainsRequest, context: Any
    ) -> chain_pb2.ListChainsResponse:
        return chain_pb2.ListChainsResponse(chains=[chain_to_pb(c) for c in self._service.list_chains()])

    async def ValidateIntent(
        self, request: chain_pb2.ValidateIntentRequest, context: Any
    ) -> chain_pb2.ValidateIntentResponse:
        context = await self._service.validate_intent(spec_from_pb(request.spec), request.vault_address)
        return chain_pb2.ValidateIntentResponse(context=context)

    async def BuildTransaction(
        self, request: chain_pb2.BuildTransactionRequest, context: Any
    ) -> chain_pb2.BuildTransactionResponse:
        built = await self._service.build_transaction(
            require_id(request.intent_id, "intent_id"),
            spec_from_pb(request.spec),
            request.vault_address,
            step=_optional_id(request.step, "step") or None,
            public_key=request.vault_public_key,
        )
        return chain_pb2.BuildTransactionResponse(
            unsigned_tx=built.unsigned_tx, decoded=decoded_to_pb(built.decoded)
        )

    async def DecodeTransaction(
        self, request: chain_pb2.DecodeTransactionRequest, context: Any
    ) -> chain_pb2.DecodeTransactionResponse:
        decoded = self._service.decode_transaction(
            require_id(request.chain, "chain"), _require_bytes(request.unsigned_tx, "unsigned_tx")
        )
        return chain_pb2.DecodeTransactionResponse(decoded=decoded_to_pb(decoded))

    async def BroadcastTransaction(
        self, request: chain_pb2.BroadcastTransactionRequest, context: Any
    ) -> chain_pb2.BroadcastTransactionResponse:
        result = await self._service.broadcast(
            require_id(request.chain, "chain"), _require_bytes(request.signed_tx, "signed_tx")
        )
        return chain_pb2.BroadcastTransactionResponse(
            tx_hash=result.tx_hash, already_known=result.already_known
        )

    async def GetTransactionStatus(
        self, request: chain_pb2.GetTransactionStatusRequest, context: Any
    ) -> chain_pb2.GetTransactionStatusResponse:
        status = await self._service.transaction_status(require_id(request.chain, "chain"), request.tx_hash)
        return status_to_pb(status)

    async def ReconcileVaults(
        self, request: chain_pb2.ReconcileVaultsRequest, context: Any
    ) -> chain_pb2.ReconcileVaultsResponse:
        found = await self._reconciliation().reconcile(
            vault_id=_optional_id(request.vault_id, "vault_id"), chain=_optional_id(request.chain, "chain")
        )
        return chain_pb2.ReconcileVaultsResponse(vaults=[reconciliation_to_pb(r) for r in found])

    async def AcknowledgeReconcileAlert(
        self, request: chain_pb2.AcknowledgeReconcileAlertRequest, context: Any
    ) -> chain_pb2.AcknowledgeReconcileAlertResponse:
        alert = await self._reconciliation().acknowledge(
            require_id(request.alert_id, "alert_id"),
            actor=current_principal().identity,
            reason=request.reason,
        )
        return chain_pb2.AcknowledgeReconcileAlertResponse(alert=alert_to_pb(alert))

    async def ReleaseNonce(
        self, request: chain_pb2.ReleaseNonceRequest, context: Any
    ) -> chain_pb2.ReleaseNonceResponse:
        result = await self._service.release_nonces(
            require_id(request.chain, "chain"), require_id(request.intent_id, "intent_id"), request.reason
        )
        return chain_pb2.ReleaseNonceResponse(released=result.released, kept=result.kept)

    async def GetWaitStatus(
        self, request: chain_pb2.GetWaitStatusRequest, context: Any
    ) -> chain_pb2.GetWaitStatusResponse:
        status = await self._service.wait_status(
            require_id(request.chain, "chain"),
            require_id(request.step, "step"),
            require_id(request.tx_hash, "tx_hash"),
            require_id(request.vault_address, "vault_address"),
        )
        out = chain_pb2.GetWaitStatusResponse(done=status.done, detail=status.detail)
        if status.until is not None:
            out.until.CopyFrom(datetime_to_ts(status.until))
        return out


__all__ = ["ChainServicer", "chain_to_pb", "decoded_to_pb", "spec_to_pb", "status_to_pb"]
