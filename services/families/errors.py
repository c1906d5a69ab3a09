"""Errors a chain family raises. Each also subclasses the kind that decides its gRPC status.

The chain service re-exports them as its own; the signer turns them into its refusals
(a transaction that is not the approved intent is a ``TransactionMismatch`` there).
"""

from __future__ import annotations

from services.runtime.errors import CustosError, FailedPrecondition, InvalidArgument, NotFound


class FamilyError(CustosError):
    """Base of every error a chain family raises."""


class UnknownFamily(FamilyError, NotFound):
    """No chain family of that name is built in."""


class IntentInvalid(FamilyError, InvalidArgument):
    """The intent cannot be carried out on this chain as written (shape, amount, target)."""


class DepositDataInvalid(IntentInvalid):
    """ETH deposit data failed verification: signature, root, credentials, pubkey or amount."""


class AddressInvalid(IntentInvalid):
    """An address or validator id is not one of this family's spellings."""


class TransactionInvalid(FamilyError, InvalidArgument):
    """Transaction bytes that custos did not build, or that do not decode strictly."""


class TransactionMismatch(FamilyError, FailedPrecondition):
    """The transaction decodes, but is not what the intent approved (or sends more than it may)."""


class FeeAboveCap(FamilyError, FailedPrecondition):
    """The transaction may pay more in network fees than the chain's cap."""
