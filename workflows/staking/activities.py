"""Activities of the staking workflow: methods of one class whose clients are injected.

Each is idempotent: a retried transition records no second event (the staking
service records it: the worker writes no database), a retried build gets the same
nonce, a retried sign gets the same signature (the signer records one per intent
step), and a retried broadcast of the same bytes is harmless.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from services.chain.client import ChainClient
from services.families.errors import UnknownFamily
from services.families.registry import family
from services.pb.custos.chain.v1 import chain_pb2
from services.pb.custos.common.v1 import common_pb2
from services.pb.custos.policy.v1 import policy_pb2
from services.pb.custos.signer.v1 import signer_pb2
from services.policy.client import PolicyClient
from services.policy.domain import ApprovalGroup
from services.runtime.convert import datetime_to_ts, spec_to_pb
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from services.runtime.intent import Action, spec_from_plain
from services.signer.client import SignerClient
from services.staking.client import StakingClient
from services.staking.types import DecisionRecord, Transition
from workflows.approvals import approval_from_data
from workflows.staking.types import (
    ActivateInput,
    ApprovalData,
    BuildResult,
    ConfirmResult,
    DecisionInput,
    EvaluateInput,
    GroupData,
    NonceReleaseInput,
    PlannedStep,
    PolicyOutcome,
    ReleaseInput,
    SignResult,
    StepInput,
    TransitionInput,
    WaitInput,
    WaitResult,
)

log = logging.getLogger("custos.worker")
_REFUSALS = (FailedPrecondition, InvalidArgument, PermissionDenied, NotFound)


def approval_to_pb(a: ApprovalData) -> common_pb2.Approval:
    return common_pb2.Approval(
        approver_id=a.approver_id,
        key_id=a.key_id,
        decision=common_pb2.DECISION_APPROVE if a.decision == "APPROVE" else common_pb2.DECISION_REJECT,
        intent_digest=bytes.fromhex(a.intent_digest_hex),
        policy_version=a.policy_version,
        expires_at=datetime_to_ts(a.expires_at),
        signature=bytes.fromhex(a.signature_hex),
    )


def transition_of(inp: TransitionInput) -> Transition:
    """The staking service's transition from the workflow's (whose extras are the history's JSON)."""
    extra = inp.extra
    deadline = extra.get("deadline")
    return Transition(
        intent_id=inp.intent_id,
        sequence=inp.sequence,
        state=inp.state,
        detail=inp.detail,
        tx_hash=str(extra.get("tx_hash") or ""),
        requirement=tuple(
            ApprovalGroup(str(g["name"]), int(g["threshold"]), frozenset(g["members"]))
            for g in extra.get("requirement") or ()
        ),
        approval_deadline=datetime.fromisoformat(str(deadline)) if deadline else None,
    )


class StakingActivities:
    def __init__(
        self,
        *,
        policy: PolicyClient,
        signer: SignerClient,
        chain: ChainClient,
        staking: StakingClient,
        poll_seconds: float = 1.0,
    ) -> None:
        self._policy = policy
        self._signer = signer
        self._chain = chain
        self._staking = staking
        self._poll = poll_seconds

    @activity.defn(name="RecordTransition")
    async def record_transition(self, inp: TransitionInput) -> None:
        """Recorded by the staking service (read model and audit record, one transaction) when it
        returns; any failure fails the attempt, and the retry records it once."""
        await self._staking.record_transition(transition_of(inp))

    @activity.defn(name="RecordDecision")
    async def record_decision(self, inp: DecisionInput) -> None:
        """Recorded by the staking service (approval row and audit record, one transaction) when it
        returns; a retry records it once. A refusal (the decision does not verify there) is final."""
        record = DecisionRecord(
            inp.intent_id, approval_from_data(inp.approval), inp.approval.reason, inp.quorum_met
        )
        try:
            await self._staking.record_decision(record)
        except _REFUSALS as e:
            raise ApplicationError(
                f"the decision cannot be recorded: {e}", type="ApprovalRefused", non_retryable=True
            ) from e

    @activity.defn(name="EvaluatePolicy")
    async def evaluate_policy(self, inp: EvaluateInput) -> PolicyOutcome:
        spec = spec_from_plain(inp.spec)
        resp = await self._policy.call(
            "EvaluateIntent",
            policy_pb2.EvaluateIntentRequest(
                intent_id=inp.intent_id,
                spec=spec_to_pb(spec),
                initiator=inp.initiator,
                policy_version=inp.policy_version,
            ),
        )
        d = resp.decision
        if d.outcome != policy_pb2.OUTCOME_ALLOW:
            return PolicyOutcome(False, list(d.reasons), [], 0, d.rule_id)
        req = d.requirement
        return PolicyOutcome(
            allowed=True,
            reasons=[],
            groups=[GroupData(g.name, g.threshold, list(g.members)) for g in req.groups],
            expiry_seconds=int(req.expiry_seconds),
            rule_id=d.rule_id,
        )

    @activity.defn(name="ReserveVelocity")
    async def reserve_velocity(self, inp: StepInput) -> bool:
        """Counts the approved intent against its vault's velocity; a full window denies it."""
        try:
            resp = await self._policy.call(
                "ReserveVelocity",
                policy_pb2.ReserveVelocityRequest(
                    intent_id=inp.intent_id,
                    spec=spec_to_pb(spec_from_plain(inp.spec)),
                    initiator=inp.initiator,
                    policy_version=inp.policy_version,
                ),
            )
        except _REFUSALS as e:
            raise ApplicationError(str(e), type="PolicyDenied", non_retryable=True) from e
        return bool(resp.reserved)

    @activity.defn(name="ReleaseVelocity")
    async def release_velocity(self, inp: ReleaseInput) -> bool:
        resp = await self._policy.call(
            "ReleaseVelocity", policy_pb2.ReleaseVelocityRequest(intent_id=inp.intent_id, reason=inp.reason)
        )
        return bool(resp.released)

    async def _vault_key(self, vault_id: str, chain: str) -> tuple[str, bytes]:
        """The vault key's address on ``chain`` and its public key."""
        try:
            resp = await self._signer.call("GetKey", signer_pb2.GetKeyRequest(vault_id=vault_id, chain=chain))
        except NotFound as e:
            raise ApplicationError(str(e), type="InvalidIntent", non_retryable=True) from e
        for a in resp.key.addresses:
            if a.chain == chain:
                return str(a.address), bytes(resp.key.public_key)
        raise ApplicationError(
            f"vault {vault_id} has no address on {chain}", type="InvalidIntent", non_retryable=True
        )

    @activity.defn(name="BuildTransaction")
    async def build_transaction(self, inp: StepInput) -> BuildResult:
        spec = spec_from_plain(inp.spec)
        try:
            address, public_key = await self._vault_key(spec.vault_id, spec.chain)
            resp = await self._chain.call(
                "BuildTransaction",
                chain_pb2.BuildTransactionRequest(
                    intent_id=inp.intent_id,
                    spec=spec_to_pb(spec),
                    vault_address=address,
                    vault_public_key=public_key,
                    step=inp.step,
                ),
            )
        except _REFUSALS as e:
            raise ApplicationError(str(e), type="InvalidIntent", non_retryable=True) from e
        return BuildResult(resp.unsigned_tx.hex(), resp.decoded.summary, int(resp.decoded.nonce))

    @activity.defn(name="ReleaseNonce")
    async def release_nonce(self, inp: NonceReleaseInput) -> list[int]:
        """Gives back the nonces of an intent that failed before signing; returns those released.

        A refusal releases nothing and must not hold the intent's ending back: what it
        reserved then goes to another intent once stale, as it did before releases.
        """
        try:
            released = await self._chain.release_nonce(inp.chain, inp.intent_id, inp.reason)
        except _REFUSALS as e:
            log.warning("nonces of %s not given back: %s", inp.intent_id, e)
            return []
        return list(released.released)

    @activity.defn(name="SignTransaction")
    async def sign_transaction(self, inp: StepInput) -> SignResult:
        spec = spec_from_plain(inp.spec)
        if inp.submitted_at is None:
            raise ApplicationError(
                "the intent predates approvals bound to their intent: submit it again",
                type="SigningRefused",
                non_retryable=True,
            )
        try:
            resp = await self._signer.call(
                "Sign",
                signer_pb2.SignRequest(
                    intent_id=inp.intent_id,
                    step=inp.step,
                    spec=spec_to_pb(spec),
                    initiator=inp.initiator,
                    policy_version=inp.policy_version,
                    approvals=[approval_to_pb(a) for a in inp.approvals],
                    unsigned_tx=bytes.fromhex(inp.unsigned_tx_hex),
                    submitted_at=datetime_to_ts(inp.submitted_at),
                ),
            )
        except _REFUSALS as e:
            raise ApplicationError(f"signer refused: {e}", type="SigningRefused", non_retryable=True) from e
        return SignResult(resp.signed_tx.hex(), resp.tx_hash, resp.replayed)

    @activity.defn(name="BroadcastTransaction")
    async def broadcast_transaction(self, inp: StepInput) -> str:
        spec = spec_from_plain(inp.spec)
        try:
            resp = await self._chain.call(
                "BroadcastTransaction",
                chain_pb2.BroadcastTransactionRequest(
                    chain=spec.chain, signed_tx=bytes.fromhex(inp.signed_tx_hex)
                ),
            )
        except _REFUSALS as e:
            raise ApplicationError(f"broadcast refused: {e}", type="InvalidIntent", non_retryable=True) from e
        return str(resp.tx_hash)

    @activity.defn(name="AwaitConfirmation")
    async def await_confirmation(self, inp: StepInput) -> ConfirmResult:
        """Polls until confirmed or failed, heartbeating; a lost worker resumes polling elsewhere."""
        spec = spec_from_plain(inp.spec)
        while True:
            resp = await self._chain.call(
                "GetTransactionStatus",
                chain_pb2.GetTransactionStatusRequest(chain=spec.chain, tx_hash=inp.tx_hash),
            )
            activity.heartbeat(resp.confirmations)
            if resp.state == chain_pb2.TRANSACTION_STATE_FAILED:
                return ConfirmResult(False, True, 0, resp.failure_reason or "transaction failed", [])
            if resp.state == chain_pb2.TRANSACTION_STATE_EXPIRED:  # it can never land: build it again
                reason = resp.failure_reason or "expired before it landed"
                return ConfirmResult(False, False, 0, reason, [], expired=True)
            if resp.state == chain_pb2.TRANSACTION_STATE_CONFIRMED:
                events: list[dict[str, Any]] = [
                    {"name": e.name, "contract": e.contract, "log_index": e.log_index, **dict(e.fields)}
                    for e in resp.events
                ]
                return ConfirmResult(True, False, int(resp.confirmations), "", events)
            await asyncio.sleep(self._poll)

    async def _wait_status(self, inp: WaitInput) -> WaitResult:
        address, _ = await self._vault_key(inp.vault_id, inp.chain)
        resp = await self._chain.call(
            "GetWaitStatus",
            chain_pb2.GetWaitStatusRequest(
                chain=inp.chain, step=inp.step, tx_hash=inp.tx_hash, vault_address=address
            ),
        )
        until = resp.until.ToDatetime(tzinfo=UTC) if resp.HasField("until") else None
        return WaitResult(bool(resp.done), until, str(resp.detail))

    @activity.defn(name="ChainWaitStatus")
    async def chain_wait_status(self, inp: WaitInput) -> WaitResult:
        """Where the chain is with a family's WAIT step: when it says the wait ends."""
        try:
            return await self._wait_status(inp)
        except _REFUSALS as e:
            raise ApplicationError(str(e), type="InvalidIntent", non_retryable=True) from e

    @activity.defn(name="AwaitChainWait")
    async def await_chain_wait(self, inp: WaitInput) -> WaitResult:
        """Polls until the chain shows what the wait waits for (the funds back in the vault),
        heartbeating; a lost worker resumes polling elsewhere."""
        while True:
            try:
                status = await self._wait_status(inp)
            except _REFUSALS as e:
                raise ApplicationError(str(e), type="InvalidIntent", non_retryable=True) from e
            activity.heartbeat(status.detail)
            if status.done:
                return status
            await asyncio.sleep(self._poll)

    @activity.defn(name="PlanSteps")
    async def plan_steps(self, inp: StepInput) -> list[PlannedStep]:
        """The steps of the intent on its chain, as the chain's family defines them (recorded in
        the history once, so a replay runs the same steps whatever the code says later)."""
        spec = spec_from_plain(inp.spec)
        resp = await self._chain.call("ListChains", chain_pb2.ListChainsRequest())
        found = next((c for c in resp.chains if c.name == spec.chain), None)
        if found is None:
            raise ApplicationError(
                f"chain {spec.chain} is not in the chain registry", type="InvalidIntent", non_retryable=True
            )
        name = chain_pb2.ChainFamily.Name(found.family).removeprefix("CHAIN_FAMILY_").lower()
        try:
            steps = family(name).steps(spec.action)
        except UnknownFamily as e:
            raise ApplicationError(e.message, type="InvalidIntent", non_retryable=True) from None
        if not steps:
            raise ApplicationError(
                f"{spec.action} is not possible on {spec.chain} ({name})",
                type="InvalidIntent",
                non_retryable=True,
            )
        return [PlannedStep(s.name, s.kind.value, s.waits_for) for s in steps]

    @activity.defn(name="UnbondingSeconds")
    async def unbonding_seconds(self, inp: StepInput) -> int:
        spec = spec_from_plain(inp.spec)
        if spec.action is not Action.UNSTAKE:
            return 0
        resp = await self._chain.call("ListChains", chain_pb2.ListChainsRequest())
        for c in resp.chains:
            if c.name == spec.chain:
                return int(c.unbonding_seconds)
        return 0

    @activity.defn(name="ActivatePolicy")
    async def activate_policy(self, inp: ActivateInput) -> str:
        """Kept for POLICY_CHANGE workflows started before policy changes became governed changes:
        their intent approvals activate nothing any more, and they end FAILED saying why."""
        raise ApplicationError(
            f"policy {inp.policy_version[:16]} was not activated: policy changes are governed changes "
            "signed by the trust root's admins now (custos policy propose FILE --key KEY)",
            type="SigningRefused",
            non_retryable=True,
        )

    def all(self) -> list[Callable[..., Any]]:
        return activities_of(self)


#: The activity methods a worker registers; stand-ins in tests register the same ones.
ACTIVITY_METHODS = (
    "record_transition",
    "record_decision",
    "evaluate_policy",
    "build_transaction",
    "sign_transaction",
    "broadcast_transaction",
    "await_confirmation",
    "unbonding_seconds",
    "plan_steps",
    "chain_wait_status",
    "await_chain_wait",
    "activate_policy",
    "reserve_velocity",
    "release_velocity",
    "release_nonce",
)


def activities_of(impl: object) -> list[Callable[..., Any]]:
    """``impl``'s bound activity methods (AttributeError if it lacks one)."""
    return [getattr(impl, name) for name in ACTIVITY_METHODS]
