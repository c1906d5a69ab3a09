"""Typed client of the policy service: a deadline on every call, errors as custos errors.

The governed-change methods sign on the caller's side: the admin's private key never
leaves their process, and what it signs is the digest recomputed here from the change
itself, never a digest a server handed over.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from services.pb.custos.common.v1 import common_pb2
from services.pb.custos.policy.v1 import policy_pb2, policy_pb2_grpc
from services.policy.convert import STATE_TO_PB, change_from_pb, change_to_pb
from services.policy.domain import ApproverInfo, ApproverKeyInfo, SignatureScheme
from services.policy.evidence import PrivateKey, sign_approval
from services.policy.governance import GOVERNANCE_VERSION, Change, ChangeState, Entry, new_request
from services.policy.log import read_entry
from services.runtime.client import BaseClient
from services.runtime.convert import approval_to_pb, optional_datetime, ts_to_datetime
from services.runtime.errors import FailedPrecondition
from services.runtime.intent import Decision

#: How long a proposed change stays open by default.
DEFAULT_CHANGE_LIFETIME = timedelta(hours=72)
_SCHEMES: dict[Any, SignatureScheme] = {
    common_pb2.SIGNATURE_SCHEME_ED25519: SignatureScheme.ED25519,
    common_pb2.SIGNATURE_SCHEME_ECDSA_P256: SignatureScheme.ECDSA_P256,
}


def new_change_id() -> str:
    return "chg-" + secrets.token_hex(12)


class PolicyClient(BaseClient):
    """Calls custos.policy.v1.PolicyService; e.g. ``await client.call("Rpc", request)``."""

    service = "policy"
    stub_class = policy_pb2_grpc.PolicyServiceStub

    async def propose_change(
        self,
        change: Change,
        key: PrivateKey,
        *,
        proposer: str,
        expires_in: timedelta = DEFAULT_CHANGE_LIFETIME,
        change_id: str | None = None,
    ) -> policy_pb2.Change:
        """Proposes ``change`` as ``proposer``, signed with ``key`` (their pinned admin key)."""
        request = new_request(
            change,
            change_id=change_id or new_change_id(),
            proposer=proposer,
            expires_at=datetime.now(UTC) + expires_in,
        )
        approval = sign_approval(
            key,
            approver_id=proposer,
            intent_digest=request.digest(),
            policy_version=GOVERNANCE_VERSION,
            decision=Decision.APPROVE,
            expires_at=request.expires_at,
        )
        resp = await self.call(
            "ProposeChange",
            policy_pb2.ProposeChangeRequest(request=change_to_pb(request), approval=approval_to_pb(approval)),
        )
        return resp.change

    async def decide_change(
        self, change_id: str, key: PrivateKey, *, admin: str, decision: Decision
    ) -> policy_pb2.Change:
        """Approves or rejects an open change as ``admin``, over the digest recomputed from the change."""
        served = await self.get_change(change_id)
        request = change_from_pb(served.request)
        if request.digest() != served.digest:
            raise FailedPrecondition(f"{change_id}: the digest served does not match the change; not signing")
        approval = sign_approval(
            key,
            approver_id=admin,
            intent_digest=request.digest(),
            policy_version=GOVERNANCE_VERSION,
            decision=decision,
            expires_at=request.expires_at,
        )
        resp = await self.call(
            "DecideChange",
            policy_pb2.DecideChangeRequest(change_id=change_id, approval=approval_to_pb(approval)),
        )
        return resp.change

    async def get_change(self, change_id: str) -> policy_pb2.Change:
        resp = await self.call("GetChange", policy_pb2.GetChangeRequest(change_id=change_id))
        return resp.change

    async def list_changes(
        self, state: ChangeState | None = None, *, page_size: int = 50, page_token: str = ""
    ) -> policy_pb2.ListChangesResponse:
        request = policy_pb2.ListChangesRequest(page_size=page_size, page_token=page_token)
        if state is not None:
            request.state = STATE_TO_PB[state]
        resp: policy_pb2.ListChangesResponse = await self.call("ListChanges", request)
        return resp

    async def governance(self) -> policy_pb2.GetGovernanceResponse:
        resp: policy_pb2.GetGovernanceResponse = await self.call(
            "GetGovernance", policy_pb2.GetGovernanceRequest()
        )
        return resp

    async def governance_entries(self) -> list[Entry]:
        """The whole governance log, each entry parsed and checked against the hash served with it
        (its signatures and links are the caller's to verify: ``GovernedState.apply``)."""
        out: list[Entry] = []
        while True:
            request = policy_pb2.ListGovernanceEntriesRequest(after_sequence=len(out), page_size=500)
            resp: policy_pb2.ListGovernanceEntriesResponse = await self.call("ListGovernanceEntries", request)
            for e in resp.entries:
                entry = read_entry(e.sequence, b"", e.hash, e.canonical, check_prev=False)
                out.append(entry)
            if len(resp.entries) < 500:
                return out

    async def anchor_log(self) -> policy_pb2.AnchorLogResponse:
        """Has the policy service ask the signer to anchor the governance log through its head."""
        resp: policy_pb2.AnchorLogResponse = await self.call("AnchorLog", policy_pb2.AnchorLogRequest())
        return resp

    async def active_version(self) -> str:
        """The active policy version ("" before the first activation)."""
        return str((await self.governance()).active_policy_version)

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
                created_at=ts_to_datetime(k.created_at, "key.created_at"),
                revoked_at=optional_datetime(k, "revoked_at", "key.revoked_at"),
            )
            for k in a.keys
            if k.scheme in _SCHEMES
        ),
        created_at=ts_to_datetime(a.created_at, "approver.created_at"),
    )
