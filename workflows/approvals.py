"""The approval machinery every approval-gated workflow shares (deterministic).

An :class:`ApprovalBook` holds what the update validators read. It is built in
``@workflow.init`` from the workflow input (pinned policy version, intent digest,
approver registry snapshot), so an approval sent right after start is judged on
complete state. Validators refuse, before anything reaches the history, an unknown
approver, the initiator, a duplicate, a bad signature, a revoked key, an approval
for another intent or version, or a late one. Whether the accepted approvals meet
the quorum is the policy's evidence check, the same function the signer runs.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from services.policy.domain import (
        ApprovalGroup,
        ApproverInfo,
        ApproverKeyInfo,
        Requirement,
        SignatureScheme,
    )
    from services.policy.evidence import EvidenceResult, check_approvals, verify_signature
    from services.runtime.intent import Approval, Decision
    from workflows.staking.types import ApprovalData, ApproverData, GroupData, IntentInput, PolicyOutcome

REFUSED = "ApprovalRefused"
#: Another decision of an approver who has decided: the staking service answers it from the record.
ALREADY_DECIDED = "ApprovalAlreadyDecided"
#: A decision from someone in none of the requirement's groups: who the caller is, not the intent's state.
OUTSIDE = "ApprovalOutsideRequirement"


def approval_from_data(a: ApprovalData) -> Approval:
    return Approval(
        approver_id=a.approver_id,
        key_id=a.key_id,
        decision=Decision(a.decision),
        intent_digest=bytes.fromhex(a.intent_digest_hex),
        policy_version=a.policy_version,
        expires_at=a.expires_at,
        signature=bytes.fromhex(a.signature_hex),
    )


def registry_from_data(approvers: list[ApproverData]) -> dict[str, ApproverInfo]:
    return {
        a.approver_id: ApproverInfo(
            approver_id=a.approver_id,
            display_name=a.display_name,
            groups=frozenset(a.groups),
            keys=tuple(
                ApproverKeyInfo(
                    key_id=k.key_id,
                    scheme=SignatureScheme(k.scheme),
                    public_key=bytes.fromhex(k.public_key_hex),
                    created_at=k.created_at,
                    revoked_at=k.revoked_at,
                )
                for k in a.keys
            ),
            created_at=a.created_at,
        )
        for a in approvers
    }


def requirement_from_outcome(outcome: PolicyOutcome, version: str) -> Requirement:
    return Requirement(
        groups=tuple(ApprovalGroup(g.name, g.threshold, frozenset(g.members)) for g in outcome.groups),
        expiry_seconds=outcome.expiry_seconds,
        policy_version=version,
        rule_id=outcome.rule_id,
        fee_cap=outcome.fee_cap,
    )


def groups_to_data(requirement: Requirement) -> list[GroupData]:
    return [GroupData(g.name, g.threshold, sorted(g.members)) for g in requirement.groups]


def _refuse(message: str) -> ApplicationError:
    return ApplicationError(message, type=REFUSED, non_retryable=True)


def outside_refusal(approver_id: str, requirement: Requirement) -> ApplicationError:
    groups = ", ".join(g.name for g in requirement.groups)
    return ApplicationError(
        f"{approver_id} is in none of the groups that decide on this intent ({groups})",
        type=OUTSIDE,
        non_retryable=True,
    )


class ApprovalBook:
    """Approvals received for one intent, and the rules for accepting more."""

    def __init__(self, inp: IntentInput) -> None:
        self.digest = bytes.fromhex(inp.digest_hex)
        self.policy_version = inp.policy_version
        self.initiator = inp.initiator
        self.submitted_at = inp.submitted_at
        #: Whether approvals are bounded by the approval window (histories recorded before the
        #: bound replay without it: see ``gated.APPROVAL_WINDOW_PATCH``).
        self.bound_window = True
        self.registry = registry_from_data(inp.approvers)
        self.received: list[ApprovalData] = []
        #: Accepted by a validator, not yet counted: waiting for the requirement or for its record.
        self.pending: dict[str, ApprovalData] = {}
        self.requirement: Requirement | None = None
        self.deadline: datetime | None = None
        self.open = True

    def set_requirement(self, requirement: Requirement, now: datetime) -> None:
        self.requirement = requirement
        self.deadline = now + timedelta(seconds=requirement.expiry_seconds)

    @property
    def approval_deadline(self) -> datetime | None:
        """The latest an approval may claim to count: the submission plus the rule's expiry,
        as the signer bounds it (the timer's ``deadline`` starts at evaluation, a little later)."""
        if self.requirement is None:
            return None
        return self.submitted_at + timedelta(seconds=self.requirement.expiry_seconds)

    def decided_by(self, approver_id: str) -> ApprovalData | None:
        """The decision of ``approver_id`` accepted so far (counted or pending), if any."""
        for r in self.received:
            if r.approver_id == approver_id:
                return r
        return self.pending.get(approver_id)

    def is_retry(self, a: ApprovalData) -> bool:
        """``a`` is a decision accepted before, byte for byte: a retry whose answer was lost."""
        given = self.decided_by(a.approver_id)
        return (
            given is not None
            and given.signature_hex == a.signature_hex
            and given.decision == a.decision
            and given.key_id == a.key_id
        )

    def in_requirement(self, approver_id: str) -> bool:
        """Whether ``approver_id`` is in one of the requirement's groups (True while it is unknown)."""
        if self.requirement is None:
            return True
        return any(approver_id in g.members for g in self.requirement.groups)

    def validate(self, a: ApprovalData, decision: str, now: datetime) -> None:
        """Raises ApplicationError (type ApprovalRefused, or ApprovalOutsideRequirement for someone
        in none of the requirement's groups) unless ``a`` may be accepted now.

        A decision accepted before (the same signature) is accepted again, so the handler
        answers the retry as it answered the first, whether or not the gate has closed since
        (validators never run on replay: no patch needed). Another decision of the same
        approver is refused.
        """
        if self.is_retry(a):
            return
        # First: an approver retrying a decision that was accepted (its answer lost with a killed
        # worker) hears that, whether or not the gate has closed since.
        if self.decided_by(a.approver_id) is not None:
            raise ApplicationError(
                f"{a.approver_id} has already decided on this intent",
                type=ALREADY_DECIDED,
                non_retryable=True,
            )
        if not self.open:
            raise _refuse("the intent no longer accepts approvals")
        if a.decision != decision:
            raise _refuse(f"expected a {decision} decision, got {a.decision}")
        if a.intent_digest_hex != self.digest.hex() or a.policy_version != self.policy_version:
            raise _refuse("the approval is for another intent or policy version")
        if a.approver_id == self.initiator:
            raise _refuse("the initiator cannot approve or reject their own intent")
        approver = self.registry.get(a.approver_id)
        if approver is None:
            raise _refuse(f"unknown approver {a.approver_id}")
        if self.requirement is not None and not self.in_requirement(a.approver_id):
            raise outside_refusal(a.approver_id, self.requirement)
        key = approver.key(a.key_id)
        if key is None:
            raise _refuse(f"key {a.key_id} is not registered to {a.approver_id}")
        if key.revoked_at is not None and key.revoked_at <= now:
            raise _refuse(f"key {a.key_id} of {a.approver_id} is revoked")
        if a.expires_at <= now:
            raise _refuse("the approval has expired")
        self.check_window(a)
        if self.deadline is not None and now >= self.deadline:
            raise _refuse("the approval window of the intent has closed")
        approval = approval_from_data(a)
        if not verify_signature(key, approval.message(), approval.signature):
            raise _refuse("the approval signature does not verify")

    def check_window(self, a: ApprovalData) -> None:
        """Refuses an approval that claims to count past the approval window (once it is known)."""
        limit = self.approval_deadline if self.bound_window else None
        if a.decision == "APPROVE" and limit is not None and a.expires_at > limit:
            raise _refuse(
                f"the approval claims to count after the intent's approval window ends ({limit:%FT%TZ})"
            )

    def add(self, a: ApprovalData) -> None:
        self.received.append(a)

    def evidence(self, now: datetime, *, extra: ApprovalData | None = None) -> EvidenceResult | None:
        """The received approvals judged against the requirement (with ``extra``, as if it counted too)."""
        if self.requirement is None:
            return None
        received = [*self.received, extra] if extra is not None else self.received
        return check_approvals(
            intent_digest=self.digest,
            approvals=[approval_from_data(a) for a in received],
            requirement=self.requirement,
            registry=self.registry,
            initiator=self.initiator,
            now=now,
            deadline=self.approval_deadline if self.bound_window else None,
        )

    def approvals(self) -> list[ApprovalData]:
        return list(self.received)


def decided(book: ApprovalBook, now: Callable[[], datetime]) -> bool:
    """True once the quorum is met or an authorised approver rejected."""
    ev = book.evidence(now())
    return ev is not None and (ev.met or ev.rejected)
