"""Errors of the Solana devnet. Each also subclasses the kind that decides its status; the JSON-RPC
layer (:mod:`.rpc`) maps them to Solana's error codes in one place."""

from __future__ import annotations

from typing import Any

from services.chain.errors import ChainError
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound


class FaucetRequestInvalid(ChainError, InvalidArgument):
    """A funding request names something that is not an address or not a positive amount."""


class RpcParamsInvalid(ChainError, InvalidArgument):
    """A JSON-RPC call's params are missing, of the wrong type or impossible (Solana's -32602)."""


class RpcMethodUnknown(ChainError, NotFound):
    """The devnet does not serve this JSON-RPC method (-32601)."""


class SignatureVerificationFailed(ChainError, FailedPrecondition):
    """A transaction's signature does not verify against its message (Solana's -32003)."""


class MinContextSlotNotReached(ChainError, FailedPrecondition):
    """The request asked for a slot the devnet has not reached (-32016)."""

    def __init__(self, message: str, *, context_slot: int) -> None:
        super().__init__(message, details={"contextSlot": context_slot})
        self.context_slot = context_slot


class PreflightFailed(ChainError, FailedPrecondition):
    """The transaction's simulation before broadcast failed (Solana's -32002, ``data.err`` says why).

    Args:
        message: ``Transaction simulation failed: <reason>``, as a cluster words it.
        simulation: The simulation result, shaped as ``simulateTransaction``'s ``value``.
    """

    def __init__(self, message: str, *, simulation: dict[str, Any]) -> None:
        super().__init__(message, details={"err": simulation.get("err")})
        self.simulation = simulation
