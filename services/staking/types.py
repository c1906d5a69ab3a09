"""Domain types of the staking service that cross its API (no grpc, no database here)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.policy.domain import ApprovalGroup


@dataclass(frozen=True)
class Transition:
    """One state transition of an intent, as the workflow reports it through ``RecordTransition``.

    ``state`` is an intent state name (``"SIGNING"``); ``sequence`` counts from 1 (SUBMITTED, which
    ``SubmitIntent`` records) without gaps. ``requirement`` and ``approval_deadline`` come with
    AWAITING_APPROVALS, ``tx_hash`` once the intent has a transaction.
    """

    intent_id: str
    sequence: int
    state: str
    detail: str = ""
    tx_hash: str = ""
    requirement: tuple[ApprovalGroup, ...] = ()
    approval_deadline: datetime | None = None
