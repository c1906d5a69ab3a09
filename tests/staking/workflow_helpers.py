"""Shared pieces of the workflow tests: approvers with real keys, and stand-in activities."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519
from temporalio import activity
from temporalio.exceptions import ApplicationError

from services.families.registry import family
from services.policy.evidence import key_id_for, public_key_der, sign_approval
from services.runtime.intent import (
    Action,
    Decision,
    IntentBinding,
    IntentSpec,
    UnstakeTarget,
    intent_digest,
    spec_from_plain,
    spec_to_plain,
)
from workflows.staking.activities import activities_of
from workflows.staking.types import (
    ActivateInput,
    ApprovalData,
    ApproverData,
    ApproverKeyData,
    BuildResult,
    ConfirmResult,
    DecisionInput,
    EvaluateInput,
    GroupData,
    IntentInput,
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

T0 = datetime(2026, 1, 1)
VERSION = "a" * 64


@dataclass
class Person:
    name: str
    key: ed25519.Ed25519PrivateKey = field(default_factory=ed25519.Ed25519PrivateKey.generate)

    @property
    def key_id(self) -> str:
        return key_id_for(public_key_der(self.key))

    def data(self, groups: list[str], created: datetime) -> ApproverData:
        return ApproverData(
            approver_id=self.name,
            display_name=self.name,
            groups=groups,
            keys=[ApproverKeyData(self.key_id, "ED25519", public_key_der(self.key).hex(), created)],
            created_at=created,
        )

    def decide(
        self,
        inp: IntentInput,
        decision: str = "APPROVE",
        *,
        expires_at: datetime,
        version: str | None = None,
        digest_hex: str | None = None,
    ) -> ApprovalData:
        a = sign_approval(
            self.key,
            approver_id=self.name,
            intent_digest=bytes.fromhex(digest_hex or inp.digest_hex),
            policy_version=version or inp.policy_version,
            decision=Decision(decision),
            expires_at=expires_at,
        )
        return ApprovalData(
            a.approver_id,
            a.key_id,
            a.decision.value,
            a.intent_digest.hex(),
            a.policy_version,
            a.expires_at,
            a.signature.hex(),
        )


def make_input(
    initiator: str, approvers: list[ApproverData], submitted: datetime, action: Action = Action.UNSTAKE
) -> IntentInput:
    """An intent submitted at ``submitted``: its approval window runs from then."""
    spec = IntentSpec(action, "ethereum-devnet", "vault-1", 0, UnstakeTarget("0x" + "ab" * 48))
    intent_id = f"int-{uuid.uuid4().hex}"
    return IntentInput(
        intent_id=intent_id,
        spec=spec_to_plain(spec),
        initiator=initiator,
        policy_version=VERSION,
        digest_hex=intent_digest(spec, VERSION, IntentBinding(intent_id, initiator, submitted)).hex(),
        approvers=approvers,
        submitted_at=submitted,
    )


class FakeActivities:
    """Stand-ins for the activities, so these tests exercise the workflow's own logic.

    The real activities talk to the policy, signer and chain services; the
    integration test (tests/staking/test_integration.py) runs them for real.
    """

    def __init__(
        self,
        groups: list[GroupData],
        *,
        allow: bool = True,
        expiry_seconds: int = 86_400,
        velocity_room: bool = True,
        sign_refuses: bool = False,
        build_fails: bool = False,
        broadcast_refuses: bool = False,
        plan: list[PlannedStep] | None = None,
        wait_until: datetime | None = None,
        expire_first: int = 0,
    ) -> None:
        self.groups = groups
        self.allow = allow
        self.expiry = expiry_seconds
        self.velocity_room = velocity_room
        self.sign_refuses = sign_refuses
        self.build_fails = build_fails
        self.broadcast_refuses = broadcast_refuses
        #: The steps PlanSteps answers (the Ethereum family's when None).
        self.plan = plan
        #: When the chain says a WAIT step ends; the wait is done from then on.
        self.wait_until = wait_until
        self.wait_polls: list[WaitInput] = []
        #: How many confirmations answer "expired unsent" (a Solana blockhash) before one confirms.
        self.expire_first = expire_first
        self.built = 0
        self.nonces_released: list[NonceReleaseInput] = []
        self.transitions: list[TransitionInput] = []
        self.decisions: list[DecisionInput] = []
        #: How many RecordDecision attempts fail first (as a killed staking process would).
        self.decision_failures = 0
        self.signed: list[StepInput] = []
        self.reserved: list[str] = []
        self.released: list[ReleaseInput] = []

    @activity.defn(name="RecordTransition")
    async def record_transition(self, inp: TransitionInput) -> None:
        self.transitions.append(inp)

    @activity.defn(name="RecordDecision")
    async def record_decision(self, inp: DecisionInput) -> None:
        if self.decision_failures > 0:
            self.decision_failures -= 1
            raise RuntimeError("the staking service went away mid-call")
        if all(d.approval.approver_id != inp.approval.approver_id for d in self.decisions):
            self.decisions.append(inp)  # idempotent per approver, as the staking service records

    @activity.defn(name="EvaluatePolicy")
    async def evaluate_policy(self, inp: EvaluateInput) -> PolicyOutcome:
        if not self.allow:
            return PolicyOutcome(False, ["amount above the cap"], [], 0, "deny-large")
        return PolicyOutcome(True, [], self.groups, self.expiry, "ops-2-of-3")

    @activity.defn(name="BuildTransaction")
    async def build_transaction(self, inp: StepInput) -> BuildResult:
        if self.build_fails:
            raise ApplicationError(
                "gas estimation failed: insufficient funds", type="InvalidIntent", non_retryable=True
            )
        self.built += 1
        return BuildResult(f"02f0{self.built:02x}", "exit request", 7)

    @activity.defn(name="ReserveVelocity")
    async def reserve_velocity(self, inp: StepInput) -> bool:
        if not self.velocity_room:
            raise ApplicationError(
                "velocity: vault 'vault-1' would reach 64", type="PolicyDenied", non_retryable=True
            )
        self.reserved.append(inp.intent_id)
        return True

    @activity.defn(name="ReleaseVelocity")
    async def release_velocity(self, inp: ReleaseInput) -> bool:
        self.released.append(inp)
        return True

    @activity.defn(name="ReleaseNonce")
    async def release_nonce(self, inp: NonceReleaseInput) -> list[int]:
        self.nonces_released.append(inp)
        return [7]

    @activity.defn(name="SignTransaction")
    async def sign_transaction(self, inp: StepInput) -> SignResult:
        if self.sign_refuses:
            raise ApplicationError("signer refused: nonce reused", type="SigningRefused", non_retryable=True)
        self.signed.append(inp)
        return SignResult("02f0aa", "0x" + f"{len(self.signed):02x}" * 32, False)

    @activity.defn(name="BroadcastTransaction")
    async def broadcast_transaction(self, inp: StepInput) -> str:
        if self.broadcast_refuses:
            raise ApplicationError(
                "broadcast refused: max fee below the base fee", type="InvalidIntent", non_retryable=True
            )
        return inp.tx_hash

    @activity.defn(name="AwaitConfirmation")
    async def await_confirmation(self, inp: StepInput) -> ConfirmResult:
        if self.expire_first > 0:
            self.expire_first -= 1
            return ConfirmResult(False, False, 0, "blockhash expired", [], expired=True)
        return ConfirmResult(True, False, 1, "", [])

    @activity.defn(name="UnbondingSeconds")
    async def unbonding_seconds(self, inp: StepInput) -> int:
        return 0

    @activity.defn(name="ChainWaitStatus")
    async def chain_wait_status(self, inp: WaitInput) -> WaitResult:
        return WaitResult(False, self.wait_until, f"unbonding until {self.wait_until}")

    @activity.defn(name="AwaitChainWait")
    async def await_chain_wait(self, inp: WaitInput) -> WaitResult:
        self.wait_polls.append(inp)
        return WaitResult(True, self.wait_until, "back in the vault")

    @activity.defn(name="PlanSteps")
    async def plan_steps(self, inp: StepInput) -> list[PlannedStep]:
        """The Ethereum family's steps (one signed transaction per action), as ListChains would say."""
        if self.plan is not None:
            return self.plan
        spec = spec_from_plain(inp.spec)
        return [PlannedStep(s.name, s.kind.value, s.waits_for) for s in family("ethereum").steps(spec.action)]

    @activity.defn(name="ActivatePolicy")
    async def activate_policy(self, inp: ActivateInput) -> str:
        return "b" * 64

    def all(self) -> list[Callable[..., Any]]:
        return activities_of(self)


def later(now: datetime, hours: float = 48) -> datetime:
    return now + timedelta(hours=hours)
