"""Governed changes in the policy service: proposed, signed by the admin quorum, applied to the log.

A change request arrives with its proposer's signature (the caller, a pinned admin);
other admins approve or reject it with theirs. When the signatures meet the trust
root's quorum, one transaction appends the log entry, projects it onto the registry
and version tables that evaluations read, and writes the audit records that name the
people who made the change. Revoking a key needs only its proposer and applies at
once.

The policy service checks every signature against the pinned trust root itself and
re-verifies the whole log before it appends (``VerifiedLog``); the signer does the
same on its own, so this service's word is never what makes a change count.
Never imports grpc.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session, sessionmaker

from services.audit.records import signature_ref
from services.audit.writer import AuditWriter
from services.policy.domain import key_id_for
from services.policy.errors import (
    ChangeInvalid,
    ChangeNotFound,
    ChangeRefused,
    ChangeStateConflict,
    PolicyError,
    PolicyNotFound,
)
from services.policy.governance import (
    GOVERNANCE_VERSION,
    MAX_CHANGE_LIFETIME,
    ActivatePolicy,
    AddApproverKey,
    ChangeRequest,
    ChangeState,
    Entry,
    GovernedView,
    Judgement,
    RegisterApprover,
    RevokeApproverKey,
    SetApproverGroups,
    TrustRoot,
    describe,
    judge_change,
    kind_of,
    request_from_plain,
)
from services.policy.log import VerifiedLog
from services.policy.models import (
    ApproverGroupRow,
    ApproverKeyRow,
    ApproverRow,
    GovernanceChangeRow,
    GovernanceEntryRow,
    GovernanceSignatureRow,
    PolicyVersionRow,
    VersionStatus,
)
from services.runtime.db import reading, transaction, utcnow
from services.runtime.intent import Approval, Decision, canonical_json

log = logging.getLogger("custos.policy")

MAX_PAGE = 500
# First key of the two-key advisory lock that serialises appends to the log on PostgreSQL.
_GOVERNANCE_LOCK = 0x706F6C67  # "polg"


@dataclass(frozen=True)
class ChangeView:
    """A change request as stored, with the signatures given and what they amount to."""

    request: ChangeRequest
    digest: bytes
    state: ChangeState
    signatures: tuple[Approval, ...]
    judgement: Judgement
    reason: str
    created_at: datetime
    closed_at: datetime | None
    entry_seq: int | None
    #: The hash of the entry this answer appended (None when it appended none).
    entry_hash: bytes | None = None
    #: The signer confirmed it holds the log through this entry (``services.policy.anchoring``).
    anchored: bool = False
    #: The head the signer last said it holds (0: not heard from it).
    signer_head: int = 0
    #: Why the signer did not anchor it, when this answer asked and it failed.
    anchor_error: str = ""


def _approval(row: GovernanceSignatureRow, digest: bytes) -> Approval:
    return Approval(
        approver_id=row.admin_id,
        key_id=row.key_id,
        decision=Decision(row.decision),
        intent_digest=digest,
        policy_version=GOVERNANCE_VERSION,
        expires_at=row.expires_at,
        signature=row.signature,
    )


class Governance:
    """Governed changes over one database, checked against one trust root.

    Args:
        factory: Sessions on the policy database.
        trust: The pinned admins and quorum (from the service's trust file).
        audit: Writes the audit records of each step in the step's transaction.
    """

    def __init__(
        self,
        factory: sessionmaker[Session],
        trust: TrustRoot,
        *,
        audit: AuditWriter | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._factory = factory
        self.trust = trust
        self._audit = audit
        self._clock = clock
        self._log = VerifiedLog(trust)

    # --- reading --------------------------------------------------------------------------

    def current(self) -> GovernedView:
        """The registry and active policy that the verified log establishes now."""
        with reading(self._factory) as s:
            return self._log.advance(s)

    def get(self, change_id: str) -> ChangeView:
        with reading(self._factory) as s:
            row = s.get(GovernanceChangeRow, change_id)
            if row is None:
                raise ChangeNotFound(f"no change {change_id!r}")
            return self._view(s, row)

    def list_changes(self, *, state: ChangeState | None, page_size: int, offset: int) -> list[ChangeView]:
        with reading(self._factory) as s:
            q = select(GovernanceChangeRow).order_by(
                GovernanceChangeRow.created_at.desc(), GovernanceChangeRow.change_id
            )
            if state is not None:
                q = q.where(GovernanceChangeRow.state == state)
            rows = s.scalars(q.limit(min(page_size or 50, MAX_PAGE)).offset(offset)).all()
            return [self._view(s, r) for r in rows]

    def entries(self, *, after: int, limit: int) -> list[tuple[int, bytes, str]]:
        """(sequence, hash, canonical JSON) of the log entries after ``after``."""
        with reading(self._factory) as s:
            rows = s.execute(
                select(GovernanceEntryRow.seq, GovernanceEntryRow.hash, GovernanceEntryRow.entry)
                .where(GovernanceEntryRow.seq > after)
                .order_by(GovernanceEntryRow.seq)
                .limit(min(limit or 100, MAX_PAGE))
            ).all()
        return [(seq, bytes(h), entry) for seq, h, entry in rows]

    def _view(self, s: Session, row: GovernanceChangeRow, appended: Entry | None = None) -> ChangeView:
        request = request_from_plain(json.loads(row.request))
        signatures = tuple(
            _approval(r, row.digest)
            for r in s.scalars(
                select(GovernanceSignatureRow)
                .where(GovernanceSignatureRow.change_id == row.change_id)
                .order_by(GovernanceSignatureRow.created_at, GovernanceSignatureRow.admin_id)
            )
        )
        now = self._clock()
        state = ChangeState(row.state)
        if state is ChangeState.PROPOSED and request.expires_at <= now:
            state = ChangeState.EXPIRED  # shown as it is; stored at the next decision
        judged = judge_change(
            request, signatures, self.trust, now=now if state is ChangeState.PROPOSED else None
        )
        view = ChangeView(
            request,
            row.digest,
            state,
            signatures,
            judged,
            row.reason,
            row.created_at,
            row.closed_at,
            row.entry_seq,
        )
        return view if appended is None else replace(view, entry_hash=appended.hash())

    # --- proposing and deciding ------------------------------------------------------------------

    def propose(self, request: ChangeRequest, approval: Approval, *, caller: str) -> ChangeView:
        """Opens ``request`` with its proposer's signature; applies it at once if that suffices.

        Idempotent: the same request (same id and content) proposed again returns the
        change as it stands. A refusal is audited (``governance.propose_refused``).
        """
        try:
            return self._propose(request, approval, caller=caller)
        except PolicyError as e:
            self._refused("governance.propose_refused", request.change_id, approval, e, caller, request)
            raise

    def decide(self, change_id: str, approval: Approval, *, caller: str) -> ChangeView:
        """Adds an admin's signed approval or rejection; applies the change once the quorum is met.

        A refusal is audited (``governance.approve_refused`` / ``governance.reject_refused``).
        """
        try:
            return self._decide(change_id, approval, caller=caller)
        except PolicyError as e:
            verb = "approve" if approval.decision is Decision.APPROVE else "reject"
            self._refused(f"governance.{verb}_refused", change_id, approval, e, caller)
            raise

    def _refused(
        self,
        action: str,
        change_id: str,
        approval: Approval,
        error: PolicyError,
        caller: str,
        request: ChangeRequest | None = None,
    ) -> None:
        """The audit record of a refused proposal or decision, in its own transaction (the
        refused one rolled back). Says who asked, signing as whom, and why not."""
        if self._audit is None:
            return
        payload: dict[str, Any] = {
            "error": type(error).__name__,
            "reason": error.message[:500],
            "signed_as": approval.approver_id[:128],
            "key_id": approval.key_id[:64],
        }
        if request is not None:
            payload |= {"kind": kind_of(request.change).value, "what": describe(request)}
        try:
            self._audit.record(action, f"change:{change_id[:128]}", "refused", payload, actor=caller)
        except Exception:  # the caller hears the refusal whatever the audit trail does
            log.exception("could not audit the refusal of change %s", change_id[:128])

    def _propose(self, request: ChangeRequest, approval: Approval, *, caller: str) -> ChangeView:
        now = self._clock()
        if caller != request.proposer or approval.approver_id != request.proposer:
            raise ChangeRefused(f"{caller} cannot propose a change as {request.proposer}")
        if request.proposer not in self.trust.admin_ids:
            raise ChangeRefused(f"{request.proposer} is not an admin of the trust root")
        if not now < request.expires_at <= now + MAX_CHANGE_LIFETIME:
            raise ChangeInvalid(f"expires_at must be in the next {MAX_CHANGE_LIFETIME.days} days")
        self._check_signature(request, approval, decision=Decision.APPROVE)
        digest = request.digest()
        with transaction(self._factory) as s:
            existing = s.get(GovernanceChangeRow, request.change_id)
            if existing is not None:
                if existing.digest != digest:
                    raise ChangeStateConflict(f"change id {request.change_id} names another change")
                return self._view(s, existing)
            self._lock(s)
            self._log.advance(s)
            self._log.check(request.change)
            if isinstance(request.change, ActivatePolicy):
                self._check_document(s, request.change.version)
            row = GovernanceChangeRow(
                change_id=request.change_id,
                kind=kind_of(request.change).value,
                request=canonical_json(request.to_plain()).decode(),
                digest=digest,
                proposer=request.proposer,
                expires_at=request.expires_at,
                state=ChangeState.PROPOSED,
                reason="",
                created_at=now,
            )
            s.add(row)
            s.flush()
            self._store_signature(s, request.change_id, approval, now)
            self._record(
                s,
                "governance.proposed",
                request,
                "ok",
                {"digest": digest.hex(), "expires_at": request.expires_at.isoformat()},
                actor=caller,
            )
            entry = self._apply_if_met(s, row, request, now)
            return self._view(s, row, entry)

    def _decide(self, change_id: str, approval: Approval, *, caller: str) -> ChangeView:
        now = self._clock()
        if caller != approval.approver_id:
            raise ChangeRefused(f"{caller} cannot submit a decision signed as {approval.approver_id}")
        with transaction(self._factory) as s:
            self._lock(s)
            row = s.get(GovernanceChangeRow, change_id)
            if row is None:
                raise ChangeNotFound(f"no change {change_id!r}")
            request = request_from_plain(json.loads(row.request))
            if row.state == ChangeState.PROPOSED and request.expires_at <= now:
                row.state, row.closed_at, row.reason = ChangeState.EXPIRED, now, "expired before the quorum"
                self._record(s, "governance.expired", request, "failed", {})
                return self._view(s, row)
            if row.state != ChangeState.PROPOSED:
                raise ChangeStateConflict(f"change {change_id} is {row.state}: it takes no more decisions")
            if s.get(GovernanceSignatureRow, (change_id, approval.approver_id)) is not None:
                raise ChangeStateConflict(f"{approval.approver_id} has already decided on change {change_id}")
            self._check_signature(request, approval, decision=approval.decision)
            self._store_signature(s, change_id, approval, now)
            verb = "approved_by" if approval.decision is Decision.APPROVE else "rejected_by"
            self._record(
                s,
                f"governance.{verb}",
                request,
                "ok",
                {"key_id": approval.key_id, "signature_ref": signature_ref(approval.signature)},
                actor=caller,
            )
            if approval.decision is Decision.REJECT:
                row.state, row.closed_at = ChangeState.REJECTED, now
                row.reason = f"rejected by {approval.approver_id}"
            else:
                self._log.advance(s)
                return self._view(s, row, self._apply_if_met(s, row, request, now))
            return self._view(s, row)

    def _check_signature(self, request: ChangeRequest, approval: Approval, *, decision: Decision) -> None:
        if approval.approver_id not in self.trust.admin_ids:
            raise ChangeRefused(f"{approval.approver_id} is not an admin of the trust root")
        if approval.decision is not decision:
            raise ChangeRefused(f"expected a {decision} decision")
        judged = judge_change(request, [approval], self.trust, now=self._clock())
        if judged.refused:
            raise ChangeRefused(f"the signature does not count: {judged.refused[0]}")

    @staticmethod
    def _store_signature(s: Session, change_id: str, a: Approval, now: datetime) -> None:
        s.add(
            GovernanceSignatureRow(
                change_id=change_id,
                admin_id=a.approver_id,
                key_id=a.key_id,
                decision=a.decision.value,
                expires_at=a.expires_at,
                signature=a.signature,
                created_at=now,
            )
        )
        s.flush()

    @staticmethod
    def _check_document(s: Session, version: str) -> None:
        row = s.get(PolicyVersionRow, version)
        if row is None:
            raise PolicyNotFound(f"no policy version {version!r}: propose its document first")

    @staticmethod
    def _lock(s: Session) -> None:
        """One governance writer at a time (SQLite: the write transaction already excludes others)."""
        if s.get_bind().dialect.name == "postgresql":
            s.execute(text("SELECT pg_advisory_xact_lock(:c, 0)"), {"c": _GOVERNANCE_LOCK})

    # --- applying ---------------------------------------------------------------------------------

    def _apply_if_met(
        self, s: Session, row: GovernanceChangeRow, request: ChangeRequest, now: datetime
    ) -> Entry | None:
        """Appends the entry applying ``request`` when the signatures meet the quorum; returns it."""
        signatures = [
            _approval(r, row.digest)
            for r in s.scalars(
                select(GovernanceSignatureRow).where(GovernanceSignatureRow.change_id == row.change_id)
            )
        ]
        judged = judge_change(request, signatures, self.trust, now=now)
        if not judged.met:
            return None
        entry = self._log.next_entry(request, signatures, now)  # verified against the trust root
        s.add(
            GovernanceEntryRow(
                seq=entry.seq,
                change_id=request.change_id,
                prev_hash=entry.prev_hash,
                hash=entry.hash(),
                entry=entry.canonical().decode(),
                applied_at=entry.applied_at,
            )
        )
        row.state, row.closed_at, row.entry_seq = ChangeState.APPLIED, now, entry.seq
        s.flush()
        self._project(s, entry)
        people = [a.approver_id for a in entry.approvals]
        self._record(
            s,
            "governance.applied",
            request,
            "ok",
            {"entry": entry.seq, "entry_hash": entry.hash().hex(), "signed_by": people},
            actor=request.proposer,
        )
        return entry

    def _project(self, s: Session, entry: Entry) -> None:
        """Writes what ``entry`` changes into the tables evaluations read, with its audit record."""
        change, at = entry.request.change, entry.applied_at
        people = {
            "proposed_by": entry.request.proposer,
            "approved_by": [a.approver_id for a in entry.approvals],
        }
        if isinstance(change, RegisterApprover):
            # The log is the truth: a row it does not know (legacy, or written by hand) gives way.
            s.execute(delete(ApproverKeyRow).where(ApproverKeyRow.approver_id == change.approver_id))
            s.execute(delete(ApproverGroupRow).where(ApproverGroupRow.approver_id == change.approver_id))
            s.execute(delete(ApproverRow).where(ApproverRow.approver_id == change.approver_id))
            approver = ApproverRow(
                approver_id=change.approver_id, display_name=change.display_name, created_at=at
            )
            approver.groups = [ApproverGroupRow(group_name=g) for g in change.groups]
            key_id = key_id_for(change.public_key)
            s.execute(delete(ApproverKeyRow).where(ApproverKeyRow.key_id == key_id))
            approver.keys = [
                ApproverKeyRow(
                    key_id=key_id, scheme=change.scheme, public_key=change.public_key, created_at=at
                )
            ]
            s.add(approver)
            self._audit_change(
                s,
                "approver.registered",
                change.approver_id,
                entry,
                people,
                {"groups": list(change.groups), "key_id": key_id, "scheme": str(change.scheme)},
            )
        elif isinstance(change, AddApproverKey):
            key_id = key_id_for(change.public_key)
            s.execute(delete(ApproverKeyRow).where(ApproverKeyRow.key_id == key_id))
            s.add(
                ApproverKeyRow(
                    key_id=key_id,
                    approver_id=change.approver_id,
                    scheme=change.scheme,
                    public_key=change.public_key,
                    created_at=at,
                )
            )
            self._audit_change(s, "approver.key_added", change.approver_id, entry, people, {"key_id": key_id})
        elif isinstance(change, SetApproverGroups):
            s.execute(delete(ApproverGroupRow).where(ApproverGroupRow.approver_id == change.approver_id))
            for g in change.groups:
                s.add(ApproverGroupRow(approver_id=change.approver_id, group_name=g))
            self._audit_change(
                s, "approver.groups_set", change.approver_id, entry, people, {"groups": list(change.groups)}
            )
        elif isinstance(change, RevokeApproverKey):
            key = s.get(ApproverKeyRow, change.key_id)
            if key is not None:
                key.revoked_at, key.revoke_reason = at, change.reason[:2000]
            self._audit_change(
                s,
                "approver.key_revoked",
                change.approver_id,
                entry,
                people,
                {"key_id": change.key_id, "reason": change.reason[:200]},
            )
        else:
            for active in s.scalars(
                select(PolicyVersionRow).where(PolicyVersionRow.status == VersionStatus.ACTIVE)
            ):
                active.status, active.closed_at = VersionStatus.SUPERSEDED, at
            s.flush()  # one ACTIVE at a time: the partial unique index checks each statement
            version = s.get(PolicyVersionRow, change.version)
            if version is None:
                raise PolicyNotFound(f"no policy version {change.version!r}")
            version.status, version.activated_at = VersionStatus.ACTIVE, at
            self._audit_change(
                s,
                "policy.activated",
                None,
                entry,
                people,
                {"version": change.version, "previous_version": change.parent_version},
            )
        s.flush()

    def _audit_change(
        self,
        s: Session,
        action: str,
        approver_id: str | None,
        entry: Entry,
        people: dict[str, Any],
        payload: dict[str, Any],
    ) -> None:
        if self._audit is None:
            return
        change = entry.request.change
        subject = f"approver:{approver_id}" if approver_id else f"policy:{getattr(change, 'version', '')}"
        self._audit.record(
            action,
            subject,
            "ok",
            {**payload, **people, "change_id": entry.request.change_id, "entry": entry.seq},
            session=s,
            actor=entry.request.proposer,
        )

    def _record(
        self,
        s: Session,
        action: str,
        request: ChangeRequest,
        outcome: str,
        payload: dict[str, Any],
        actor: str | None = None,
    ) -> None:
        if self._audit is None:
            return
        self._audit.record(
            action,
            f"change:{request.change_id}",
            outcome,
            {"kind": kind_of(request.change).value, "what": describe(request), **payload},
            session=s,
            actor=actor,
        )


def new_change_id(seed: bytes | None = None) -> str:
    """A change id: random by default (the CLI makes one per request)."""
    import secrets

    return "chg-" + hashlib.sha256(seed or secrets.token_bytes(32)).hexdigest()[:24]
