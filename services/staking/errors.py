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


class WorkflowUnavailable(StakingError, Unavailable):
    """Temporal could not be reached; retry with the same idempotency key."""
