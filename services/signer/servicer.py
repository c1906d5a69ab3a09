"""custos.signer.v1.SignerService: protobuf <-> domain, nothing else."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy.orm import Session, sessionmaker

from services.pb.custos.signer.v1 import signer_pb2 as pb
from services.pb.custos.signer.v1 import signer_pb2_grpc
from services.policy.log import Head
from services.runtime.auth import current_principal
from services.runtime.convert import (
    approval_from_pb,
    datetime_to_ts,
    require_id,
    spec_from_pb,
    ts_to_datetime,
)
from services.runtime.errors import FailedPrecondition, InvalidArgument
from services.signer.records import RecordFilter, SigningRecordInfo, list_signing_records
from services.signer.service import KeyInfo, SignerService, SignInput
from services.signer.trust import GovernanceAnchors
from services.signer.types import KeyAlgorithm, KeyPurpose

_ALGORITHM_FROM_PB = {
    pb.KEY_ALGORITHM_SECP256K1: KeyAlgorithm.SECP256K1,
    pb.KEY_ALGORITHM_ED25519: KeyAlgorithm.ED25519,
}
_ALGORITHM_TO_PB = {v: k for k, v in _ALGORITHM_FROM_PB.items()}
_PURPOSE_FROM_PB = {
    pb.KEY_PURPOSE_VAULT: KeyPurpose.VAULT,
    pb.KEY_PURPOSE_AUDIT_CHECKPOINT: KeyPurpose.AUDIT_CHECKPOINT,
}
_PURPOSE_TO_PB = {v: k for k, v in _PURPOSE_FROM_PB.items()}


def key_to_pb(key: KeyInfo) -> pb.Key:
    return pb.Key(
        key_id=key.key_id,
        label=key.label,
        vault_id=key.vault_id,
        algorithm=_ALGORITHM_TO_PB[key.algorithm],
        purpose=_PURPOSE_TO_PB[key.purpose],
        public_key=key.public_key,
        addresses=[pb.ChainAddress(chain=c, address=a) for c, a in key.addresses],
        created_at=datetime_to_ts(key.created_at),
    )


def record_to_pb(r: SigningRecordInfo) -> pb.SigningRecord:
    return pb.SigningRecord(
        record_id=r.record_id,
        intent_id=r.intent_id,
        step=r.step,
        attempt=r.attempt,
        replacement=r.replacement,
        replaces_record_id=r.replaces_id or "",
        key_id=r.key_id,
        vault_id=r.vault_id,
        chain=r.chain,
        nonce=r.nonce,
        tx_hash=r.tx_hash,
        created_at=datetime_to_ts(r.created_at),
    )


def sign_input_from_pb(request: pb.SignRequest) -> SignInput:
    if not request.HasField("spec"):
        raise InvalidArgument("spec is required")
    return SignInput(
        intent_id=require_id(request.intent_id, "intent_id"),
        step=require_id(request.step, "step"),
        spec=spec_from_pb(request.spec),
        initiator=require_id(request.initiator, "initiator"),
        policy_version=require_id(request.policy_version, "policy_version"),
        approvals=tuple(approval_from_pb(a) for a in request.approvals),
        unsigned_tx=request.unsigned_tx,
        submitted_at=_submitted_at(request),
    )


def anchor_from_pb(request: pb.AnchorGovernanceRequest) -> Head:
    if not 0 < request.sequence < 2**63:
        raise InvalidArgument("sequence must be a governance log entry's (1 or more)")
    if len(request.hash) != 32:
        raise InvalidArgument("hash must be the entry's SHA-256 (32 bytes)")
    return Head(request.sequence, request.hash)


def _submitted_at(request: pb.SignRequest) -> datetime:
    if not request.HasField("submitted_at"):
        raise InvalidArgument("submitted_at is required: the approvals sign it")
    return ts_to_datetime(request.submitted_at, "submitted_at")


class SignerServicer(signer_pb2_grpc.SignerServiceServicer):
    ROLES: ClassVar[dict[str, frozenset[str]]] = {
        "CreateKey": frozenset({"operator"}),
        # A vault's address: for the staking service's and the worker's checks, and for the
        # deposit data an initiator generates on a devnet.
        "GetKey": frozenset({"initiator", "svc:staking", "svc:worker"}),
        # keys list; the chain service's reconciliation finds the vaults' addresses
        "ListKeys": frozenset({"operator", "svc:chain"}),
        "Sign": frozenset({"svc:worker"}),
        # The chain service reconciles them against each vault's on-chain history.
        "ListSigningRecords": frozenset({"svc:chain"}),
        # The policy service anchors each governance entry it appends.
        "AnchorGovernance": frozenset({"svc:policy"}),
    }

    def __init__(
        self,
        service: SignerService,
        records: sessionmaker[Session],
        anchors: GovernanceAnchors | None = None,
    ) -> None:
        """``records``: sessions the signing-record listing reads through; ``anchors``: the
        governance log's (None where the signer runs on fixed facts, in tests)."""
        self._service = service
        self._records = records
        self._anchors = anchors

    async def CreateKey(self, request: pb.CreateKeyRequest, context: Any) -> pb.CreateKeyResponse:
        algorithm = _ALGORITHM_FROM_PB.get(request.algorithm)
        purpose = _PURPOSE_FROM_PB.get(request.purpose)
        if algorithm is None:
            raise InvalidArgument("algorithm must be SECP256K1 or ED25519")
        if purpose is None:
            raise InvalidArgument("purpose must be VAULT or AUDIT_CHECKPOINT")
        key = await self._service.create_key(
            actor=current_principal().identity,
            vault_id=request.vault_id,
            algorithm=algorithm,
            purpose=purpose,
            label=request.label,
        )
        return pb.CreateKeyResponse(key=key_to_pb(key))

    async def GetKey(self, request: pb.GetKeyRequest, context: Any) -> pb.GetKeyResponse:
        which = request.WhichOneof("selector")
        if which == "key_id":
            key = await self._service.get_key(key_id=require_id(request.key_id, "key_id"))
        elif which == "vault_id":
            key = await self._service.get_key(
                vault_id=require_id(request.vault_id, "vault_id"),
                chain=require_id(request.chain, "chain") if request.chain else "",
            )
        else:
            raise InvalidArgument("key_id or vault_id is required")
        return pb.GetKeyResponse(key=key_to_pb(key))

    async def ListKeys(self, request: pb.ListKeysRequest, context: Any) -> pb.ListKeysResponse:
        keys, token = await self._service.list_keys(
            vault_id=request.vault_id, page_size=request.page_size, page_token=request.page_token
        )
        return pb.ListKeysResponse(keys=[key_to_pb(k) for k in keys], next_page_token=token)

    async def Sign(self, request: pb.SignRequest, context: Any) -> pb.SignResponse:
        out = await self._service.sign(sign_input_from_pb(request), actor=current_principal().identity)
        return pb.SignResponse(
            signature=out.signature,
            signed_tx=out.signed_tx,
            tx_hash=out.tx_hash,
            replayed=out.replayed,
            replacement=out.replacement,
            signing_record_id=out.signing_record_id,
        )

    async def ListSigningRecords(
        self, request: pb.ListSigningRecordsRequest, context: Any
    ) -> pb.ListSigningRecordsResponse:
        which = RecordFilter(
            key_id=request.key_id, vault_id=request.vault_id, chain=request.chain, min_nonce=request.min_nonce
        )
        records, token = await asyncio.to_thread(
            list_signing_records,
            self._records,
            which,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListSigningRecordsResponse(
            records=[record_to_pb(r) for r in records], next_page_token=token
        )

    async def AnchorGovernance(
        self, request: pb.AnchorGovernanceRequest, context: Any
    ) -> pb.AnchorGovernanceResponse:
        if self._anchors is None:
            raise FailedPrecondition("this signer reads no governance log")
        held = await self._anchors.anchor(anchor_from_pb(request), actor=current_principal().identity)
        return pb.AnchorGovernanceResponse(head_sequence=held.seq, head_hash=held.hash)
