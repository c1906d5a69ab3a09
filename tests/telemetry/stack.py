"""An in-process custos stack for tests: the real policy, signer, chain and staking services and
the real worker, all in the test's process, so one OpenTelemetry provider sees every span.

Each service is assembled by its own ``main.build`` and served over mTLS on a free
port, as ``custos serve`` does (:func:`services.runtime.runner.start_service`); the
worker is the one ``custos serve worker`` runs (:func:`workflows.staking.worker.build`).
Around them the caller's fixtures give a Temporal server, the SoftHSM token, anvil
and a migrated database. The audit service is left out: nothing in the staking flow
calls it (each component writes its audit entries to the database itself); ``audit_token``
serves it too, on a token of its own (it refuses one holding vault keys).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from services.audit.main import AuditSettings
from services.chain.devnet import Devnet
from services.chain.main import ChainSettings
from services.families.config import HOODI_GENESIS_FORK_VERSION
from services.families.ethereum.deposit import generate_deposit_data, stake_target
from services.pb.custos.policy.v1 import policy_pb2
from services.pb.custos.signer.v1 import signer_pb2
from services.pb.custos.staking.v1 import staking_pb2
from services.policy.client import PolicyClient
from services.policy.domain import SignatureScheme
from services.policy.evidence import public_key_der, sign_approval
from services.policy.governance import ActivatePolicy, AdminKey, Change, RegisterApprover, trust_root_yaml
from services.policy.main import PolicySettings
from services.runtime.client import BaseClient, open_channel
from services.runtime.convert import approval_to_pb, spec_to_pb
from services.runtime.intent import Action, Decision, IntentSpec
from services.runtime.pki import ensure_service_certs, issue
from services.runtime.ports import free_port
from services.runtime.runner import start_service
from services.runtime.settings import ServiceSettings, TLSSettings
from services.signer.client import SignerClient
from services.signer.main import SignerSettings
from services.signer.softhsm import TokenConfig
from services.staking.client import StakingClient
from services.staking.main import StakingSettings
from workflows.staking import worker as worker_main

CHAIN = "ethereum-devnet"
VAULT = "vault-1"
ETH = 10**18
SERVICES = ("policy", "signer", "chain", "staking")
PEOPLE = {
    "alice": ("initiator",),
    "olivia": ("approver",),
    "oscar": ("approver",),
    "dave": ("policy-admin",),
    "erin": ("policy-admin",),
    "ops": ("operator",),
}
#: The stack's trust root: dave proposes each governed change, erin approves it.
ADMINS = ("dave", "erin")
APPROVERS = ("olivia", "oscar")
POLICY = f"""\
format: custos.policy/v1
default: deny
rules:
  - id: eth-2-of-2
    match: {{action: [STAKE, UNSTAKE, RESTAKE], chain: [{CHAIN}]}}
    require:
      groups: [{{name: operations, threshold: 2, approvers: [{", ".join(APPROVERS)}]}}]
      expiry: 24h
"""


@dataclass
class InProcessStack:
    root: Path
    devnet: Devnet
    keys: dict[str, ed25519.Ed25519PrivateKey] = field(default_factory=dict)
    admin_keys: dict[str, ed25519.Ed25519PrivateKey] = field(default_factory=dict)
    endpoints: dict[str, str] = field(default_factory=dict)
    #: The roles of every RPC served (``/package.Service/Rpc``), as the servers enforce them.
    roles: dict[str, frozenset[str]] = field(default_factory=dict)
    vault_address: str = ""

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    def client(self, cls: type[BaseClient], person: str) -> Any:
        """A typed client of ``cls``'s service calling as ``person`` (their certificate)."""
        tls = TLSSettings(pki_dir=self.pki, ca_cert=self.pki / "ca.crt")
        channel = open_channel(
            self.endpoints[cls.service], tls, cert=self.pki / f"{person}.crt", key=self.pki / f"{person}.key"
        )
        return cls(channel, deadline=15)

    async def govern(self, change: Change) -> Any:
        """A governed change as the admins make it: dave proposes, erin approves (a revocation
        applies on dave's signature alone). Returns the change as it stands."""
        async with self.client(PolicyClient, "dave") as as_dave:
            got = await as_dave.propose_change(change, self.admin_keys["dave"], proposer="dave")
        if got.state == policy_pb2.CHANGE_STATE_PROPOSED:
            async with self.client(PolicyClient, "erin") as as_erin:
                got = await as_erin.decide_change(
                    got.request.change_id, self.admin_keys["erin"], admin="erin", decision=Decision.APPROVE
                )
        return got

    async def setup(self) -> None:
        """Approvers and their keys, the policy, and the vault's key in the HSM, funded on anvil."""
        for name in APPROVERS:
            self.keys[name] = ed25519.Ed25519PrivateKey.generate()
            await self.govern(
                RegisterApprover(
                    name,
                    name.title(),
                    ("operations",),
                    SignatureScheme.ED25519,
                    public_key_der(self.keys[name]),
                )
            )
        async with self.client(PolicyClient, "dave") as as_dave:
            proposed = await as_dave.call("ProposePolicy", policy_pb2.ProposePolicyRequest(document=POLICY))
        await self.govern(ActivatePolicy(proposed.policy.version, ""))
        async with self.client(SignerClient, "ops") as signer:
            key = await signer.call(
                "CreateKey",
                signer_pb2.CreateKeyRequest(
                    vault_id=VAULT,
                    algorithm=signer_pb2.KEY_ALGORITHM_SECP256K1,
                    purpose=signer_pb2.KEY_PURPOSE_VAULT,
                ),
            )
        self.vault_address = next(a.address for a in key.key.addresses if a.chain == CHAIN)
        await asyncio.to_thread(self.devnet.fund, self.vault_address, 100 * ETH)

    def stake_spec(self, eth: int = 32) -> IntentSpec:
        gen = generate_deposit_data(
            withdrawal_address=bytes.fromhex(self.vault_address[2:]),
            amount_wei=eth * ETH,
            genesis_fork_version=bytes.fromhex(HOODI_GENESIS_FORK_VERSION[2:]),
        )
        return IntentSpec(Action.STAKE, CHAIN, VAULT, eth * ETH, stake_target(gen.data))

    async def submit(self, spec: IntentSpec, who: str = "alice") -> Any:
        async with self.client(StakingClient, who) as staking:
            resp = await staking.call(
                "SubmitIntent",
                staking_pb2.SubmitIntentRequest(idempotency_key=uuid.uuid4().hex, spec=spec_to_pb(spec)),
            )
        return resp.intent

    async def approve(self, intent: Any, who: str, *, as_person: str | None = None) -> Any:
        """``who`` signs an approval; ``as_person`` (default ``who``) sends it."""
        key = self.keys.get(who) or ed25519.Ed25519PrivateKey.generate()
        approval = sign_approval(
            key,
            approver_id=who,
            intent_digest=intent.digest,
            policy_version=intent.policy_version,
            decision=Decision.APPROVE,
            expires_at=datetime.now(UTC) + timedelta(hours=1),
        )
        async with self.client(StakingClient, as_person or who) as staking:
            return await staking.call(
                "ApproveIntent",
                staking_pb2.ApproveIntentRequest(
                    intent_id=intent.intent_id, approval=approval_to_pb(approval)
                ),
            )

    async def wait_for(self, intent_id: str, states: set[str], timeout: float = 60) -> Any:
        """Polls GetIntent (as ops) until the intent is in one of ``states``; returns the response."""
        names = {f"INTENT_STATE_{s}" for s in states}
        deadline = asyncio.get_running_loop().time() + timeout
        async with self.client(StakingClient, "ops") as staking:
            while True:
                got = await staking.call("GetIntent", staking_pb2.GetIntentRequest(intent_id=intent_id))
                if staking_pb2.IntentState.Name(got.intent.state) in names:
                    return got
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(
                        f"{intent_id} still {staking_pb2.IntentState.Name(got.intent.state)}"
                        f" after {timeout:.0f}s; wanted {sorted(states)}"
                    )
                await asyncio.sleep(0.2)


@asynccontextmanager
async def in_process_stack(
    root: Path,
    *,
    database_url: str,
    temporal_address: str,
    token: TokenConfig,
    devnet: Devnet,
    audit_token: TokenConfig | None = None,
) -> AsyncIterator[InProcessStack]:
    """Starts the services and the worker in this process; stops them all on the way out."""
    pki = root / "pki"
    ensure_service_certs(pki)
    for person, roles in PEOPLE.items():
        issue(pki, person, roles)
    endpoints = {name: f"127.0.0.1:{free_port()}" for name in (*SERVICES, "audit")}
    admin_keys = {name: ed25519.Ed25519PrivateKey.generate() for name in ADMINS}
    trust_file = root / "trust.yaml"
    trust_file.write_text(
        trust_root_yaml(
            [AdminKey(n, SignatureScheme.ED25519, public_key_der(k)) for n, k in admin_keys.items()], 1
        )
    )
    common: dict[str, Any] = {
        "state_dir": root,
        "trust_file": trust_file,
        "database_url": database_url,
        "endpoints": endpoints,
        "temporal": {"address": temporal_address, "task_queue": f"custos-{uuid.uuid4().hex[:8]}"},
    }
    chains = [devnet.chain_config()]
    # a TLSSettings each: the settings fill in the service's own certificate paths
    settings: dict[str, ServiceSettings] = {
        "policy": PolicySettings(**common, tls=TLSSettings(pki_dir=pki), chains=chains),
        "signer": SignerSettings(
            **common,
            tls=TLSSettings(pki_dir=pki),
            hsm=token.hsm_settings(),
            chains=chains,
            # the session's token outlives this stack's database: its ledger head apart
            ledger_head_label=f"stack-ledger-{uuid.uuid4().hex[:12]}",
        ),
        "chain": ChainSettings(**common, tls=TLSSettings(pki_dir=pki), chains=chains),
        "staking": StakingSettings(**common, tls=TLSSettings(pki_dir=pki)),
        "audit": AuditSettings(
            **common,
            tls=TLSSettings(pki_dir=pki),
            hsm=(audit_token or token).hsm_settings(),
            # the token outlives this stack's database: remember this trail's head apart
            checkpoint_head_label=f"stack-head-{uuid.uuid4().hex[:12]}",
        ),
    }
    served = (*SERVICES, "audit") if audit_token is not None else SERVICES
    declared: dict[str, frozenset[str]] = {}
    worker_settings = worker_main.WorkerSettings(**common, tls=TLSSettings(pki_dir=pki))
    async with AsyncExitStack() as exits:
        for name in served:
            running, component = await start_service(name, settings[name])
            for binding in component.bindings:
                declared.update(binding.roles())
            exits.push_async_callback(component.close)
            exits.push_async_callback(running.stop, 0.5)
        worker, close_worker = await worker_main.build(worker_settings)
        exits.push_async_callback(close_worker)
        await exits.enter_async_context(worker)
        yield InProcessStack(root, devnet, endpoints=endpoints, admin_keys=admin_keys, roles=declared)
