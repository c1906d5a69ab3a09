"""Typed client of the policy service: a deadline on every call, errors as custos errors."""

from __future__ import annotations

from typing import Any

from services.pb.custos.common.v1 import common_pb2
from services.pb.custos.policy.v1 import policy_pb2, policy_pb2_grpc
from services.policy.domain import ApproverInfo, ApproverKeyInfo, SignatureScheme
from services.runtime.client import BaseClient
from services.runtime.convert import ts_to_datetime

_SCHEMES: dict[Any, SignatureScheme] = {
    common_pb2.SIGNATURE_SCHEME_ED25519: SignatureScheme.ED25519,
    common_pb2.SIGNATURE_SCHEME_ECDSA_P256: SignatureScheme.ECDSA_P256,
}


class PolicyClient(BaseClient):
    """Calls custos.policy.v1.PolicyService; e.g. ``await client.call("Rpc", request)``."""

    service = "policy"
    stub_class = policy_pb2_grpc.PolicyServiceStub

    async def get_approver(self, approver_id: str) -> ApproverInfo:
        """The approver as the registry holds it now, revoked keys included (NotFound if unknown)."""
        resp = await self.call("GetApprover", policy_pb2.GetApproverRequest(approver_id=approver_id))
        return approver_from_pb(resp.approver)


def approver_from_pb(a: policy_pb2.Approver) -> ApproverInfo:
    """A key of a scheme this client does not know is left out: it can verify nothing here."""
    return ApproverInfo(
        approver_id=a.approver_id,
        display_name=a.display_name,
        groups=frozenset(a.groups),
        keys=tuple(
            ApproverKeyInfo(
                key_id=k.key_id,
                scheme=_SCHEMES[k.scheme],
                public_key=k.public_key,
                created_at=ts_to_datetime(k.created_at),
                revoked_at=ts_to_datetime(k.revoked_at) if k.HasField("revoked_at") else None,
            )
            for k in a.keys
            if k.scheme in _SCHEMES
        ),
        created_at=ts_to_datetime(a.created_at),
    )
