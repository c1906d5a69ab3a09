"""Errors of the policy service. Each concrete error also subclasses one kind
from :mod:`services.runtime.errors`, which alone decides the gRPC status."""

from __future__ import annotations

from services.runtime.errors import (
    AlreadyExists,
    CustosError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)


class PolicyError(CustosError):
    """Base of every error the policy service raises on purpose."""


class PolicyDocumentInvalid(PolicyError, InvalidArgument):
    """A policy document does not parse or validate; the message names the field."""


class PolicyNotFound(PolicyError, NotFound):
    """No policy version with that hash, or no active version yet."""


class PolicyStateConflict(PolicyError, FailedPrecondition):
    """The version is not in a state that allows the request (e.g. activating a superseded one)."""


class QuorumNotMet(PolicyError, FailedPrecondition):
    """The approvals given do not meet the admin quorum of the current policy."""


class ApproverNotFound(PolicyError, NotFound):
    """No approver (or no key of that approver) with that id."""


class ApproverExists(PolicyError, AlreadyExists):
    """An approver or key with that identity is already registered."""


class ApproverInvalid(PolicyError, InvalidArgument):
    """An approver registration or key is malformed (bad id, scheme or public key)."""


class VelocityExceeded(PolicyError, FailedPrecondition):
    """Reserving this amount would exceed a rolling-window velocity limit."""


class VelocityConflict(PolicyError, FailedPrecondition):
    """The intent already holds a different (or released) velocity reservation."""


class PolicyDenies(PolicyError, FailedPrecondition):
    """The policy version denies the intent, so no approvals can make it signable."""


class UnknownChain(PolicyError, FailedPrecondition):
    """The intent's chain is not in the chain registry the policy was given, or its family is not
    built in: the facts rules look at are unknown, so the policy denies it."""


# --- governed changes --------------------------------------------------------------------------


class ChangeInvalid(PolicyError, InvalidArgument):
    """A governed change is malformed, or does not apply to the registry as it is."""


class ChangeNotFound(PolicyError, NotFound):
    """No governed change with that id."""


class ChangeStateConflict(PolicyError, FailedPrecondition):
    """The change is no longer open (applied, rejected or expired), or conflicts with the log."""


class ChangeRefused(PolicyError, PermissionDenied):
    """A signature on a change is not a valid one of a pinned admin, or the caller is not its signer."""


class GovernanceInvalid(PolicyError, FailedPrecondition):
    """The governance log does not verify against the trust root: it was altered or forged."""


class TrustRootInvalid(PolicyError, InvalidArgument):
    """The trust file (pinned admin keys and quorum) is malformed or unmeetable."""
