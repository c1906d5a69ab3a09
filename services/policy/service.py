"""PolicyService logic: evaluation, versions and their activation, simulation, the approver registry.

Never imports grpc. Parsed versions are cached by hash: a version is immutable,
so a cached parse can never go stale.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from services.audit.writer import AuditWriter
from services.families.config import ChainConfig
from services.policy import engine
from services.policy.document import Policy, parse_policy
from services.policy.domain import (
    ApproverInfo,
    Outcome,
)
from services.policy.engine import Decision
from services.policy.errors import (
    ApproverNotFound,
    PolicyNotFound,
    PolicyStateConflict,
)
from services.policy.models import (
    EvaluationRow,
    PolicyVersionRow,
    VersionStatus,
)
from services.policy.repository import (
    Approvers,
    Evaluations,
    PolicyVersions,
    Reservation,
    approver_info,
    release_velocity,
    reserve_velocity,
    velocity_used,
)
from services.runtime.convert import require_id
from services.runtime.db import reading, transaction, utcnow
from services.runtime.errors import FailedPrecondition
from services.runtime.intent import (
    IntentSpec,
    canonical_json,
    spec_from_plain,
    spec_to_plain,
)

MAX_PAGE = 500


def spec_json(spec: IntentSpec) -> str:
    return canonical_json(spec_to_plain(spec)).decode()


@dataclass(frozen=True)
class SimulationResult:
    intent_id: str
    current: Decision | None
    proposed: Decision
    changed: bool


def _same_effect(a: Decision | None, b: Decision) -> bool:
    """Equal outcome and equal requirement (groups, expiry, fee cap), whatever the version."""
    if a is None or a.outcome != b.outcome:
        return False
    if a.outcome is Outcome.DENY:
        return True
    ra, rb = a.requirement, b.requirement
    assert ra is not None and rb is not None
    return (ra.groups, ra.expiry_seconds, ra.fee_cap) == (rb.groups, rb.expiry_seconds, rb.fee_cap)


class PolicyService:
    def __init__(
        self,
        factory: sessionmaker[Session],
        *,
        clock: Callable[[], datetime] = utcnow,
        audit: AuditWriter | None = None,
        chains: Iterable[ChainConfig] = (),
    ) -> None:
        self._factory = factory
        self._clock = clock
        # The chain registry: the family of an intent's chain gives the facts rules see (an
        # intent on a chain outside it is denied), and proposed documents are checked against it.
        self._chains = {c.name: c for c in chains}
        self._parsed: dict[str, Policy] = {}
        # Changes (proposals, activations, the approver registry) are recorded in the same
        # transaction; read-only users (the signer's view) pass none.
        self._audit = audit

    def _record(
        self,
        s: Session,
        action: str,
        subject: str,
        outcome: str,
        payload: dict[str, Any],
        actor: str | None = None,
    ) -> None:
        if self._audit is not None:
            self._audit.record(action, subject, outcome, payload, session=s, actor=actor)

    # --- versions ---------------------------------------------------------------------

    def _policy(self, row: PolicyVersionRow) -> Policy:
        p = self._parsed.get(row.version)
        if p is None:
            p = parse_policy(row.document)
            if p.version != row.version:  # the stored document must hash to its address
                raise FailedPrecondition(f"stored policy {row.version} does not hash to its version")
            self._parsed[row.version] = p
        return p

    def _row(self, session: Session, version: str) -> PolicyVersionRow:
        repo = PolicyVersions(session)
        row = repo.get(version) if version else repo.active()
        if row is None:
            raise PolicyNotFound(
                f"no policy version {version!r}" if version else "no active policy version yet"
            )
        return row

    def get_version(self, version: str = "") -> PolicyVersionRow:
        with reading(self._factory) as s:
            return self._row(s, version)

    def load(self, version: str = "") -> Policy:
        """The parsed policy ``version`` (empty: the active one)."""
        return self._policy(self.get_version(version))

    def list_versions(self, *, page_size: int, offset: int) -> list[PolicyVersionRow]:
        with reading(self._factory) as s:
            return PolicyVersions(s).list(limit=min(page_size or 50, MAX_PAGE), offset=offset)

    def propose(self, document: str, *, description: str, proposed_by: str) -> PolicyVersionRow:
        """Stores a proposed version (idempotent). It becomes active only through a governed
        ``policy.activate`` change signed by the trust root's admin quorum (``changes.Governance``).
        The document is checked against the chain registry (its allowlists and units)."""
        policy = parse_policy(document, self._chains)
        with transaction(self._factory) as s:
            repo = PolicyVersions(s)
            active = repo.active()
            row = repo.get(policy.version)
            if row is not None:
                if row.status == VersionStatus.ACTIVE:
                    raise PolicyStateConflict(f"version {policy.version} is already the active one")
                return row
            row = repo.add(
                PolicyVersionRow(
                    version=policy.version,
                    document=document,
                    canonical=policy.canonical.decode(),
                    description=description,
                    status=VersionStatus.PROPOSED,
                    parent_version=active.version if active else None,
                    proposed_by=proposed_by,
                    created_at=self._clock(),
                )
            )
            self._record(
                s,
                "policy.proposed",
                f"policy:{policy.version}",
                "ok",
                {"description": description, "parent_version": row.parent_version or ""},
                actor=proposed_by,
            )
            return row

    # --- evaluation -----------------------------------------------------------------------

    def _decide(
        self,
        s: Session,
        policy: Policy,
        spec: IntentSpec,
        initiator: str,
        at: datetime,
        exclude_intent: str | None = None,
    ) -> Decision:
        used = {
            key: velocity_used(
                s,
                vault_id=spec.vault_id,
                chain=key.chain,
                action=key.action,
                window_seconds=key.window_seconds,
                at=at,
                exclude_intent=exclude_intent,
            )
            for key in engine.velocity_keys(policy, spec)
        }
        return engine.evaluate(
            policy, spec, initiator, (), at, used, chains=self._chains, directory=Approvers(s).directory()
        )

    def evaluate(
        self,
        spec: IntentSpec,
        initiator: str,
        *,
        intent_id: str = "",
        version: str = "",
        at: datetime | None = None,
    ) -> tuple[Decision, list[ApproverInfo]]:
        """Decides ``spec``; records the evaluation when ``intent_id`` is given.

        Returns the decision and the approvers who may approve (for offline validators).
        """
        at = at or self._clock()
        with transaction(self._factory) as s:
            policy = self._policy(self._row(s, version))
            decision = self._decide(s, policy, spec, initiator, at, exclude_intent=intent_id or None)
            if intent_id:
                Evaluations(s).record(
                    EvaluationRow(
                        intent_id=intent_id,
                        spec=spec_json(spec),
                        initiator=initiator,
                        evaluated_at=at,
                        policy_version=policy.version,
                        outcome=decision.outcome,
                        rule_id=decision.rule_id,
                    )
                )
            approvers: list[ApproverInfo] = []
            if decision.requirement is not None:
                members = set().union(*(g.members for g in decision.requirement.groups))
                snapshot = Approvers(s).snapshot()
                approvers = [snapshot[a] for a in sorted(members) if a in snapshot]
            return decision, approvers

    def reserve_velocity(
        self, intent_id: str, policy_version: str, spec: IntentSpec, initiator: str
    ) -> Reservation | None:
        """Counts an approved intent against the velocity limits of the rule that matched it.

        None when that rule sets no limit. Idempotent per intent; VelocityExceeded when a
        limit would be exceeded (the intent must not proceed). Audited in the same transaction.
        """
        require_id(intent_id, "intent_id")
        if not policy_version:
            raise FailedPrecondition("a velocity reservation must name the policy version")
        with reading(self._factory) as s:
            policy = self._policy(self._row(s, policy_version))
            recorded = Evaluations(s).latest_for(intent_id, policy_version)
            at = recorded.evaluated_at if recorded is not None else self._clock()
        limits = engine.velocity_limits_for(policy, spec, initiator, at, chains=self._chains)
        if not limits:
            return None

        def audit(session: Session, r: Reservation) -> None:
            self._record(
                session,
                "policy.velocity.reserve",
                f"intent:{intent_id}",
                "reserved",
                {
                    "vault_id": r.vault_id,
                    "chain": r.chain,
                    "action": r.action,
                    "amount": str(r.amount),
                    "version": policy_version,
                },
            )

        return reserve_velocity(
            self._factory,
            intent_id=intent_id,
            vault_id=spec.vault_id,
            chain=spec.chain,
            action=str(spec.action),
            amount=spec.amount,
            at=self._clock(),
            limits=limits,
            on_reserved=audit,
        )

    def release_velocity(self, intent_id: str, reason: str) -> bool:
        """Stops counting an intent that ended without moving funds (idempotent)."""
        require_id(intent_id, "intent_id")

        def audit(session: Session, r: Reservation) -> None:
            self._record(
                session,
                "policy.velocity.release",
                f"intent:{intent_id}",
                "released",
                {"vault_id": r.vault_id, "chain": r.chain, "amount": str(r.amount), "reason": reason},
            )

        return release_velocity(self._factory, intent_id=intent_id, at=self._clock(), on_released=audit)

    def simulate(
        self,
        *,
        version: str = "",
        document: str = "",
        intent: tuple[IntentSpec, str, datetime | None] | None = None,
        recorded: tuple[datetime, datetime] | None = None,
    ) -> list[SimulationResult]:
        """Evaluates an intent, or the intents recorded in [start, end), under a proposal (a
        document is checked against the chain registry as :meth:`propose` checks it)."""
        proposed = parse_policy(document, self._chains) if document else self.load(version)
        with reading(self._factory) as s:
            active_row = PolicyVersions(s).active()
            current = self._policy(active_row) if active_row else None
            subjects: list[tuple[str, IntentSpec, str, datetime]] = []
            if intent is not None:
                spec, initiator, at = intent
                subjects.append(("", spec, initiator, at or self._clock()))
            if recorded is not None:
                for row in Evaluations(s).in_range(*recorded):
                    subjects.append(
                        (
                            row.intent_id,
                            spec_from_plain(json.loads(row.spec)),
                            row.initiator,
                            row.evaluated_at,
                        )
                    )
            out = []
            for intent_id, spec, initiator, at in subjects:
                exclude = intent_id or None
                now_d = self._decide(s, current, spec, initiator, at, exclude) if current else None
                new_d = self._decide(s, proposed, spec, initiator, at, exclude)
                out.append(SimulationResult(intent_id, now_d, new_d, not _same_effect(now_d, new_d)))
            return out

    # --- approver registry ---------------------------------------------------------------------

    def get_approver(self, approver_id: str) -> ApproverInfo:
        with reading(self._factory) as s:
            row = Approvers(s).get(approver_id)
            if row is None:
                raise ApproverNotFound(f"no approver {approver_id!r}")
            return approver_info(row)

    def list_approvers(self, *, group: str = "", page_size: int = 50, offset: int = 0) -> list[ApproverInfo]:
        with reading(self._factory) as s:
            rows = Approvers(s).list(group=group, limit=min(page_size or 50, MAX_PAGE), offset=offset)
            return [approver_info(r) for r in rows]
