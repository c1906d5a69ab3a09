"""The staking scenario of the demo (and of the end-to-end test), against a running stack.

Registers approvers (keys in local files), installs a policy, creates a vault key
in the HSM, then takes a STAKE, an UNSTAKE and a RESTAKE through approvals, HSM
signing and the chain to CONFIRMED; shows refused cases; verifies the audit trail.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from services.audit.client import AuditClient
from services.chain.ethereum.rpc import JsonRpcClient
from services.cli.commands.intents import devnet_deposit, timeline_lines
from services.cli.context import load_settings, to_json
from services.cli.devstack import Stack
from services.cli.people import Person
from services.families.config import HOODI_GENESIS_FORK_VERSION
from services.pb.custos.audit.v1 import audit_pb2
from services.pb.custos.policy.v1 import policy_pb2
from services.pb.custos.signer.v1 import signer_pb2
from services.pb.custos.staking.v1 import staking_pb2
from services.policy.client import PolicyClient
from services.policy.domain import SignatureScheme
from services.policy.evidence import public_key_der
from services.policy.governance import ActivatePolicy, AddApproverKey, RegisterApprover
from services.runtime.convert import spec_to_pb
from services.runtime.errors import FailedPrecondition
from services.runtime.intent import (
    Action,
    ClaimRewardsTarget,
    Decision,
    IntentSpec,
    RestakeTarget,
    StakeTarget,
    TargetParams,
    UnstakeTarget,
    VoteOption,
    VoteTarget,
)
from services.runtime.settings import ServiceSettings
from services.signer.client import SignerClient
from services.staking.client import StakingClient

CHAIN = "ethereum-devnet"
ETH = 10**18
OPS = ("olivia", "oscar", "otto")
ADMINS = ("dave", "erin")
#: The approver registry the demo (and ``custos dev up --seed``) sets up: each approver's groups.
REGISTRY: dict[str, tuple[str, ...]] = {
    **{name: ("operations",) for name in (*OPS, "alice")},
    "rita": ("risk",),
    "dave": ("policy-admins",),
    "erin": ("policy-admins",),
}

POLICY = """\
format: custos.policy/v1
description: >-
  Demo - 2 of 3 operations; above 64 ETH also risk; nothing above 1024 ETH per intent
  nor 2048 ETH a day per vault.
default: deny
initiators:
  treasury: [alice]
rules:
  - id: deny-above-1024-eth
    match:
      chain: [ethereum-devnet]
      amount: {min: "1_024_000_000_000_000_000_001"}
    deny: amount above the 1024 ETH cap per intent
  - id: eth-large
    match:
      action: [STAKE, UNSTAKE, RESTAKE]
      chain: [ethereum-devnet]
      initiator_groups: [treasury]
      amount: {min: "64_000_000_000_000_000_001"}
    require:
      groups:
        - {name: operations, threshold: 2, approver_groups: [operations]}
        - {name: risk, threshold: 1, approver_groups: [risk]}
      expiry: 24h
    limits:
      velocity: {window: 24h, max: "2_048_000_000_000_000_000_000"}
  - id: eth-standard
    match:
      action: [STAKE, UNSTAKE, RESTAKE]
      chain: [ethereum-devnet]
      initiator_groups: [treasury]
      amount: {max: "64_000_000_000_000_000_000"}
    require:
      groups:
        - {name: operations, threshold: 2, approver_groups: [operations]}
      expiry: 24h
    limits:
      velocity: {window: 24h, max: "2_048_000_000_000_000_000_000"}
"""

COSMOS = "cosmos-devnet"
INJ = 10**18
SOLANA = "solana-devnet"
SOL = 10**9


def chain_rule(chain: str, actions: str, per_intent: str, per_day: str, validators: list[str]) -> str:
    """The demo's rule for one of the stack's other devnets: 2 of 3 operations, amounts in the chain's
    base unit, staking only to the devnet's own validators."""
    return f"""\
  - id: {chain.removesuffix("-devnet")}-standard
    match:
      action: [{actions}]
      chain: [{chain}]
      initiator_groups: [treasury]
      amount: {{max: "{per_intent}"}}
    require:
      groups:
        - {{name: operations, threshold: 2, approver_groups: [operations]}}
      expiry: 24h
    limits:
      validators: [{", ".join(validators)}]
      velocity: {{window: 24h, max: "{per_day}"}}
"""


STATE_NAME = {v: k.removeprefix("INTENT_STATE_") for k, v in staking_pb2.IntentState.items()}


def _runs(stack: Stack, chain: str) -> bool:
    return any(c.get("name") == chain for c in stack.settings().get("chains", []))


def demo_policy(stack: Stack) -> str:
    """The demo's policy for ``stack``: with a rule for its Cosmos and Solana devnets' validators when
    it runs them."""
    from services.cli.devstack import cosmos_devnet, solana_ready

    policy = POLICY
    if _runs(stack, COSMOS):
        actions = "STAKE, UNSTAKE, RESTAKE, CLAIM_REWARDS, VOTE"
        limits = ("1_000_000_000_000_000_000_000 inj", "5_000_000_000_000_000_000_000 inj")  # 1000, 5000 INJ
        policy += chain_rule(COSMOS, actions, *limits, cosmos_devnet(stack).genesis.validators)
    if _runs(stack, SOLANA):
        limits = ("1_000_000_000_000 lamports", "5_000_000_000_000 lamports")  # 1000, 5000 SOL
        policy += chain_rule(SOLANA, "STAKE, UNSTAKE, RESTAKE", *limits, solana_ready(stack)["vote_accounts"])
    return policy


def stack_settings(stack: Stack) -> ServiceSettings:
    return load_settings(stack.config, ServiceSettings)


@dataclass(frozen=True)
class CliRun:
    """One ``custos`` command as a person typed it, and what it printed."""

    shown: str
    code: int
    out: str
    err: str


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@dataclass
class Demo:
    stack: Stack
    say: Callable[[str], None] = print
    settings: ServiceSettings = field(init=False)
    vault_address: str = ""
    #: vault-1's address on the Cosmos devnet ("" when the stack runs none).
    cosmos_address: str = ""
    #: vault-1's Ed25519 key's address on the Solana devnet ("" when the stack runs none).
    solana_address: str = ""

    def __post_init__(self) -> None:
        self.settings = stack_settings(self.stack)

    def person(self, name: str) -> Person:
        return Person(name, self.settings, self.stack.root / "approver-keys")

    async def setup(self, policy: str | None = None) -> None:
        """Approvers and their keys, the policy (governed changes by dave, approved by erin), and a
        vault key in the HSM (funded on the devnet). ``policy`` replaces the demo's (the workflow
        bench raises its daily limit to the intents it submits)."""
        dave, erin = self.person("dave"), self.person("erin")
        registry = REGISTRY
        async with dave.client(PolicyClient) as as_dave, erin.client(PolicyClient) as as_erin:
            for name, groups in registry.items():
                p = self.person(name)
                change = await as_dave.propose_change(
                    RegisterApprover(
                        name, name.title(), tuple(groups), SignatureScheme.ED25519, p.public_key()
                    ),
                    dave.key,
                    proposer="dave",
                )
                await as_erin.decide_change(
                    change.request.change_id, erin.key, admin="erin", decision=Decision.APPROVE
                )
            document = policy if policy is not None else demo_policy(self.stack)
            proposal = policy_pb2.ProposePolicyRequest(document=document, description="demo policy")
            version = (await as_dave.call("ProposePolicy", proposal)).policy.version
            activation = await as_dave.propose_change(ActivatePolicy(version, ""), dave.key, proposer="dave")
        self.say(
            f"   registered {len(registry)} approvers (keys in {self.stack.root / 'approver-keys'}):"
            " each a governed change proposed by dave and approved by erin"
        )
        done = await self.custos(
            "erin", "admin", "approve", activation.request.change_id, "--key", str(erin.key_file)
        )
        self.say(f"   $ {done.shown}")
        if done.code != 0:
            raise FailedPrecondition(f"{done.shown} failed: {done.err or done.code}")
        self.say(f"   {done.out}")
        self.say(
            f"   policy {version[:16]}… active: 2 of 3 operations; risk above 64 ETH;"
            " over 1024 ETH denied; at most 2048 ETH a day"
        )
        async with self.person("ops").client(SignerClient) as signer:
            key = await signer.call(
                "CreateKey",
                signer_pb2.CreateKeyRequest(
                    vault_id="vault-1",
                    algorithm=signer_pb2.KEY_ALGORITHM_SECP256K1,
                    purpose=signer_pb2.KEY_PURPOSE_VAULT,
                ),
            )
        self.vault_address = next(a.address for a in key.key.addresses if a.chain == CHAIN)
        rpc = self._rpc()
        rpc.call_sync("anvil_setBalance", [self.vault_address, hex(10_000 * ETH)])
        self.say(f"   vault-1 key generated in the HSM: {self.vault_address} (funded 10000 ETH on anvil)")
        self.cosmos_address = next((a.address for a in key.key.addresses if a.chain == COSMOS), "")
        if self.cosmos_address:
            from services.cli.devstack import cosmos_devnet

            await asyncio.to_thread(cosmos_devnet(self.stack).fund, self.cosmos_address, 1_000 * INJ)
            self.say(
                f"   vault-1 on {COSMOS}: {self.cosmos_address} (funded 1000 INJ by the devnet's faucet)"
            )
        if _runs(self.stack, SOLANA):
            await self._setup_solana()

    async def _setup_solana(self) -> None:
        """vault-1's Ed25519 key (Solana signs with Ed25519), generated in the HSM, funded by an airdrop."""
        async with self.person("ops").client(SignerClient) as signer:
            key = await signer.call(
                "CreateKey",
                signer_pb2.CreateKeyRequest(
                    vault_id="vault-1",
                    algorithm=signer_pb2.KEY_ALGORITHM_ED25519,
                    purpose=signer_pb2.KEY_PURPOSE_VAULT,
                ),
            )
        self.solana_address = next(a.address for a in key.key.addresses if a.chain == SOLANA)
        rpc = self.solana_rpc()
        await rpc.call("requestAirdrop", self.solana_address, 100 * SOL)
        for _ in range(100):
            if int((await rpc.call("getBalance", self.solana_address))["value"]) >= 100 * SOL:
                break
            await asyncio.sleep(0.1)
        self.say(
            f"   vault-1's Ed25519 key generated in the HSM: {self.solana_address} on {SOLANA}"
            " (funded 100 SOL by an airdrop)"
        )

    def solana_rpc(self) -> JsonRpcClient:
        chains = self.stack.settings().get("chains", [])
        return JsonRpcClient(next(c["rpc_url"] for c in chains if c["name"] == SOLANA))

    def _rpc(self) -> JsonRpcClient:
        chains = self.stack.settings().get("chains", [])
        return JsonRpcClient(next(c["rpc_url"] for c in chains if c["name"] == CHAIN))

    def deposit_spec(self, eth: int, *, compounding: bool = False) -> tuple[IntentSpec, str]:
        fork = bytes.fromhex(HOODI_GENESIS_FORK_VERSION[2:])
        target = devnet_deposit(self.vault_address, eth * ETH, fork, compounding=compounding)
        return IntentSpec(Action.STAKE, CHAIN, "vault-1", eth * ETH, target), target.validator

    async def submit(self, spec: IntentSpec, key: str, who: str = "alice") -> Any:
        async with self.person(who).client(StakingClient) as staking:
            resp = await staking.call(
                "SubmitIntent", staking_pb2.SubmitIntentRequest(idempotency_key=key, spec=spec_to_pb(spec))
            )
        return resp.intent

    async def wait_for(self, intent_id: str, states: set[str], timeout: float = 120) -> Any:
        async with self.person("ops").client(StakingClient) as staking:
            async for r in staking.stream(
                "WatchIntent", staking_pb2.WatchIntentRequest(intent_id=intent_id), deadline=timeout
            ):
                if STATE_NAME[r.event.state] in states:
                    break
            return await staking.call("GetIntent", staking_pb2.GetIntentRequest(intent_id=intent_id))

    async def custos(self, who: str, *args: str) -> CliRun:
        """Runs the ``custos`` command line as ``who`` against this stack, in its own process."""
        env = {**self.stack.env(), "CUSTOS_STATE_DIR": str(self.stack.root.parent)}
        argv = ["--stack", self.stack.root.name, "--as", who, *args]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.cli.main",
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        out, err = await proc.communicate()
        shown = " ".join(["custos", *(_shown(Path(a)) if a.startswith("/") else a for a in argv)])
        return CliRun(shown, proc.returncode or 0, out.decode().strip(), err.decode().strip())

    async def approve(self, intent_id: str, who: str) -> CliRun:
        """``who`` approves with their key file through ``custos approve``."""
        return await self.custos(who, "approve", intent_id, "--key", str(self.person(who).key_file))

    async def run_intent(self, label: str, spec: IntentSpec, key: str, approvers: tuple[str, ...]) -> Any:
        intent = await self.submit(spec, key)
        self.say(f"== {label}: intent {intent.intent_id} submitted by alice")
        if intent.summary:  # what the chain says approvers should see (a vote's proposal, its weight)
            self.say(f"   approvers see: {intent.summary}")
        await self.wait_for(intent.intent_id, {"AWAITING_APPROVALS", "DENIED"})
        for who in approvers:
            done = await self.approve(intent.intent_id, who)
            self.say(f"   $ {done.shown}")
            if done.code != 0:
                raise FailedPrecondition(f"{done.shown} failed: {done.err or done.code}")
            self.say(f"   {done.out}")
        final = await self.wait_for(
            intent.intent_id, {"CONFIRMED", "FAILED", "REJECTED", "EXPIRED", "DENIED"}
        )
        self.timeline(final)
        return final

    def timeline(self, got: Any) -> None:
        for line in timeline_lines([to_json(e) for e in got.events]):
            self.say(f"   {line}")

    async def verify_audit(self) -> tuple[bool, int, Path]:
        async with self.person("carol").client(AuditClient) as audit:
            await audit.call("CreateCheckpoint", audit_pb2.CreateCheckpointRequest())
            result = await audit.call("VerifyChain", audit_pb2.VerifyChainRequest())
            out = Path(tempfile.mkdtemp(prefix="custos-audit-")) / "audit.jsonl"
            with out.open("w") as f:
                async for line in audit.stream("ExportEvents", audit_pb2.ExportEventsRequest(), deadline=60):
                    f.write(line.line + "\n")
        return bool(result.ok), int(result.records_checked), out


async def seed(stack: Stack, say: Callable[[str], None] = print) -> Demo:
    """``custos dev up --seed``: the demo's approvers (keys in ``approver-keys/``), policy and a
    funded vault-1 on a stack just brought up."""
    demo = Demo(stack, say)
    say("== seeding: the demo's approvers, its policy and a funded vault-1")
    await demo.setup()
    say(f"   approver key files: {stack.root / 'approver-keys'}/NAME.pem (unencrypted: a dev stack's)")
    return demo


async def run_scenario(stack: Stack, say: Callable[[str], None] = print) -> dict[str, str]:
    """The demo's staking story; returns each intent's final state by label."""
    from services.audit.verify import verify_export

    demo = Demo(stack, say)
    say("== setting up approvers, the policy and the vault key")
    await demo.setup()
    results: dict[str, str] = {}
    stake, pubkey = demo.deposit_spec(32)
    final = await demo.run_intent("STAKE 32 ETH", stake, "demo-stake-1", ("olivia", "oscar"))
    results["stake"] = STATE_NAME[final.intent.state]
    unstake = IntentSpec(Action.UNSTAKE, CHAIN, "vault-1", 0, UnstakeTarget(pubkey))
    final = await demo.run_intent("UNSTAKE (full exit)", unstake, "demo-unstake-1", ("oscar", "otto"))
    results["unstake"] = STATE_NAME[final.intent.state]
    _, target = demo.deposit_spec(32)
    restake = IntentSpec(Action.RESTAKE, CHAIN, "vault-1", 0, RestakeTarget(pubkey, target))
    final = await demo.run_intent("RESTAKE (consolidation)", restake, "demo-restake-1", ("olivia", "otto"))
    results["restake"] = STATE_NAME[final.intent.state]
    if demo.cosmos_address:
        results.update(await cosmos_scenario(demo))
    if demo.solana_address:
        results.update(await solana_scenario(demo))

    say("== refused: alice approves her own intent")
    spec, _ = demo.deposit_spec(32)
    intent = await demo.submit(spec, "demo-self-approval")
    await demo.wait_for(intent.intent_id, {"AWAITING_APPROVALS"})
    done = await demo.approve(intent.intent_id, "alice")
    say(f"   $ {done.shown}")
    say(f"   {done.err or done.out} (exit code {done.code})")
    results["self_approval"] = "REFUSED" if done.code != 0 else "ACCEPTED"
    say("== refused: an over-limit amount (2048 ETH)")
    spec, _ = demo.deposit_spec(2048, compounding=True)
    intent = await demo.submit(spec, "demo-over-limit")
    final = await demo.wait_for(intent.intent_id, {"DENIED", "AWAITING_APPROVALS"})
    results["over_limit"] = STATE_NAME[final.intent.state]
    say(f"   {results['over_limit']}: {final.intent.reason}")

    say("== refused: one admin alone plants a key for an approver")
    mallory_key = ed25519.Ed25519PrivateKey.generate()
    async with demo.person("dave").client(PolicyClient) as as_dave:
        planted = await as_dave.propose_change(
            AddApproverKey("olivia", SignatureScheme.ED25519, public_key_der(mallory_key)),
            demo.person("dave").key,
            proposer="dave",
        )
    change_id = planted.request.change_id
    say(f"   dave proposed {change_id}: {planted.summary}")
    done = await demo.custos(
        "dave", "admin", "approve", change_id, "--key", str(demo.person("dave").key_file)
    )
    say(f"   $ {done.shown}")
    say(f"   {done.err or done.out} (exit code {done.code})")
    results["lone_admin"] = "REFUSED" if done.code != 0 else "ACCEPTED"

    say("== audit trail")
    ok, count, export = await demo.verify_audit()
    offline = verify_export(export)
    say(f"   server-side verification: {'OK' if ok else 'FAILED'} ({count} records)")
    say(f"   offline verification of {export}: {'OK' if offline.ok else 'FAILED: ' + offline.reason}")
    results["audit"] = "OK" if ok and offline.ok else "FAILED"
    return results


async def cosmos_scenario(demo: Demo) -> dict[str, str]:
    """The Cosmos devnet's part: delegate, redelegate, undelegate through unbonding, vote on a
    proposal with the vault's bonded weight, claim rewards; each to CONFIRMED."""
    from services.cli.devstack import cosmos_devnet

    net = cosmos_devnet(demo.stack)
    v1, v2 = net.genesis.validators[:2]
    results: dict[str, str] = {}
    steps = (
        (
            "cosmos_stake",
            "DELEGATE 100 INJ",
            IntentSpec(Action.STAKE, COSMOS, "vault-1", 100 * INJ, StakeTarget(v1)),
        ),
        (
            "cosmos_restake",
            "REDELEGATE 40 INJ to validator 2",
            IntentSpec(Action.RESTAKE, COSMOS, "vault-1", 40 * INJ, RestakeTarget(v1, v2)),
        ),
        (
            "cosmos_unstake",
            "UNDELEGATE 30 INJ (through the chain's unbonding)",
            IntentSpec(Action.UNSTAKE, COSMOS, "vault-1", 30 * INJ, UnstakeTarget(v1)),
        ),
    )
    for label, title, spec in steps:
        final = await demo.run_intent(f"{COSMOS}: {title}", spec, f"demo-{label}", ("olivia", "oscar"))
        results[label] = STATE_NAME[final.intent.state]
    proposal = await asyncio.to_thread(
        net.submit_text_proposal, "Fund the validator set's monitoring", "A devnet text proposal."
    )
    demo.say(f"== {COSMOS}: proposal {proposal} is open for votes (20 s voting period)")
    vote = IntentSpec(Action.VOTE, COSMOS, "vault-1", 0, VoteTarget(proposal, VoteOption.YES))
    final = await demo.run_intent(
        f"{COSMOS}: VOTE YES on proposal {proposal}", vote, "demo-cosmos-vote", ("olivia", "oscar")
    )
    results["cosmos_vote"] = STATE_NAME[final.intent.state]
    claim = IntentSpec(Action.CLAIM_REWARDS, COSMOS, "vault-1", 0, ClaimRewardsTarget(v2))
    final = await demo.run_intent(
        f"{COSMOS}: CLAIM_REWARDS from validator 2", claim, "demo-cosmos-claim", ("olivia", "oscar")
    )
    results["cosmos_claim"] = STATE_NAME[final.intent.state]
    return results


async def solana_scenario(demo: Demo) -> dict[str, str]:
    """The Solana devnet's part: a stake account created, initialized and delegated in one transaction;
    then deactivated, its cooldown epoch waited out and withdrawn back to the vault (two signed steps of
    one approved intent). The devnet's epochs advance only when asked (a cluster's last about two days):
    the demo asks once the intent waits for the cooldown."""
    from services.cli.devstack import solana_ready

    vote = solana_ready(demo.stack)["vote_accounts"][0]
    seed = TargetParams.of({"seed": b"demo-stake-1"})
    results: dict[str, str] = {}
    stake = IntentSpec(Action.STAKE, SOLANA, "vault-1", 3 * SOL, StakeTarget(vote, params=seed))
    final = await demo.run_intent(f"{SOLANA}: STAKE 3 SOL", stake, "demo-solana-stake", ("olivia", "oscar"))
    results["solana_stake"] = STATE_NAME[final.intent.state]
    unstake = IntentSpec(Action.UNSTAKE, SOLANA, "vault-1", 0, UnstakeTarget(vote, params=seed))
    advance = asyncio.create_task(_advance_epoch_when_cooling_down(demo))
    try:
        final = await demo.run_intent(
            f"{SOLANA}: UNSTAKE (deactivate, cooldown epoch, withdraw)",
            unstake,
            "demo-solana-unstake",
            ("olivia", "oscar"),
        )
    finally:
        advance.cancel()
    results["solana_unstake"] = STATE_NAME[final.intent.state]
    return results


async def _advance_epoch_when_cooling_down(demo: Demo) -> None:
    """Asks the devnet for the next epoch once a Solana intent waits for it (UNBONDING)."""
    while True:
        await asyncio.sleep(0.5)
        async with demo.person("ops").client(StakingClient) as staking:
            found = await staking.call("ListIntents", staking_pb2.ListIntentsRequest(page_size=50))
        waiting = [i for i in found.intents if STATE_NAME[i.state] == "UNBONDING" and i.spec.chain == SOLANA]
        if waiting:
            epoch = await demo.solana_rpc().call("custos_advanceEpoch")
            demo.say(
                f"   (the intent waits for its cooldown epoch: the devnet moves to epoch {epoch['epoch']})"
            )
            return
