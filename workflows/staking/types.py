"""Workflow and activity inputs and outputs: one dataclass in, one out (JSON-safe).

Bytes travel as hex strings and specs as their canonical plain form, so the
Temporal history is readable and the converter never guesses a union member.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# Intent states, as in custos.staking.v1.IntentState (without the prefix).
SUBMITTED = "SUBMITTED"
AWAITING_POLICY = "AWAITING_POLICY"
AWAITING_APPROVALS = "AWAITING_APPROVALS"
APPROVED = "APPROVED"
SIGNING = "SIGNING"
BROADCAST = "BROADCAST"
UNBONDING = "UNBONDING"
CONFIRMED = "CONFIRMED"
DENIED = "DENIED"
REJECTED = "REJECTED"
EXPIRED = "EXPIRED"
CANCELLED = "CANCELLED"
FAILED = "FAILED"
TERMINAL = frozenset({CONFIRMED, DENIED, REJECTED, EXPIRED, CANCELLED, FAILED})


@dataclass
class PlannedStep:
    """One step of an intent, as its chain's family defines it (``services.families.base.Step``)."""

    name: str
    #: "SIGN" (build, sign once, broadcast, confirm) or "WAIT" (a durable wait for the chain).
    kind: str
    waits_for: str = ""


@dataclass
class ApproverKeyData:
    key_id: str
    scheme: str
    public_key_hex: str
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass
class ApproverData:
    approver_id: str
    display_name: str
    groups: list[str]
    keys: list[ApproverKeyData]
    created_at: datetime


@dataclass
class ApprovalData:
    approver_id: str
    key_id: str
    decision: str
    intent_digest_hex: str
    policy_version: str
    expires_at: datetime
    signature_hex: str
    #: Why, with a rejection (not signed: the caller's mTLS identity is the approver's).
    reason: str = ""


@dataclass
class DecisionInput:
    """An approval or rejection the workflow accepted, for the staking service to record."""

    intent_id: str
    approval: ApprovalData
    quorum_met: bool


@dataclass
class GroupData:
    name: str
    threshold: int
    members: list[str]


@dataclass
class IntentInput:
    """What a staking (or policy-change) workflow starts from.

    The policy version is pinned at submission and the digest computed under it, so
    the approval validators can check approvals from the very first update.
    """

    intent_id: str
    spec: dict[str, Any]
    initiator: str
    policy_version: str
    digest_hex: str
    approvers: list[ApproverData]
    submitted_at: datetime


@dataclass
class EvaluateInput:
    intent_id: str
    spec: dict[str, Any]
    initiator: str
    policy_version: str


@dataclass
class PolicyOutcome:
    allowed: bool
    reasons: list[str]
    groups: list[GroupData]
    expiry_seconds: int
    rule_id: str
    fee_cap: int | None = None


@dataclass
class TransitionInput:
    intent_id: str
    sequence: int
    state: str
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepInput:
    """Everything the build, sign and broadcast steps need; each is idempotent per (intent, step)."""

    intent_id: str
    step: str
    spec: dict[str, Any]
    initiator: str
    policy_version: str
    approvals: list[ApprovalData]
    unsigned_tx_hex: str = ""
    signed_tx_hex: str = ""
    tx_hash: str = ""
    #: When the intent was submitted (bound into the digest the approvals sign); None in
    #: histories recorded before approvals were bound to their intent.
    submitted_at: datetime | None = None


@dataclass
class ReleaseInput:
    """Stops counting an intent against velocity limits: it ended without moving funds."""

    intent_id: str
    reason: str


@dataclass
class NonceReleaseInput:
    """Gives back the nonces an intent reserved on its chain: it failed before signing anything."""

    intent_id: str
    chain: str
    reason: str


@dataclass
class WaitInput:
    """A family's WAIT step of an intent: the chain's wait after the step's transaction ``tx_hash``."""

    intent_id: str
    chain: str
    vault_id: str
    step: str
    tx_hash: str


@dataclass
class WaitResult:
    """Where the chain is with a wait: ``until`` is when it says the wait ends (None: it cannot say)."""

    done: bool
    until: datetime | None
    detail: str


@dataclass
class BuildResult:
    unsigned_tx_hex: str
    summary: str
    nonce: int


@dataclass
class SignResult:
    signed_tx_hex: str
    tx_hash: str
    replayed: bool


@dataclass
class ConfirmResult:
    confirmed: bool
    failed: bool
    confirmations: int
    reason: str
    events: list[dict[str, Any]]
    #: The transaction can never land (its recent blockhash expired before it did): build it again.
    expired: bool = False


@dataclass
class ApprovalAck:
    accepted: bool
    quorum_met: bool
    counted: list[str]
    #: The workflow recorded the decision (read model and audit trail) before answering.
    recorded: bool = False
    #: The intent's state when the workflow answered (after the transition a rejection caused).
    state: str = ""


@dataclass
class CancelInput:
    reason: str
    by: str


@dataclass
class IntentResult:
    state: str
    reason: str = ""
    tx_hash: str = ""


@dataclass
class ActivateInput:
    intent_id: str
    policy_version: str
    initiator: str
    approvals: list[ApprovalData]
