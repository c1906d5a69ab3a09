"""StakingService logic: submit, read, approve, reject, cancel and watch intents.

Submission records the intent (idempotent on the initiator's key), pins the
active policy version and the approver registry into the workflow input, and
starts the workflow whose id is the intent id. Approvals go to the workflow as
Temporal updates; its validators are the gatekeepers, this service only relays
them (after checking the approval's key against the current registry: the
workflow's is the one pinned at submission). The workflow reports what it
accepted, each decision through ``RecordDecision`` before it counts and each
transition through ``RecordTransition``: this service alone writes its read model,
and an approval whose caller never heard the answer is recorded all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError

from services.audit.records import signature_ref
from services.audit.writer import AuditWriter
from services.chain.client import ChainClient
from services.pb.custos.chain.v1 import chain_pb2
from services.pb.custos.policy.v1 import policy_pb2
from services.pb.custos.signer.v1 import signer_pb2
from services.policy.client import PolicyClient
from services.policy.evidence import verify_signature
from services.runtime.auth import Principal
from services.runtime.convert import optional_datetime, spec_to_pb, ts_to_datetime
from services.runtime.db import reading, transaction, utcnow
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from services.runtime.intent import (
    Action,
    Approval,
    IntentBinding,
    IntentSpec,
    canonical_json,
    intent_digest,
    spec_to_plain,
    submission_time,
)
from services.runtime.telemetry import INTENTS
from services.signer.client import SignerClient
from services.staking import repository as repo
from services.staking.errors import (
    ApprovalKeyRefused,
    ApprovalRefused,
    IdempotencyConflict,
    IntentNotFound,
    NotARequiredApprover,
    NotYourIntent,
    SelfApproval,
    WorkflowUnavailable,
)
from services.staking.models import ApprovalRow, IntentEventRow, IntentRow
from services.staking.readmodel import ReadModel
from services.staking.types import DecisionRecord, Transition
from services.staking.wakeups import TransitionWakeups
from workflows.approvals import ALREADY_DECIDED, OUTSIDE
from workflows.staking.types import (
    APPROVED,
    ApprovalAck,
    ApprovalData,
    ApproverData,
    ApproverKeyData,
    CancelInput,
    IntentInput,
)

#: The fallback for transitions recorded by another staking replica (only the one recording wakes).
WATCH_POLL_SECONDS = 0.25
#: Intents recorded this long ago without a started workflow are started by the reconciler.
RECONCILE_GRACE = timedelta(seconds=5)
RECONCILE_SECONDS = 5.0
log = logging.getLogger("custos.staking")
_SCHEMES = {1: "ED25519", 2: "ECDSA_P256"}
#: States an intent reaches only once its approvals met the quorum.
_PAST_QUORUM = frozenset({APPROVED, "SIGNING", "BROADCAST", "UNBONDING", "CONFIRMED"})


@dataclass(frozen=True)
class IntentView:
    row: IntentRow
    approvals: list[ApprovalRow]
    events: list[IntentEventRow]


class StakingService:
    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        temporal: Client,
        task_queue: str,
        policy: PolicyClient,
        signer: SignerClient,
        chain: ChainClient,
        audit: AuditWriter,
    ) -> None:
        self._sessions = sessions
        self._temporal = temporal
        self._queue = task_queue
        self._policy = policy
        self._signer = signer
        self._chain = chain
        self._audit = audit
        self._read_model = ReadModel(sessions, audit)
        self.wakeups = TransitionWakeups()

    # --- submission ---------------------------------------------------------------

    async def submit(self, who: Principal, key: str, spec: IntentSpec) -> tuple[IntentView, bool]:
        request_digest = hashlib.sha256(canonical_json(spec_to_plain(spec))).hexdigest()
        existing = await asyncio.to_thread(self._find, who.identity, key)
        if existing is not None:
            if existing.request_digest != request_digest:
                raise IdempotencyConflict(
                    f"idempotency key {key!r} was used for a different request (intent {existing.intent_id})"
                )
            await self._ensure_started(existing)
            return await self.get(existing.intent_id), False

        if spec.action is Action.POLICY_CHANGE:
            raise InvalidArgument(
                "policy changes are governed changes, not intents: custos policy propose FILE --key KEY"
            )
        if "initiator" not in who.roles:
            raise NotYourIntent(f"{who.identity} may not initiate {spec.action} intents")
        context = await self._validate_on_chain(spec)
        version = await self._active_policy_version()
        approvers = await self._approvers()
        intent_id = f"int-{uuid.uuid4().hex}"
        now = submission_time(utcnow())
        digest = intent_digest(spec, version, IntentBinding(intent_id, who.identity, now))
        row = IntentRow(
            intent_id=intent_id,
            initiator=who.identity,
            idempotency_key=key,
            request_digest=request_digest,
            action=spec.action.value,
            chain=spec.chain,
            vault_id=spec.vault_id,
            amount=str(spec.amount),
            spec_json=canonical_json(spec_to_plain(spec)).decode(),
            state="SUBMITTED",
            digest=digest.hex(),
            policy_version=version,
            requirement_json="",
            tx_hash="",
            reason="",
            # what the chain says approvers should see (a vote's proposal, the vault's voting
            # weight) until the transaction's own summary replaces it at signing
            summary=context,
            workflow_started=0,
            last_sequence=1,
            created_at=now,
            updated_at=now,
        )
        inserted = await asyncio.to_thread(self._insert, row, who)
        if inserted is None:  # a concurrent submission with the same key won the race
            winner = await asyncio.to_thread(self._find, who.identity, key)
            if winner is None or winner.request_digest != request_digest:
                raise IdempotencyConflict(f"idempotency key {key!r} is taken by another request")
            await self._ensure_started(winner)
            return await self.get(winner.intent_id), False
        INTENTS.add(1, {"custos.state": "SUBMITTED", "custos.action": inserted.action})
        await self._start(inserted, approvers)
        return await self.get(inserted.intent_id), True

    def _find(self, initiator: str, key: str) -> IntentRow | None:
        with reading(self._sessions) as s:
            return repo.find_by_key(s, initiator, key)

    def _insert(self, row: IntentRow, who: Principal) -> IntentRow | None:
        with transaction(self._sessions) as s:
            out = repo.insert_intent(s, row)
            if out is not None:
                self._audit.record(
                    "intent.submitted",
                    f"intent:{row.intent_id}",
                    "ok",
                    {
                        "action": row.action,
                        "chain": row.chain,
                        "vault_id": row.vault_id,
                        "amount": row.amount,
                        "policy_version": row.policy_version,
                        "digest": row.digest,
                        "idempotency_key": row.idempotency_key,
                        **({"chain_context": row.summary} if row.summary else {}),
                    },
                    session=s,
                    actor=who.identity,
                )
            return out

    async def _validate_on_chain(self, spec: IntentSpec) -> str:
        """Chain-specific checks (e.g. ETH deposit data) before anyone is asked to approve; returns
        what the chain says approvers should see beside the intent (or "")."""
        try:
            key = await self._signer.call(
                "GetKey", signer_pb2.GetKeyRequest(vault_id=spec.vault_id, chain=spec.chain)
            )
        except NotFound:
            raise InvalidArgument(
                f"vault {spec.vault_id} has no key that signs on chain {spec.chain!r}"
            ) from None
        address = next((a.address for a in key.key.addresses if a.chain == spec.chain), "")
        if not address:
            has = ", ".join(sorted(a.chain for a in key.key.addresses)) or "none"
            raise InvalidArgument(
                f"vault {spec.vault_id} has no address on chain {spec.chain!r} (its chains: {has})"
            )
        resp = await self._chain.call(
            "ValidateIntent", chain_pb2.ValidateIntentRequest(spec=spec_to_pb(spec), vault_address=address)
        )
        return str(resp.context)[:1000]

    async def _active_policy_version(self) -> str:
        resp = await self._policy.call("GetPolicy", policy_pb2.GetPolicyRequest())
        return str(resp.policy.version)

    async def _approvers(self) -> list[ApproverData]:
        out: list[ApproverData] = []
        token = ""
        while True:
            resp = await self._policy.call(
                "ListApprovers", policy_pb2.ListApproversRequest(page_size=500, page_token=token)
            )
            for a in resp.approvers:
                out.append(
                    ApproverData(
                        approver_id=a.approver_id,
                        display_name=a.display_name,
                        groups=list(a.groups),
                        keys=[
                            ApproverKeyData(
                                key_id=k.key_id,
                                scheme=_SCHEMES.get(k.scheme, "UNSPECIFIED"),
                                public_key_hex=k.public_key.hex(),
                                created_at=ts_to_datetime(k.created_at, "key.created_at"),
                                revoked_at=optional_datetime(k, "revoked_at", "key.revoked_at"),
                            )
                            for k in a.keys
                        ],
                        created_at=ts_to_datetime(a.created_at, "approver.created_at"),
                    )
                )
            token = resp.next_page_token
            if not token:
                return out

    async def _start(self, row: IntentRow, approvers: list[ApproverData] | None = None) -> None:
        spec = json.loads(row.spec_json)
        inp = IntentInput(
            intent_id=row.intent_id,
            spec=spec,
            initiator=row.initiator,
            policy_version=row.policy_version,
            digest_hex=row.digest,
            approvers=approvers if approvers is not None else await self._approvers(),
            submitted_at=row.created_at,
        )
        workflow = "PolicyChange" if row.action == Action.POLICY_CHANGE.value else "StakingIntent"
        try:
            await self._temporal.start_workflow(
                workflow,
                inp,
                id=row.intent_id,
                task_queue=self._queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            )
        except WorkflowAlreadyStartedError:
            pass  # started by an earlier attempt: that is the point of the workflow id
        except RPCError as e:
            raise WorkflowUnavailable(f"cannot start the workflow: {e.message}") from e
        await asyncio.to_thread(self._mark_started, row.intent_id)

    def _mark_started(self, intent_id: str) -> None:
        with transaction(self._sessions) as s:
            row = s.get(IntentRow, intent_id)
            if row is not None:
                row.workflow_started = 1

    async def _ensure_started(self, row: IntentRow) -> None:
        """A crash between recording and starting leaves the workflow unstarted: start it now."""
        if not row.workflow_started:
            await self._start(row)

    async def start_unstarted(self, grace: timedelta = RECONCILE_GRACE) -> int:
        """Starts the workflows of intents recorded more than ``grace`` ago but never started.

        A crash between recording an intent and starting its workflow leaves it SUBMITTED;
        starting is idempotent (workflow id = intent id), so racing a live submission is harmless.
        """

        def load() -> list[IntentRow]:
            with reading(self._sessions) as s:
                return repo.unstarted(s, utcnow() - grace)

        rows = await asyncio.to_thread(load)
        for row in rows:
            await self._start(row)
            log.info(
                "started the workflow of %s, recorded at %s but never started", row.intent_id, row.created_at
            )
        return len(rows)

    async def reconcile_forever(self, every: float = RECONCILE_SECONDS) -> None:
        """The staking process's background task: nothing submitted stays unstarted."""
        while True:
            try:
                await self.start_unstarted()
            except WorkflowUnavailable as e:
                log.warning("reconciler: %s", e)
            except Exception:
                log.exception("reconciler failed; retrying in %.0fs", every)
            await asyncio.sleep(every)

    # --- reads ----------------------------------------------------------------------

    async def get(self, intent_id: str) -> IntentView:
        view = await asyncio.to_thread(self._load, intent_id)
        if view is None:
            raise IntentNotFound(f"no intent {intent_id}")
        return view

    def _load(self, intent_id: str) -> IntentView | None:
        with reading(self._sessions) as s:
            row = s.get(IntentRow, intent_id)
            if row is None:
                return None
            return IntentView(row, repo.approvals_of(s, intent_id), repo.events_of(s, intent_id))

    async def list_intents(
        self, f: repo.IntentFilter, page_size: int, token: str
    ) -> tuple[list[IntentView], str]:
        def run() -> tuple[list[IntentView], str]:
            with reading(self._sessions) as s:
                rows, nxt = repo.list_intents(s, f, page_size, token)
                return [IntentView(r, repo.approvals_of(s, r.intent_id), []) for r in rows], nxt

        return await asyncio.to_thread(run)

    async def watch(self, intent_id: str, after: int) -> AsyncGenerator[IntentEventRow, None]:
        """Streams transitions after ``after``; ends after the terminal one.

        The database is read again whenever this process records a transition of the
        intent, and at the latest every :data:`WATCH_POLL_SECONDS`, for transitions that
        another staking replica recorded.
        """
        await self.get(intent_id)
        with self.wakeups.listen(intent_id) as woken:  # before the first read: no lost wake-up
            while True:
                woken.clear()  # a wake-up during the read or the yields makes the next wait return
                events = await asyncio.to_thread(self._events, intent_id, after)
                for e in events:
                    yield e
                    after = e.sequence
                    if e.state in repo.TERMINAL:
                        return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), WATCH_POLL_SECONDS)

    async def record_transition(self, who: Principal, t: Transition) -> bool:
        """Records a transition the workflow reported, with its audit record; wakes its watchers.

        Returns False when (intent, sequence) was recorded before: a retried activity, or
        a call whose answer was lost, records once. Watchers are woken either way.
        """
        if t.sequence < 2:
            raise InvalidArgument("sequence must be at least 2 (SubmitIntent records 1)")
        recorded = await asyncio.to_thread(self._read_model.record, t, who.identity)
        self.wakeups.wake(t.intent_id)
        return recorded

    def _events(self, intent_id: str, after: int) -> list[IntentEventRow]:
        with reading(self._sessions) as s:
            return repo.events_of(s, intent_id, after)

    # --- decisions ------------------------------------------------------------------

    async def decide(
        self, who: Principal, intent_id: str, approval: Approval, update: str, reason: str = ""
    ) -> ApprovalAck:
        """Relays an approval or rejection to the workflow, whose validator decides.

        The initiator deciding on their own intent is refused here, before the relay: the
        validator refuses it too, but as one of its state refusals (FAILED_PRECONDITION),
        while this is who the caller is (PERMISSION_DENIED). Both read the same initiator.
        So is an approver in none of the requirement's groups, once the requirement is known
        (before, the workflow refuses them once the policy has said who decides).

        The workflow records each decision it accepts (``RecordDecision``) before it answers;
        a retry of the same signed decision gets the same answer, even once the intent ended.
        """
        view = await self.get(intent_id)  # NotFound before anything else
        subject = f"intent:{intent_id}"
        if who.identity != approval.approver_id:
            await self._audit.arecord(
                "approval.refused",
                subject,
                "refused",
                {"reason": "caller is not the approver", "approver_id": approval.approver_id},
                actor=who.identity,
            )
            raise NotYourIntent(f"{who.identity} cannot submit a decision signed as {approval.approver_id}")
        if approval.approver_id == view.row.initiator:
            reason_txt = f"the initiator cannot {update} their own intent"
            await self._audit_refused(who, subject, update, approval, reason_txt)
            raise SelfApproval(reason_txt + (" (cancel it instead)" if update == "reject" else ""))
        outside = _outside_requirement(view.row, approval.approver_id)
        if outside:
            await self._audit_refused(who, subject, update, approval, outside)
            raise NotARequiredApprover(outside)
        refusal = await self._key_refusal(approval)
        if refusal:
            await self._audit_refused(who, subject, update, approval, refusal)
            raise ApprovalKeyRefused(refusal)
        data = ApprovalData(
            approver_id=approval.approver_id,
            key_id=approval.key_id,
            decision=approval.decision.value,
            intent_digest_hex=approval.intent_digest.hex(),
            policy_version=approval.policy_version,
            expires_at=approval.expires_at,
            signature_hex=approval.signature.hex(),
            reason=reason if update == "reject" else "",
        )
        handle = self._temporal.get_workflow_handle(intent_id)
        try:
            # the same signed decision is the same update: Temporal answers a retry with the first's outcome
            ack: ApprovalAck = await handle.execute_update(
                update,
                data,
                id=f"{update}-{approval.approver_id}-{hashlib.sha256(approval.signature).hexdigest()[:32]}",
                result_type=ApprovalAck,
            )
        except WorkflowUpdateFailedError as e:
            cause = e.cause
            kind = cause.type if isinstance(cause, ApplicationError) else ""
            if kind == ALREADY_DECIDED:  # e.g. re-signed after a lost answer: the same decision is told so
                recorded = await self._recorded_decision(intent_id, approval)
                if recorded is not None:
                    return recorded
            why = cause.message if isinstance(cause, ApplicationError) else str(cause or e)
            await self._audit_refused(who, subject, update, approval, why)
            if kind == OUTSIDE:
                raise NotARequiredApprover(why) from e
            raise ApprovalRefused(f"{update} refused: {why}") from e
        except RPCError as e:
            ended = await self._closed_or_unavailable(intent_id, e)
            recorded = await self._recorded_decision(intent_id, approval)
            if isinstance(ended, ApprovalRefused) and recorded is not None:
                return recorded  # a retry of a decision recorded before the intent ended
            raise ended from e
        if not ack.recorded:  # a workflow of the code before RecordDecision: recorded here, as it was
            await asyncio.to_thread(
                self._record_decision,
                approval.approver_id,
                DecisionRecord(intent_id, approval, data.reason, ack.quorum_met),
            )
        return ack

    async def _recorded_decision(self, intent_id: str, approval: Approval) -> ApprovalAck | None:
        """The answer to a retry of ``approval`` when the read model holds it (None when it does not)."""
        view = await self.get(intent_id)
        row = next((a for a in view.approvals if a.approver_id == approval.approver_id), None)
        if row is None or row.decision != approval.decision.value:
            return None
        counted = sorted(a.approver_id for a in view.approvals if a.decision == "APPROVE")
        return ApprovalAck(
            accepted=True,
            quorum_met=view.row.state in _PAST_QUORUM,
            counted=counted,
            recorded=True,
            state=view.row.state,
        )

    async def record_decision(self, who: Principal, d: DecisionRecord) -> bool:
        """Records a decision the workflow accepted, with its audit record; False if recorded before.

        The worker's word is not enough: the signature must verify over the intent's digest
        with a key the registry holds for the approver (revoked since or not: it was valid when
        the workflow accepted it), so this record names only what the approver signed.

        Raises:
            IntentNotFound: no intent has that id.
            FailedPrecondition: the decision is not one the approver signed for this intent.
        """
        view = await self.get(d.intent_id)
        a = d.approval
        if a.intent_digest.hex() != view.row.digest or a.policy_version != view.row.policy_version:
            raise FailedPrecondition(
                f"the decision of {a.approver_id} is for another intent or policy version"
            )
        try:
            approver = await self._policy.get_approver(a.approver_id)
        except NotFound:
            raise FailedPrecondition(f"{a.approver_id} is not in the approver registry") from None
        key = approver.key(a.key_id)
        if key is None or not verify_signature(key, a.message(), a.signature):
            raise FailedPrecondition(f"the decision of {a.approver_id} does not verify with key {a.key_id}")
        # a signature the workflow could never have accepted for this intent is no decision of it
        submitted = view.row.created_at
        if key.revoked_at is not None and key.revoked_at <= submitted:
            raise FailedPrecondition(
                f"key {a.key_id} of {a.approver_id} was revoked before the intent existed"
            )
        if a.expires_at <= submitted:
            raise FailedPrecondition(f"the decision of {a.approver_id} expired before the intent existed")
        if a.approver_id == view.row.initiator:
            raise FailedPrecondition(
                f"{a.approver_id} initiated intent {d.intent_id}: no decision of theirs counts"
            )
        outside = _outside_requirement(view.row, a.approver_id)
        if outside:
            raise FailedPrecondition(outside)
        recorded = any(r.approver_id == a.approver_id for r in view.approvals)
        if not recorded and (view.row.state in repo.TERMINAL or view.row.state in _PAST_QUORUM):
            raise FailedPrecondition(f"intent {d.intent_id} is {view.row.state}: it takes no decision now")
        return await asyncio.to_thread(self._record_decision, a.approver_id, d)

    async def _key_refusal(self, approval: Approval) -> str:
        """Why the current registry does not let ``approval``'s key decide for its approver ('' if it does).

        The workflow judges approvals against the registry pinned at submission. A key
        revoked since would count there, and the signer, which reads the current
        registry, would then refuse the transaction: the intent would fail. Refused here
        instead, the intent waits for a valid approval. (A revocation landing between this
        check and the workflow's acceptance is still caught by the signer.)
        """
        try:
            approver = await self._policy.get_approver(approval.approver_id)
        except NotFound:
            return f"{approval.approver_id} is not in the approver registry"
        key = approver.key(approval.key_id)
        if key is None:
            return f"key {approval.key_id} is not registered to {approval.approver_id}"
        if key.revoked_at is not None:
            return f"key {approval.key_id} of {approval.approver_id} is revoked"
        return ""

    async def _audit_refused(
        self, who: Principal, subject: str, update: str, approval: Approval, reason: str
    ) -> None:
        """The audit record of a refused approve or reject (``approve.refused``, ``reject.refused``)."""
        await self._audit.arecord(
            f"{update}.refused",
            subject,
            "refused",
            {"reason": reason, "approver_id": approval.approver_id, "key_id": approval.key_id},
            actor=who.identity,
        )

    async def _closed_or_unavailable(self, intent_id: str, error: RPCError) -> Exception:
        """An update to a closed workflow fails with NOT_FOUND: tell the caller it has ended."""
        try:
            desc = await self._temporal.get_workflow_handle(intent_id).describe()
        except RPCError:
            return WorkflowUnavailable(f"cannot reach the workflow: {error.message}")
        if desc.status is not None and desc.status != WorkflowExecutionStatus.RUNNING:
            view = await self.get(intent_id)
            return ApprovalRefused(f"intent {intent_id} has ended ({view.row.state})")
        return WorkflowUnavailable(f"cannot reach the workflow: {error.message}")

    def _record_decision(self, actor: str, d: DecisionRecord) -> bool:
        """The approval row and its audit record, in one transaction; False if recorded before."""
        a = d.approval
        approve = a.decision.value == "APPROVE"
        with transaction(self._sessions) as s:
            if not repo.record_approval(s, d.intent_id, a.approver_id, a.decision.value, d.reason):
                return False
            row = s.get(IntentRow, d.intent_id)
            approvers = {r.approver_id for r in repo.approvals_of(s, d.intent_id) if r.decision == "APPROVE"}
            # The staking service's own count of what it recorded, not the caller's word (the worker's
            # ``quorum_met`` is only compared, and a disagreement logged).
            quorum_met = row is not None and _quorum_met(row, approvers)
            if quorum_met != d.quorum_met:
                log.warning(
                    "%s: the caller says quorum_met=%s, the recorded approvals say %s",
                    d.intent_id,
                    d.quorum_met,
                    quorum_met,
                )
            payload: dict[str, object] = {
                "approver_id": a.approver_id,
                "key_id": a.key_id,
                "policy_version": a.policy_version,
                "quorum_met": quorum_met,
                "signature_ref": signature_ref(a.signature),
            }
            if not approve:
                payload["reason"] = d.reason
            self._audit.record(
                f"intent.{'approved' if approve else 'rejected'}_by",
                f"intent:{d.intent_id}",
                "ok",
                payload,
                session=s,
                actor=actor,
            )
        self.wakeups.wake(d.intent_id)
        return True

    async def cancel(self, who: Principal, intent_id: str, reason: str) -> IntentView:
        view = await self.get(intent_id)
        if who.identity != view.row.initiator and "operator" not in who.roles:
            raise NotYourIntent("only the initiator or an operator may cancel an intent")
        handle = self._temporal.get_workflow_handle(intent_id)
        try:
            await handle.execute_update(
                "cancel", CancelInput(reason=reason or "no reason given", by=who.identity)
            )
        except WorkflowUpdateFailedError as e:
            reason_txt = e.cause.message if isinstance(e.cause, ApplicationError) else str(e)
            raise ApprovalRefused(reason_txt) from e
        except RPCError as e:
            raise await self._closed_or_unavailable(intent_id, e) from e
        await self._audit.arecord(
            "intent.cancel_requested", f"intent:{intent_id}", "ok", {"reason": reason}, actor=who.identity
        )
        # the workflow answered once the ending the cancellation led to was recorded
        return await self.get(intent_id)


def _quorum_met(row: IntentRow, approvers: set[str]) -> bool:
    """Whether ``approvers`` meet every group of the intent's recorded requirement (False while none
    is recorded)."""
    if not row.requirement_json:
        return False
    groups = json.loads(row.requirement_json)
    return bool(groups) and all(len(approvers & set(g["members"])) >= int(g["threshold"]) for g in groups)


def _outside_requirement(row: IntentRow, approver_id: str) -> str:
    """Why ``approver_id`` may not decide on the intent ('' if they may, or no requirement is known yet)."""
    if not row.requirement_json:
        return ""
    groups = json.loads(row.requirement_json)
    if any(approver_id in g["members"] for g in groups):
        return ""
    names = ", ".join(g["name"] for g in groups)
    return f"{approver_id} is in none of the groups that decide on intent {row.intent_id} ({names})"
