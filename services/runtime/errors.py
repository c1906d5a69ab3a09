"""One error hierarchy for every custos component.

Each service defines its own base (``PolicyError``, ``SignerError``...) that
subclasses :class:`CustosError`, and each concrete error also subclasses one of
the *kinds* below. The kind alone decides the gRPC status (``runtime.grpc_errors``
holds that mapping, in one place), so service logic never imports grpc.
"""

from __future__ import annotations

from typing import Any


class CustosError(Exception):
    """Base of every error custos raises on purpose.

    Args:
        message: One line a person can act on. Never contains secrets.
        details: Extra machine-readable fields (safe to log and audit).
    """

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = dict(details or {})

    def __str__(self) -> str:
        return self.message


class InvalidArgument(CustosError, ValueError):
    """The request is malformed or names impossible values."""


class NotFound(CustosError, LookupError):
    """The named object does not exist."""


class AlreadyExists(CustosError):
    """An object with that identity exists and differs from the request."""


class PermissionDenied(CustosError, PermissionError):
    """The caller is authenticated but not allowed to do this."""


class Unauthenticated(CustosError):
    """The caller presented no acceptable identity."""


class FailedPrecondition(CustosError):
    """The request is well formed but the system's state forbids it now."""


class Unavailable(CustosError):
    """A dependency (HSM, node, database, audit trail) cannot be reached; retry later."""


class Internal(CustosError):
    """An invariant broke; a bug, not the caller's fault."""
