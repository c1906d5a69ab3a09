"""Errors of the signer. Each one is also one kind of ``services.runtime.errors``.

Messages never carry a PIN, key material or a signature: they are logged and
audited as they are.
"""

from __future__ import annotations

from services.runtime.errors import (
    AlreadyExists,
    CustosError,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)


class SignerError(CustosError):
    """Base of every error the signer raises on purpose."""


# --- HSM -------------------------------------------------------------------------------------


class HsmUnavailable(SignerError, Unavailable):
    """The PKCS#11 module, token or session cannot be used right now."""


class HsmLoginFailed(SignerError, Unavailable):
    """The token refused the configured PIN (wrong, locked or expired)."""


class HsmTokenShared(SignerError, FailedPrecondition):
    """The signer's token holds the audit checkpoint key: each service needs a token of its own."""


class HsmKeyNotFound(SignerError, NotFound):
    """No key with that label or id on the token."""


class HsmOperationFailed(SignerError, Internal):
    """The HSM returned an error for an operation that should have worked."""


# --- keys ------------------------------------------------------------------------------------


class KeyNotFound(SignerError, NotFound):
    """No key registered with that key id or vault id."""


class KeyExists(SignerError, AlreadyExists):
    """A key with that label or for that vault and purpose already exists."""


class UnsupportedAlgorithm(SignerError, InvalidArgument):
    """The algorithm or chain is not one the signer handles."""


class BadSignRequest(SignerError, InvalidArgument):
    """The sign request is malformed (missing intent id, step, transaction...)."""


# --- refusals of Sign ------------------------------------------------------------------------


class ApprovalsInsufficient(SignerError, PermissionDenied):
    """The approvals are missing, invalid, or do not meet the policy's requirement."""


class TransactionMismatch(SignerError, FailedPrecondition):
    """The unsigned transaction is not exactly the approved intent."""


class ConflictingSignature(SignerError, FailedPrecondition):
    """This intent step was already signed over a different payload."""


class NonceReused(SignerError, FailedPrecondition):
    """This (key, chain, nonce) was already signed for another payload."""


class AuditUnavailable(SignerError, Unavailable):
    """The audit entry could not be written, so nothing was signed."""


class InvalidPublicKey(SignerError, InvalidArgument):
    """A public key has the wrong length, encoding, or is not on its curve."""


class FeeAboveCap(SignerError, FailedPrecondition):
    """The transaction may pay more in fees than the policy's fee cap allows."""


class PolicyNotActive(SignerError, PermissionDenied):
    """The approvals name a policy version that the admin quorum has not made the active one."""


class PolicyRefuses(SignerError, FailedPrecondition):
    """The active policy, evaluated by the signer now, denies the intent (a limit, a window, a list)."""


class VelocityExceeded(SignerError, FailedPrecondition):
    """What the signer has signed for the vault in the window leaves no room for this amount."""


class GovernanceUnverified(SignerError, FailedPrecondition):
    """The governance log does not verify against the signer's trust root, or was cut short."""


class GovernanceAnchorMismatch(SignerError, FailedPrecondition):
    """The governance log does not hold the entry the policy service anchored: it is missing, or
    another entry stands at its sequence. The signer signs nothing until the log holds it."""


class NoActivePolicy(SignerError, FailedPrecondition):
    """The admin quorum has not activated any policy version yet."""


class KeyBindingInvalid(SignerError, FailedPrecondition):
    """The HSM key registered for a vault is not bound to that vault on the token."""


class BadListRequest(SignerError, InvalidArgument):
    """A listing names an impossible filter or a page token this signer did not issue."""


class LedgerUnverified(SignerError, FailedPrecondition):
    """The signing records do not verify (removed, altered, or short of the head the HSM anchored):
    the signer signs nothing until they do."""
