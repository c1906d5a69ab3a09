"""Errors of the audit trail. Each one is also one kind of ``services.runtime.errors``.

Messages never carry payload values: a refused payload names the offending key
path, not what was in it.
"""

from __future__ import annotations

from services.runtime.errors import (
    CustosError,
    FailedPrecondition,
    InvalidArgument,
    Unavailable,
)


class AuditError(CustosError):
    """Base of every error the audit trail raises on purpose."""


class SecretInPayload(AuditError, InvalidArgument):
    """The payload holds something that must never be recorded (a PIN, a key, a full signature)."""


class PayloadInvalid(AuditError, InvalidArgument):
    """The payload or a record field is malformed (not JSON-able, too large, empty action...)."""


class AuditUnavailable(AuditError, Unavailable):
    """The trail cannot be written now. Fail closed: the caller must not carry out its step."""


class NothingToCheckpoint(AuditError, FailedPrecondition):
    """A checkpoint was asked for an empty trail or a sequence past the head."""


class CheckpointSignerMissing(AuditError, FailedPrecondition):
    """This process holds no checkpoint key, so it cannot sign checkpoints."""


class ChainBroken(AuditError, FailedPrecondition):
    """The stored trail fails verification; nothing more is signed on top of it."""

    def __init__(self, message: str, *, first_bad_sequence: int | None) -> None:
        super().__init__(message, details={"first_bad_sequence": first_bad_sequence})
        self.first_bad_sequence = first_bad_sequence


class HeadNotExtended(ChainBroken):
    """The trail no longer holds the last checkpoint this installation signed (the HSM
    remembers it): checkpoints were dropped or replaced, records rewritten under it, or
    an old copy of the database restored. Nothing is signed until people look."""


class AuditTokenShared(AuditError, FailedPrecondition):
    """The audit service was given a token that also holds other keys (a vault's)."""


class HeadUnreadable(AuditError, FailedPrecondition):
    """The HSM's memory of the last checkpoint signed cannot be read; nothing is signed."""
