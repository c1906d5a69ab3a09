"""Domain types of the chain service, shared by every chain adapter (no grpc here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from services.runtime.intent import (
    Action,
    ClaimRewardsTarget,
    RestakeTarget,
    StakeTarget,
    UnstakeTarget,
    VoteTarget,
)

ChainTarget = StakeTarget | UnstakeTarget | RestakeTarget | ClaimRewardsTarget | VoteTarget


@dataclass(frozen=True)
class DecodedTransaction:
    """An unsigned transaction read back into the intent fields the signer compares.

    ``amount`` is what the intent moves (wei staked, unstaked; 0 for a consolidation,
    which moves the whole source balance); ``value`` is the ether the transaction sends
    (the deposit, or the request fee). ``nonce`` is the family's replay key. ``target`` uses
    the intent's own target types so the signer can compare it with ``==``. ``from_address``
    is empty when decoding bytes alone: an unsigned transaction does not name its sender, the
    signing key does.
    """

    chain: str
    action: Action
    from_address: str
    to_address: str
    value: int
    amount: int
    target: ChainTarget
    nonce: int
    #: The most the transaction can pay in network fees (base units).
    fee_ceiling: int
    signing_digest: bytes
    summary: str
    step: str


@dataclass(frozen=True)
class BuiltTransaction:
    unsigned_tx: bytes
    decoded: DecodedTransaction


@dataclass(frozen=True)
class BroadcastResult:
    tx_hash: str
    already_known: bool


class TxState(StrEnum):
    NOT_FOUND = "NOT_FOUND"
    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    FAILED = "FAILED"
    #: Never landed and never can: its recent blockhash expired (Solana). The step is rebuilt.
    EXPIRED = "EXPIRED"


@dataclass(frozen=True)
class ChainEvent:
    """One log of a mined transaction, decoded for the audit trail."""

    name: str
    contract: str
    log_index: int
    fields: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TransactionStatus:
    state: TxState
    confirmations: int = 0
    confirmations_required: int = 0
    block_number: int = 0
    failure_reason: str = ""
    events: tuple[ChainEvent, ...] = ()


@dataclass(frozen=True)
class SignedInfo:
    """What a chain adapter reads from signed bytes before broadcasting them."""

    tx_hash: str
    sender: str
    nonce: int


@dataclass(frozen=True)
class SeenTransaction:
    """A transaction found on chain at an account's nonce (what reconciliation reports)."""

    tx_hash: str
    block_number: int
    to_address: str
    value: int


@dataclass(frozen=True)
class NonceRelease:
    """What ``ReleaseNonce`` did with an intent's reservations on one chain."""

    #: Given back: the vault's next build takes the lowest of them.
    released: tuple[int, ...] = ()
    #: Kept: a signed transaction was sent with each (even if the node refused it).
    kept: tuple[int, ...] = ()


@dataclass(frozen=True)
class WaitStatus:
    """Where the chain is with a family's WAIT step (an unbonding, a cooldown epoch)."""

    #: The wait is over: what it waited for (the funds back in the vault) is on chain.
    done: bool
    #: When the chain says the wait ends; None when it cannot say.
    until: datetime | None
    #: In words, for the intent's timeline.
    detail: str
