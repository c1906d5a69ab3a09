"""Governed changes between protobuf and the domain (used by the servicer, the client and the CLI)."""

from __future__ import annotations

from services.pb.custos.common.v1 import common_pb2
from services.pb.custos.policy.v1 import policy_pb2
from services.policy.domain import SignatureScheme
from services.policy.governance import (
    ActivatePolicy,
    AddApproverKey,
    Change,
    ChangeRequest,
    ChangeState,
    RegisterApprover,
    RevokeApproverKey,
    SetApproverGroups,
    TrustRoot,
    new_request,
)
from services.runtime.convert import datetime_to_ts, require_id, ts_to_datetime
from services.runtime.errors import InvalidArgument

_SCHEME_FROM_PB = {
    common_pb2.SIGNATURE_SCHEME_ED25519: SignatureScheme.ED25519,
    common_pb2.SIGNATURE_SCHEME_ECDSA_P256: SignatureScheme.ECDSA_P256,
}
SCHEME_TO_PB = {v: k for k, v in _SCHEME_FROM_PB.items()}
STATE_TO_PB = {
    ChangeState.PROPOSED: policy_pb2.CHANGE_STATE_PROPOSED,
    ChangeState.APPLIED: policy_pb2.CHANGE_STATE_APPLIED,
    ChangeState.REJECTED: policy_pb2.CHANGE_STATE_REJECTED,
    ChangeState.EXPIRED: policy_pb2.CHANGE_STATE_EXPIRED,
}
STATE_FROM_PB = {v: k for k, v in STATE_TO_PB.items()}


def scheme_from_pb(value: int) -> SignatureScheme:
    try:
        return _SCHEME_FROM_PB[value]  # type: ignore[index]
    except KeyError:
        raise InvalidArgument("scheme must be ED25519 or ECDSA_P256") from None


def change_from_pb(request: policy_pb2.ChangeRequest) -> ChangeRequest:
    """The domain request (validated and normalised); InvalidArgument when malformed."""
    which = request.WhichOneof("change")
    change: Change
    if which == "register_approver":
        r = request.register_approver
        change = RegisterApprover(
            r.approver_id, r.display_name, tuple(r.groups), scheme_from_pb(r.scheme), r.public_key
        )
    elif which == "add_approver_key":
        k = request.add_approver_key
        change = AddApproverKey(k.approver_id, scheme_from_pb(k.scheme), k.public_key)
    elif which == "set_approver_groups":
        g = request.set_approver_groups
        change = SetApproverGroups(g.approver_id, tuple(g.groups))
    elif which == "revoke_approver_key":
        v = request.revoke_approver_key
        change = RevokeApproverKey(v.approver_id, v.key_id, v.reason)
    elif which == "activate_policy":
        a = request.activate_policy
        change = ActivatePolicy(a.version, a.parent_version)
    else:
        raise InvalidArgument("a change request names one change")
    if not request.HasField("expires_at"):
        raise InvalidArgument("expires_at is required")
    return new_request(
        change,
        change_id=require_id(request.change_id, "change_id"),
        proposer=require_id(request.proposer, "proposer"),
        expires_at=ts_to_datetime(request.expires_at, "request.expires_at"),
    )


def change_to_pb(request: ChangeRequest) -> policy_pb2.ChangeRequest:
    out = policy_pb2.ChangeRequest(
        change_id=request.change_id, proposer=request.proposer, expires_at=datetime_to_ts(request.expires_at)
    )
    c = request.change
    if isinstance(c, RegisterApprover):
        out.register_approver.CopyFrom(
            policy_pb2.RegisterApproverChange(
                approver_id=c.approver_id,
                display_name=c.display_name,
                groups=list(c.groups),
                scheme=SCHEME_TO_PB[c.scheme],
                public_key=c.public_key,
            )
        )
    elif isinstance(c, AddApproverKey):
        out.add_approver_key.CopyFrom(
            policy_pb2.AddApproverKeyChange(
                approver_id=c.approver_id, scheme=SCHEME_TO_PB[c.scheme], public_key=c.public_key
            )
        )
    elif isinstance(c, SetApproverGroups):
        out.set_approver_groups.CopyFrom(
            policy_pb2.SetApproverGroupsChange(approver_id=c.approver_id, groups=list(c.groups))
        )
    elif isinstance(c, RevokeApproverKey):
        out.revoke_approver_key.CopyFrom(
            policy_pb2.RevokeApproverKeyChange(approver_id=c.approver_id, key_id=c.key_id, reason=c.reason)
        )
    else:
        out.activate_policy.CopyFrom(
            policy_pb2.ActivatePolicyChange(version=c.version, parent_version=c.parent_version)
        )
    return out


def trust_to_pb(trust: TrustRoot) -> list[policy_pb2.TrustedAdmin]:
    return [
        policy_pb2.TrustedAdmin(
            admin_id=a.admin_id,
            key_id=a.key_id,
            scheme=SCHEME_TO_PB[a.scheme],
            public_key=a.public_key,
            until_entry=a.until_entry or 0,
        )
        for a in trust.admins
    ]
