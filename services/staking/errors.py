"""Errors of the staking service."""

from __future__ import annotations

from services.runtime.errors import (
    AlreadyExists,
    CustosError,
    FailedPrecondition,
    NotFound,
    PermissionDenied,
    Unavailable,
)


class StakingError(CustosError):
    """Base of the staking service's errors."""


class IntentNotFound(StakingError, NotFound):
    """No intent has that id."""


class IdempotencyConflict(StakingError, AlreadyExists):
    """The idempotency key was used before for a different request."""


class ApprovalRefused(StakingError, FailedPrecondition):
    """The workflow's validator refused an approval, rejection or cancellation."""


class NotYourIntent(StakingError, PermissionDenied):
    """The caller may not act on this intent (or sign as this approver)."""


class SelfApproval(StakingError, PermissionDenied):
    """The intent's initiator tried to approve or reject it.

    Separation of duties is about who the caller is, not about the intent's state,
    so this is a refusal of the caller (PERMISSION_DENIED), unlike the validator's
    other refusals (expired, wrong digest, already decided), which the caller can fix.
    """


class NotARequiredApprover(StakingError, PermissionDenied):
    """The approver is in none of the groups the intent's requirement names: their decision
    would never count, so it is refused (and audited) rather than listed beside those that do."""


class ApprovalKeyRefused(StakingError, FailedPrecondition):
    """The approval is signed with a key the current registry does not hold for the approver,
    or holds revoked: refused before it reaches the workflow, whose registry is the one pinned
    at submission. Like the validator's refusals, one the caller fixes (with a valid key)."""


class WorkflowUnavailable(StakingError, Unavailable):
    """Temporal could not be reached; retry with the same idempotency key."""
