"""Domain types of the staking service that cross its API (no grpc, no database here)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.policy.domain import ApprovalGroup
from services.runtime.intent import Approval


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


@dataclass(frozen=True)
class DecisionRecord:
    """An approval or rejection the workflow accepted, as it reports it through ``RecordDecision``.

    ``reason`` is the approver's, with a rejection; ``quorum_met`` whether the approvals counted
    with this one meet the requirement.
    """

    intent_id: str
    approval: Approval
    reason: str = ""
    quorum_met: bool = False
