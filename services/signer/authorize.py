"""Sign's authorisation: the signer decides on its own whether an intent may be signed now.

From the facts the admin quorum proved (the active policy, the approver registry:
``PolicySource``) and its own ledger (what it signed: ``services.signer.ledger``)
it evaluates the intent as the policy service would, now: every rule's limits
(amount caps, allowlists, time windows, velocity), then judges the approvals
against the requirement of the matching rule. Nothing the caller says is taken on
trust but the intent itself, which the approvals' signatures bind:

* the approvals name the active version (never one only proposed, or superseded);
* each is a valid signature of a registered, unrevoked key over the digest of this
  intent (its id, initiator, submission time, spec and policy version);
* none claims to count beyond the intent's approval window (submission + the rule's
  expiry), and the submission time is not in the future;
* the vault's signed amount on the intent's chain in each velocity window leaves room
  for this one (amounts of two chains are never added); the committing transaction
  checks that again holding the ledger lock (:meth:`Authorizer.guard`), so two
  concurrent Signs cannot both take the last room.

The facts rules see (validators, payout addresses, the unit of the amount) come from the
family of the intent's chain, as the signer itself configures it: an intent on a chain the
signer does not know is refused (``PolicyRefuses``, the policy's ``unknown-chain`` DENY),
as the policy service denies it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.audit.records import signature_ref
from services.families.config import ChainConfig
from services.policy import engine
from services.policy.domain import Requirement, VelocityLimit
from services.policy.evidence import check_approvals
from services.runtime.errors import CustosError, Unavailable
from services.runtime.intent import SUBMISSION_SKEW, Approval, Decision, IntentSpec
from services.signer.errors import (
    ApprovalsInsufficient,
    BadSignRequest,
    GovernanceUnverified,
    PolicyNotActive,
    PolicyRefuses,
    SignerError,
    VelocityExceeded,
)
from services.signer.ledger import SignedAmount
from services.signer.ports import PolicySource

#: What the ledger says was signed for a vault on a chain after a time: (vault id, chain, since) ->
#: first signatures.
Amounts = Callable[[str, str, datetime], list[SignedAmount]]
#: The signer's own configuration of a chain, by name (None: it has none).
ChainLookup = Callable[[str], ChainConfig | None]


@dataclass(frozen=True)
class Grant:
    """Why a Sign may go on: what it was checked against, for the record and the commit."""

    requirement: Requirement
    rule_id: str
    limits: tuple[VelocityLimit, ...]
    #: The approvals that count, one per approver.
    counted: tuple[Approval, ...]
    #: The governance log entry the registry and the policy were taken at.
    governance_entry: int

    def audit_fields(self) -> dict[str, object]:
        return {
            "policy_version": self.requirement.policy_version,
            "rule_id": self.rule_id,
            "governance_entry": self.governance_entry,
            "approvals": [
                {
                    "approver_id": a.approver_id,
                    "key_id": a.key_id,
                    "signature_ref": signature_ref(a.signature),
                }
                for a in self.counted
            ],
        }


@dataclass(frozen=True)
class Request:
    """The parts of a Sign request the authorisation reads."""

    intent_id: str
    initiator: str
    submitted_at: datetime
    spec: IntentSpec
    policy_version: str
    approvals: tuple[Approval, ...]


def _used(
    amounts: list[SignedAmount], limit_window: int, action: str | None, now: datetime, exclude: str
) -> int:
    since = now - timedelta(seconds=limit_window)
    return sum(
        a.amount
        for a in amounts
        if a.intent_id != exclude and a.created_at > since and (action is None or a.action == action)
    )


class Authorizer:
    """Decides whether a request may be signed (see the module docstring)."""

    def __init__(
        self, policy: PolicySource, amounts: Amounts, chains: ChainLookup, *, clock: Callable[[], datetime]
    ) -> None:
        self._policy = policy
        self._amounts = amounts
        self._chains = chains
        self._clock = clock

    def authorize(self, request: Request, digest: bytes, now: datetime) -> Grant:
        """Returns the grant, or raises the refusal (each a typed ``SignerError``)."""
        if request.submitted_at.tzinfo is None or request.submitted_at > now + SUBMISSION_SKEW:
            raise BadSignRequest("submitted_at must be a time-zone aware time, not in the future")
        try:
            authority = self._policy.authority()
        except (Unavailable, SignerError):
            raise
        except CustosError as e:  # e.g. the active version's document is missing or altered
            raise GovernanceUnverified(f"the active policy cannot be established: {e.message}") from e
        policy, governed = authority.policy, authority.governed
        if request.policy_version != policy.version:
            raise PolicyNotActive(
                f"the approvals name policy {request.policy_version[:16]}, but the admin quorum made "
                f"{policy.version[:16]} the active one",
                details={"named": request.policy_version, "active": policy.version},
            )
        spec = request.spec
        keys = engine.velocity_keys(policy, spec)
        used: dict[engine.VelocityKey, int] = {}
        if keys:
            since = now - timedelta(seconds=max(k.window_seconds for k in keys))
            amounts = self._amounts(spec.vault_id, spec.chain, since)
            used = {k: _used(amounts, k.window_seconds, k.action, now, request.intent_id) for k in keys}
        chain = self._chains(spec.chain)
        decision = engine.evaluate(
            policy,
            spec,
            request.initiator,
            (),
            now,
            used,
            chains={chain.name: chain} if chain is not None else {},
            directory=governed.directory,
        )
        if not decision.allowed or decision.requirement is None:
            raise PolicyRefuses(
                f"the active policy denies the intent now: {'; '.join(decision.reasons)}",
                details={"rule_id": decision.rule_id, "reasons": list(decision.reasons)[:8]},
            )
        requirement = decision.requirement
        result = check_approvals(
            intent_digest=digest,
            approvals=request.approvals,
            requirement=requirement,
            registry=governed.registry(now),
            initiator=request.initiator,
            now=now,
            deadline=request.submitted_at + timedelta(seconds=requirement.expiry_seconds),
        )
        if not result.met:
            not_counted = sorted({f"{v.approver_id}: {v.reason}" for v in result.verdicts if not v.counted})
            if result.rejected:
                why = "rejected by an approver"
            elif not request.approvals:
                why = "no approvals"
            else:
                why = f"groups short: {', '.join(result.missing)}"
            raise ApprovalsInsufficient(
                f"approvals do not meet policy {policy.version[:16]}: {why}",
                details={
                    "missing_groups": list(result.missing),
                    "not_counted": not_counted[:16],
                    "rejected": result.rejected,
                },
            )
        counted: dict[str, Approval] = {}
        for a in request.approvals:
            if a.approver_id in result.counted and a.decision is Decision.APPROVE:
                counted.setdefault(a.approver_id, a)
        return Grant(
            requirement=requirement,
            rule_id=decision.rule_id,
            limits=decision.velocity_limits,
            counted=tuple(counted.values()),
            governance_entry=governed.head_seq,
        )

    @staticmethod
    def guard(
        amounts: list[SignedAmount], request: Request, limits: tuple[VelocityLimit, ...], now: datetime
    ) -> None:
        """The velocity check again, inside the transaction that stores the signature.

        ``amounts`` is what the whole ledger holds for the vault on the intent's chain, read
        with the ledger lock held, plus what the same batch chained before: racing Signs are
        counted against each other. Raises VelocityExceeded.
        """
        if not limits:
            return
        spec = request.spec
        for limit in limits:
            if limit.action is not None and limit.action != spec.action.value:
                continue
            used = _used(amounts, limit.window_seconds, limit.action, now, request.intent_id)
            if used + spec.amount > limit.max_amount:
                raise VelocityExceeded(
                    f"the signer has signed {used} for vault {spec.vault_id!r} on {spec.chain!r} within "
                    f"{limit.window_seconds}s: {spec.amount} more is above the limit of {limit.max_amount}",
                    details={
                        "used": str(used),
                        "limit": str(limit.max_amount),
                        "window": limit.window_seconds,
                    },
                )
