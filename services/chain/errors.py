"""Errors of the chain service. Each also subclasses the kind that decides its gRPC status."""

from __future__ import annotations

from services.families.errors import DepositDataInvalid, FamilyError, IntentInvalid, TransactionInvalid
from services.runtime.errors import (
    CustosError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)


class ChainError(CustosError):
    """Base of every error the chain service raises (with the families' errors, re-exported here)."""


class UnknownChain(ChainError, NotFound):
    """The chain name is not in the registry."""


class NodeUnavailable(ChainError, Unavailable):
    """The chain's node cannot be reached or answered with a transport error; retry later."""


class FeesAboveCap(ChainError, Unavailable):
    """Current network fees exceed the chain's configured caps; retry when they fall."""


class BroadcastRejected(ChainError, FailedPrecondition):
    """The node refused the signed transaction (e.g. a conflicting transaction holds the nonce)."""


class BlockhashExpired(BroadcastRejected):
    """The transaction's recent blockhash expired before it landed: it can never land. The step
    is rebuilt with a new blockhash (the family's one allowed replacement) and signed again."""


class NodeError(ChainError, FailedPrecondition):
    """The node answered a call with an error (e.g. gas estimation reverted)."""


class ReconcileRequestInvalid(ChainError, InvalidArgument):
    """A reconciliation request names an impossible value (e.g. an empty acknowledgement reason)."""


class AlertNotFound(ChainError, NotFound):
    """No reconciliation alert with that id."""


class AlertAlreadyAcknowledged(ChainError, FailedPrecondition):
    """The reconciliation alert was acknowledged before."""


class ReconcileNotConfigured(ChainError, FailedPrecondition):
    """This chain service runs without reconciliation (it has no signer to read records from)."""


class InsufficientFunds(ChainError, FailedPrecondition):
    """The vault cannot pay the transaction's value and maximum fee: the node would refuse it."""


__all__ = [
    "AlertAlreadyAcknowledged",
    "AlertNotFound",
    "BlockhashExpired",
    "BroadcastRejected",
    "ChainError",
    "DepositDataInvalid",
    "FamilyError",
    "FeesAboveCap",
    "InsufficientFunds",
    "IntentInvalid",
    "NodeError",
    "NodeUnavailable",
    "ReconcileNotConfigured",
    "ReconcileRequestInvalid",
    "TransactionInvalid",
    "UnknownChain",
]
