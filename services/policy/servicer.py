"""PolicyService gRPC servicer: proto <-> domain, nothing else."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import yaml

from services.pb.custos.common.v1 import common_pb2
from services.pb.custos.policy.v1 import policy_pb2, policy_pb2_grpc
from services.policy.anchoring import AnchoredGovernance, LogAnchor
from services.policy.changes import ChangeView, Governance
from services.policy.convert import (
    SCHEME_TO_PB,
    STATE_FROM_PB,
    STATE_TO_PB,
    change_from_pb,
    change_to_pb,
    trust_to_pb,
)
from services.policy.domain import ApproverInfo, Outcome, Requirement
from services.policy.engine import Decision
from services.policy.governance import describe
from services.policy.models import PolicyVersionRow
from services.policy.service import PolicyService
from services.runtime.auth import current_principal
from services.runtime.convert import (
    approval_from_pb,
    approval_to_pb,
    bounded_int,
    datetime_to_ts,
    optional_datetime,
    require_id,
    spec_from_pb,
    ts_to_datetime,
)
from services.runtime.errors import FailedPrecondition, InvalidArgument

_ADMIN = frozenset({"policy-admin"})
_PEOPLE = frozenset({"policy-admin", "compliance"})
#: Far deeper than a policy nests (rules, their conditions, a list in one: four or five).
MAX_DOCUMENT_DEPTH = 32
_WORKER = frozenset({"svc:worker"})

_STATUS_TO_PB = {
    "PROPOSED": policy_pb2.POLICY_STATUS_PROPOSED,
    "ACTIVE": policy_pb2.POLICY_STATUS_ACTIVE,
    "SUPERSEDED": policy_pb2.POLICY_STATUS_SUPERSEDED,
    "REJECTED": policy_pb2.POLICY_STATUS_REJECTED,
}


def requirement_to_pb(r: Requirement) -> common_pb2.ApprovalRequirement:
    return common_pb2.ApprovalRequirement(
        groups=[
            common_pb2.ApprovalGroup(name=g.name, threshold=g.threshold, members=sorted(g.members))
            for g in r.groups
        ],
        expiry_seconds=r.expiry_seconds,
        policy_version=r.policy_version,
        rule_id=r.rule_id,
    )


def decision_to_pb(d: Decision | None) -> policy_pb2.PolicyDecision:
    if d is None:
        return policy_pb2.PolicyDecision(outcome=policy_pb2.OUTCOME_DENY, reasons=["no active policy"])
    out = policy_pb2.PolicyDecision(
        outcome=policy_pb2.OUTCOME_ALLOW if d.outcome is Outcome.ALLOW else policy_pb2.OUTCOME_DENY,
        reasons=list(d.reasons),
        policy_version=d.policy_version,
        rule_id=d.rule_id,
    )
    if d.requirement is not None:
        out.requirement.CopyFrom(requirement_to_pb(d.requirement))
    return out


def version_to_pb(row: PolicyVersionRow) -> policy_pb2.PolicyVersion:
    out = policy_pb2.PolicyVersion(
        version=row.version,
        document=row.document,
        status=_STATUS_TO_PB[row.status],
        description=row.description,
        proposed_by=row.proposed_by,
        created_at=datetime_to_ts(row.created_at),
        parent_version=row.parent_version or "",
    )
    if row.activated_at is not None:
        out.activated_at.CopyFrom(datetime_to_ts(row.activated_at))
    return out


def approver_to_pb(a: ApproverInfo) -> policy_pb2.Approver:
    keys = []
    for k in a.keys:
        key = policy_pb2.ApproverKey(
            key_id=k.key_id,
            scheme=SCHEME_TO_PB[k.scheme],
            public_key=k.public_key,
            created_at=datetime_to_ts(k.created_at),
        )
        if k.revoked_at is not None:
            key.revoked_at.CopyFrom(datetime_to_ts(k.revoked_at))
        keys.append(key)
    return policy_pb2.Approver(
        approver_id=a.approver_id,
        display_name=a.display_name,
        groups=sorted(a.groups),
        keys=keys,
        created_at=datetime_to_ts(a.created_at),
    )


def change_view_to_pb(v: ChangeView) -> policy_pb2.Change:
    out = policy_pb2.Change(
        request=change_to_pb(v.request),
        digest=v.digest,
        state=STATE_TO_PB[v.state],
        signatures=[approval_to_pb(a) for a in v.signatures],
        missing=v.judgement.missing,
        reason=v.reason,
        created_at=datetime_to_ts(v.created_at),
        entry_sequence=v.entry_seq or 0,
        summary=describe(v.request),
        anchored=v.anchored,
        signer_head_sequence=v.signer_head,
        anchor_error=v.anchor_error,
    )
    if v.closed_at is not None:
        out.closed_at.CopyFrom(datetime_to_ts(v.closed_at))
    return out


def log_anchor_to_pb(a: LogAnchor) -> policy_pb2.AnchorLogResponse:
    return policy_pb2.AnchorLogResponse(
        head_sequence=a.head.seq,
        head_hash=a.head.hash,
        anchored=a.anchored,
        signer_head_sequence=a.signer_head,
        error=a.error,
    )


def shallow_document(text: str) -> None:
    """Refuses a document nested deeper than :data:`MAX_DOCUMENT_DEPTH` before it is parsed.

    PyYAML composes nodes recursively: a document nested a thousand levels deep would end
    in a RecursionError (INTERNAL), after seconds of work. Its event stream is iterative,
    so the depth is counted there, and counting stops at the first level too many.
    """
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
                depth += 1
                if depth > MAX_DOCUMENT_DEPTH:
                    raise InvalidArgument(f"document: nested deeper than {MAX_DOCUMENT_DEPTH} levels")
            elif isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
                depth -= 1
    except yaml.YAMLError:
        return  # not YAML at all: the document's own parser says where


def _offset(token: str) -> int:
    if not token:
        return 0
    if not token.isdigit() or len(token) > 9:
        raise InvalidArgument("page_token is not one this service issued")
    return int(token)


def _next(offset: int, got: int, page_size: int) -> str:
    size = min(page_size or 50, 500)
    return str(offset + got) if got == size else ""


class PolicyServicer(policy_pb2_grpc.PolicyServiceServicer):
    """Database work runs in a thread so the event loop keeps serving."""

    ROLES: ClassVar[dict[str, frozenset[str]]] = {
        "EvaluateIntent": _WORKER,
        # the staking service pins the active version on each intent it records
        "GetPolicy": _ADMIN | {"svc:staking"},
        "ListPolicyVersions": _ADMIN,
        "ProposePolicy": _ADMIN,
        "SimulatePolicy": _ADMIN,
        # the staking service refuses, before the workflow sees it, a key revoked now
        "GetApprover": frozenset({"svc:staking"}),
        # the staking service hands the registry to the workflow's approval validators
        "ListApprovers": frozenset({"svc:staking"}),
        # Governed changes: admins sign them with their own keys (custos admin); compliance reads
        # them and verifies the log offline against its own copy of the trust file.
        "ProposeChange": _ADMIN,
        "DecideChange": _ADMIN,
        "GetChange": _PEOPLE,
        "ListChanges": _PEOPLE,
        "GetGovernance": _PEOPLE,
        "ListGovernanceEntries": _PEOPLE,
        # an admin has the signer anchor what was applied while it could not be reached
        "AnchorLog": _ADMIN,
        # The worker counts an intent once its approvals are in, and releases it when no funds moved.
        "ReserveVelocity": _WORKER,
        "ReleaseVelocity": _WORKER,
    }

    def __init__(self, service: PolicyService, governance: AnchoredGovernance | Governance | None) -> None:
        """A ``Governance`` alone is served with no signer to anchor its changes at."""
        self._svc = service
        self._gov = AnchoredGovernance(governance, None) if isinstance(governance, Governance) else governance

    def _governance(self) -> AnchoredGovernance:
        if self._gov is None:
            raise FailedPrecondition(
                "this policy service has no trust root (set trust_file): governed changes are unavailable"
            )
        return self._gov

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def EvaluateIntent(
        self, request: policy_pb2.EvaluateIntentRequest, context: Any
    ) -> policy_pb2.EvaluateIntentResponse:
        spec = spec_from_pb(request.spec)
        initiator = require_id(request.initiator, "initiator")
        intent_id = require_id(request.intent_id, "intent_id") if request.intent_id else ""
        at = optional_datetime(request, "at", "at")
        decision, approvers = await self._run(
            self._svc.evaluate, spec, initiator, intent_id=intent_id, version=request.policy_version, at=at
        )
        return policy_pb2.EvaluateIntentResponse(
            decision=decision_to_pb(decision), approvers=[approver_to_pb(a) for a in approvers]
        )

    async def ReserveVelocity(
        self, request: policy_pb2.ReserveVelocityRequest, context: Any
    ) -> policy_pb2.ReserveVelocityResponse:
        spec = spec_from_pb(request.spec)
        initiator = require_id(request.initiator, "initiator")
        version = require_id(request.policy_version, "policy_version")
        r = await self._run(self._svc.reserve_velocity, request.intent_id, version, spec, initiator)
        if r is None:
            return policy_pb2.ReserveVelocityResponse(reserved=False)
        return policy_pb2.ReserveVelocityResponse(
            reserved=True,
            vault_id=r.vault_id,
            amount=str(r.amount),
            reserved_at=datetime_to_ts(r.reserved_at),
        )

    async def ReleaseVelocity(
        self, request: policy_pb2.ReleaseVelocityRequest, context: Any
    ) -> policy_pb2.ReleaseVelocityResponse:
        released = await self._run(self._svc.release_velocity, request.intent_id, request.reason)
        return policy_pb2.ReleaseVelocityResponse(released=released)

    async def GetPolicy(
        self, request: policy_pb2.GetPolicyRequest, context: Any
    ) -> policy_pb2.GetPolicyResponse:
        row = await self._run(self._svc.get_version, request.version)
        return policy_pb2.GetPolicyResponse(policy=version_to_pb(row))

    async def ListPolicyVersions(
        self, request: policy_pb2.ListPolicyVersionsRequest, context: Any
    ) -> policy_pb2.ListPolicyVersionsResponse:
        offset = _offset(request.page_token)
        rows = await self._run(self._svc.list_versions, page_size=request.page_size, offset=offset)
        return policy_pb2.ListPolicyVersionsResponse(
            versions=[version_to_pb(r) for r in rows],
            next_page_token=_next(offset, len(rows), request.page_size),
        )

    async def ProposePolicy(
        self, request: policy_pb2.ProposePolicyRequest, context: Any
    ) -> policy_pb2.ProposePolicyResponse:
        by = current_principal().identity
        await self._run(shallow_document, request.document)
        row = await self._run(
            self._svc.propose, request.document, description=request.description, proposed_by=by
        )
        return policy_pb2.ProposePolicyResponse(policy=version_to_pb(row))

    async def SimulatePolicy(
        self, request: policy_pb2.SimulatePolicyRequest, context: Any
    ) -> policy_pb2.SimulatePolicyResponse:
        proposal = request.WhichOneof("proposal")
        subject = request.WhichOneof("subject")
        if proposal is None:
            raise InvalidArgument("give a proposal: a stored version or a document")
        if subject is None:
            raise InvalidArgument("give a subject: an intent or a recorded time range")
        kwargs: dict[str, Any] = (
            {"version": request.version} if proposal == "version" else {"document": request.document}
        )
        if proposal == "document":
            await self._run(shallow_document, request.document)
        if subject == "intent":
            i = request.intent
            kwargs["intent"] = (
                spec_from_pb(i.spec),
                require_id(i.initiator, "intent.initiator"),
                optional_datetime(i, "at", "intent.at"),
            )
        else:
            r = request.recorded
            if not r.HasField("start") or not r.HasField("end"):
                raise InvalidArgument("recorded needs start and end")
            kwargs["recorded"] = (
                ts_to_datetime(r.start, "recorded.start"),
                ts_to_datetime(r.end, "recorded.end"),
            )
        results = await self._run(self._svc.simulate, **kwargs)
        return policy_pb2.SimulatePolicyResponse(
            results=[
                policy_pb2.SimulationResult(
                    intent_id=x.intent_id,
                    current=decision_to_pb(x.current),
                    proposed=decision_to_pb(x.proposed),
                    changed=x.changed,
                )
                for x in results
            ],
            changed_count=sum(1 for x in results if x.changed),
        )

    async def GetApprover(
        self, request: policy_pb2.GetApproverRequest, context: Any
    ) -> policy_pb2.GetApproverResponse:
        info = await self._run(self._svc.get_approver, require_id(request.approver_id, "approver_id"))
        return policy_pb2.GetApproverResponse(approver=approver_to_pb(info))

    async def ListApprovers(
        self, request: policy_pb2.ListApproversRequest, context: Any
    ) -> policy_pb2.ListApproversResponse:
        offset = _offset(request.page_token)
        infos = await self._run(
            self._svc.list_approvers, group=request.group, page_size=request.page_size, offset=offset
        )
        return policy_pb2.ListApproversResponse(
            approvers=[approver_to_pb(a) for a in infos],
            next_page_token=_next(offset, len(infos), request.page_size),
        )

    async def ProposeChange(
        self, request: policy_pb2.ProposeChangeRequest, context: Any
    ) -> policy_pb2.ProposeChangeResponse:
        if not request.HasField("request") or not request.HasField("approval"):
            raise InvalidArgument("request and the proposer's approval are required")
        change = change_from_pb(request.request)
        approval = approval_from_pb(request.approval)
        caller = current_principal().identity
        view = await self._governance().propose(change, approval, caller=caller)
        return policy_pb2.ProposeChangeResponse(change=change_view_to_pb(view))

    async def DecideChange(
        self, request: policy_pb2.DecideChangeRequest, context: Any
    ) -> policy_pb2.DecideChangeResponse:
        if not request.HasField("approval"):
            raise InvalidArgument("approval is required")
        change_id = require_id(request.change_id, "change_id")
        approval = approval_from_pb(request.approval)
        caller = current_principal().identity
        view = await self._governance().decide(change_id, approval, caller=caller)
        return policy_pb2.DecideChangeResponse(change=change_view_to_pb(view))

    async def GetChange(
        self, request: policy_pb2.GetChangeRequest, context: Any
    ) -> policy_pb2.GetChangeResponse:
        view = await self._governance().get(require_id(request.change_id, "change_id"))
        return policy_pb2.GetChangeResponse(change=change_view_to_pb(view))

    async def ListChanges(
        self, request: policy_pb2.ListChangesRequest, context: Any
    ) -> policy_pb2.ListChangesResponse:
        offset = _offset(request.page_token)
        state = STATE_FROM_PB.get(request.state) if request.state else None
        if request.state and state is None:
            raise InvalidArgument("state must be a ChangeState")
        views = await self._governance().list_changes(state=state, page_size=request.page_size, offset=offset)
        return policy_pb2.ListChangesResponse(
            changes=[change_view_to_pb(v) for v in views],
            next_page_token=_next(offset, len(views), request.page_size),
        )

    async def GetGovernance(
        self, request: policy_pb2.GetGovernanceRequest, context: Any
    ) -> policy_pb2.GetGovernanceResponse:
        gov = self._governance()
        view = await self._run(gov.governance.current)
        return policy_pb2.GetGovernanceResponse(
            admins=trust_to_pb(gov.trust),
            quorum=gov.trust.quorum,
            fingerprint=gov.trust.fingerprint(),
            head_sequence=view.head_seq,
            head_hash=view.head_hash,
            active_policy_version=view.active_policy,
        )

    async def ListGovernanceEntries(
        self, request: policy_pb2.ListGovernanceEntriesRequest, context: Any
    ) -> policy_pb2.ListGovernanceEntriesResponse:
        rows = await self._run(
            self._governance().governance.entries,
            after=bounded_int(request.after_sequence, "after_sequence"),
            limit=request.page_size,
        )
        return policy_pb2.ListGovernanceEntriesResponse(
            entries=[
                policy_pb2.GovernanceEntry(sequence=seq, hash=h, canonical=text) for seq, h, text in rows
            ]
        )

    async def AnchorLog(
        self, request: policy_pb2.AnchorLogRequest, context: Any
    ) -> policy_pb2.AnchorLogResponse:
        anchored = await self._governance().anchor_log(caller=current_principal().identity)
        return log_anchor_to_pb(anchored)
