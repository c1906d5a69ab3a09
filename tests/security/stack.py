"""The real custos stack the insiders attack, and the evidence each attack is judged by.

One stack per database (SQLite and PostgreSQL), started once for the whole directory
(``conftest.py``): the policy, signer, chain and staking services, each built by its
own ``main.build`` and served over mTLS on a free port as ``custos serve`` does, and
the real worker, all in this process; a Temporal dev server of its own; the session's
SoftHSM token and anvil. Any service can be restarted in place (the signer, after its
database was rewritten).

This is the one module that knows how the stack is assembled, so it is the one to
adapt when the stack changes shape (see the README of this directory: the worker's
``RecordTransition`` RPC, per-service PostgreSQL roles, nonce releases).

:class:`SecurityStack` starts and stops it and plays the honest people (admins,
approvers, the initiator); :meth:`SecurityStack.evidence` and :class:`Evidence` say
whether an attack moved anything: signing records, the vault's nonce on anvil, and
the audit records written meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import Engine, func, select, text
from temporalio.client import Client
from temporalio.worker import Worker

from services.audit.models import AuditRecordRow
from services.chain.devnet import Devnet
from services.chain.main import ChainSettings
from services.families.config import HOODI_GENESIS_FORK_VERSION
from services.families.ethereum.deposit import generate_deposit_data, stake_target
from services.pb.custos.policy.v1 import policy_pb2
from services.pb.custos.signer.v1 import signer_pb2
from services.pb.custos.staking.v1 import staking_pb2
from services.policy.client import PolicyClient
from services.policy.domain import SignatureScheme, key_id_for
from services.policy.evidence import public_key_der, sign_approval
from services.policy.governance import (
    ActivatePolicy,
    AdminKey,
    Change,
    RegisterApprover,
    RevokeApproverKey,
    trust_root_yaml,
)
from services.policy.main import PolicySettings
from services.runtime.client import BaseClient, open_channel
from services.runtime.convert import approval_to_pb, spec_to_pb, ts_to_datetime
from services.runtime.db import make_engine
from services.runtime.intent import (
    Action,
    Approval,
    Decision,
    IntentSpec,
    RestakeTarget,
    UnstakeTarget,
)
from services.runtime.pki import ensure_service_certs, issue
from services.runtime.ports import free_port
from services.runtime.runner import Component, start_service
from services.runtime.server import RunningServer
from services.runtime.settings import ServiceSettings, TLSSettings
from services.signer.client import SignerClient
from services.signer.main import SignerSettings
from services.signer.models import SigningRecord
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
    "otto": ("approver",),
    "paula": ("approver",),
    "quinn": ("approver",),
    "dave": ("policy-admin",),
    "erin": ("policy-admin",),
    "ops": ("operator",),
    "carol": ("compliance",),
}
#: The trust root: each governed change needs its proposer and one other of these.
ADMINS = ("dave", "erin")
#: The operations group: any two of them approve an intent.
APPROVERS = ("olivia", "oscar", "otto", "paula", "quinn")
#: Per vault per day. The first 32 ETH stake fits, the 40 ETH one after it does not.
VELOCITY_ETH = 70
CAP_ETH = 64
POLICY = f"""\
format: custos.policy/v1
default: deny
rules:
  - id: cap
    match: {{amount: {{min: "{CAP_ETH * ETH + 1}"}}}}
    deny: above the {CAP_ETH} ETH cap per intent
  - id: eth-2-of-5
    match: {{action: [STAKE, UNSTAKE, RESTAKE], chain: [{CHAIN}]}}
    limits:
      velocity: {{window: 24h, max: "{VELOCITY_ETH * ETH}"}}
    require:
      groups: [{{name: operations, threshold: 2, approvers: [{", ".join(APPROVERS)}]}}]
      expiry: 24h
"""
# The tables the attacks write, named once (on PostgreSQL :meth:`SecurityStack.sql` reaches
# them in their services' schemas).
#: The governance log, append-only through triggers (policy_0003).
LOG = "policy_governance_log"
APPROVER_KEYS = "policy_approver_keys"
POLICY_VERSIONS = "policy_versions"
POLICY_VELOCITY = "policy_velocity"
SIGNING_RECORDS = "signer_signing_records"
SIGNER_KEYS = "signer_keys"
#: The vault holds enough for every attack to be about custos, not the balance.
VAULT_FUNDS = 5_000 * ETH
#: A failed intent's nonce goes to the next one this soon (600 s in production).
NONCE_RELEASE_SECONDS = 5


def validator_pubkey(seed: str) -> str:
    """A 48-byte BLS-shaped validator key named by ``seed`` (anvil checks no beacon state)."""
    raw = (seed.encode() * 48)[:48]
    return "0x" + raw.hex()


@dataclass(frozen=True)
class Evidence:
    """What the stack holds at one moment: enough to tell whether an attack moved anything."""

    records: int
    nonce: int
    audit_seq: int


@dataclass
class Real:
    """An intent submitted through the staking service, and approvals its approvers signed."""

    intent: Any
    spec: IntentSpec
    approvals: list[Approval] = field(default_factory=list)

    @property
    def id(self) -> str:
        return str(self.intent.intent_id)

    @property
    def submitted_at(self) -> datetime:
        return ts_to_datetime(self.intent.created_at, "intent.created_at")

    @property
    def step(self) -> str:
        """The one step an Ethereum action has, as the workflow names it."""
        return self.spec.action.value.lower()


@dataclass
class SecurityStack:
    root: Path
    database_url: str
    temporal_address: str
    token: TokenConfig
    devnet: Devnet
    endpoints: dict[str, str] = field(default_factory=dict)
    approver_keys: dict[str, ed25519.Ed25519PrivateKey] = field(default_factory=dict)
    admin_keys: dict[str, ed25519.Ed25519PrivateKey] = field(default_factory=dict)
    vault_address: str = ""
    task_queue: str = ""
    #: What honest people did before the attacks (``tests.security.world``).
    world: Any = None
    _settings: dict[str, ServiceSettings] = field(default_factory=dict)
    _running: dict[str, tuple[RunningServer, Component]] = field(default_factory=dict)
    _engine: Engine | None = None
    _temporal: Client | None = None

    # --- assembling -----------------------------------------------------------------------

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def dialect(self) -> str:
        return "postgresql" if self.database_url.startswith("postgresql") else "sqlite"

    @property
    def engine(self) -> Engine:
        """An engine on the stack's database: what the worker host's database URL gives anyone."""
        if self._engine is None:
            self._engine = make_engine(self.database_url)
        return self._engine

    def _configure(self) -> None:
        ensure_service_certs(self.pki)
        for person, roles in PEOPLE.items():
            issue(self.pki, person, roles)
        self.endpoints = {name: f"127.0.0.1:{free_port()}" for name in (*SERVICES, "audit")}
        self.admin_keys = {name: ed25519.Ed25519PrivateKey.generate() for name in ADMINS}
        trust_file = self.root / "trust.yaml"
        trust_file.write_text(
            trust_root_yaml(
                [AdminKey(n, SignatureScheme.ED25519, public_key_der(k)) for n, k in self.admin_keys.items()],
                1,
            )
        )
        self.task_queue = f"custos-sec-{uuid.uuid4().hex[:8]}"
        common: dict[str, Any] = {
            "state_dir": self.root,
            "trust_file": trust_file,
            "database_url": self.database_url,
            "endpoints": self.endpoints,
            "temporal": {"address": self.temporal_address, "task_queue": self.task_queue},
        }
        chains = [self.devnet.chain_config(nonce_release_seconds=NONCE_RELEASE_SECONDS)]
        self._settings = {
            "policy": PolicySettings(**common, tls=TLSSettings(pki_dir=self.pki), chains=chains),
            "signer": SignerSettings(
                **common,
                tls=TLSSettings(pki_dir=self.pki),
                hsm=self.token.hsm_settings(),
                chains=chains,
                # the session's token outlives this stack's database: its ledger head apart
                ledger_head_label=f"stack-ledger-{uuid.uuid4().hex[:12]}",
            ),
            "chain": ChainSettings(**common, tls=TLSSettings(pki_dir=self.pki), chains=chains),
            "staking": StakingSettings(**common, tls=TLSSettings(pki_dir=self.pki)),
            "worker": worker_main.WorkerSettings(**common, tls=TLSSettings(pki_dir=self.pki)),
        }

    async def start(self, name: str) -> None:
        self._running[name] = await start_service(name, self._settings[name])

    async def stop(self, name: str) -> None:
        running, component = self._running.pop(name)
        await running.stop(0.5)
        await component.close()

    async def restart(self, name: str) -> None:
        """Stops ``name`` and starts it afresh on the same port (a new process would do no more:
        nothing it verified survives but what it keeps outside the database)."""
        await self.stop(name)
        await self.start(name)

    @asynccontextmanager
    async def second_signer(self) -> AsyncIterator[str]:
        """Another signer process of this installation (same database, token, ledger label and
        trust file) on a port of its own, as one scales the signer; yields its address."""
        settings = self._settings["signer"].model_copy(update={"listen": f"127.0.0.1:{free_port()}"})
        running, component = await start_service("signer", settings)
        try:
            yield settings.listen
        finally:
            await running.stop(0.5)
            await component.close()

    def signer_at(self, address: str, person: str) -> SignerClient:
        """A signer client for the process at ``address`` (see :meth:`second_signer`)."""
        tls = TLSSettings(pki_dir=self.pki, ca_cert=self.pki / "ca.crt")
        channel = open_channel(address, tls, cert=self.pki / f"{person}.crt", key=self.pki / f"{person}.key")
        return SignerClient(channel, deadline=15)

    # --- calling ----------------------------------------------------------------------------

    def client(self, cls: type[BaseClient], person: str) -> Any:
        """A typed client of ``cls``'s service calling with ``person``'s certificate (a service's
        certificate for ``worker``, ``staking``...)."""
        tls = TLSSettings(pki_dir=self.pki, ca_cert=self.pki / "ca.crt")
        channel = open_channel(
            self.endpoints[cls.service], tls, cert=self.pki / f"{person}.crt", key=self.pki / f"{person}.key"
        )
        return cls(channel, deadline=15)

    async def temporal(self) -> Client:
        """A client of the stack's Temporal frontend, as anyone who can reach its address has."""
        if self._temporal is None:
            self._temporal = await Client.connect(self.temporal_address)
        return self._temporal

    # --- the honest people --------------------------------------------------------------------

    async def govern(self, change: Change) -> Any:
        """``change`` proposed by dave and approved by erin, as the admin quorum does."""
        async with self.client(PolicyClient, "dave") as dave, self.client(PolicyClient, "erin") as erin:
            proposed = await dave.propose_change(change, self.admin_keys["dave"], proposer="dave")
            return await erin.decide_change(
                proposed.request.change_id, self.admin_keys["erin"], admin="erin", decision=Decision.APPROVE
            )

    async def revoke(self, approver: str, reason: str = "key reported lost", *, key: Any = None) -> Any:
        """One admin revokes ``approver``'s key (or ``key``, another of theirs): it takes power away,
        so no quorum is needed."""
        key_id = key_id_for(public_key_der(key or self.approver_keys[approver]))
        async with self.client(PolicyClient, "dave") as dave:
            return await dave.propose_change(
                RevokeApproverKey(approver, key_id, reason), self.admin_keys["dave"], proposer="dave"
            )

    async def setup(self) -> None:
        """The approvers, the active policy, and the vault's key in the HSM, funded on anvil."""
        for name in APPROVERS:
            self.approver_keys[name] = ed25519.Ed25519PrivateKey.generate()
            await self.govern(
                RegisterApprover(
                    name,
                    name.title(),
                    ("operations",),
                    SignatureScheme.ED25519,
                    public_key_der(self.approver_keys[name]),
                )
            )
        async with self.client(PolicyClient, "dave") as dave:
            proposed = await dave.call("ProposePolicy", policy_pb2.ProposePolicyRequest(document=POLICY))
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
        await asyncio.to_thread(self.devnet.fund, self.vault_address, VAULT_FUNDS)

    def stake_spec(self, eth: int = 32, *, withdrawal_to: str | None = None) -> IntentSpec:
        """A deposit with real deposit data whose credentials point at ``withdrawal_to`` (the vault)."""
        gen = generate_deposit_data(
            withdrawal_address=bytes.fromhex((withdrawal_to or self.vault_address)[2:]),
            amount_wei=eth * ETH,
            genesis_fork_version=bytes.fromhex(HOODI_GENESIS_FORK_VERSION[2:]),
            compounding=eth != 32,  # 0x01 credentials take exactly 32 ETH
        )
        return IntentSpec(Action.STAKE, CHAIN, VAULT, eth * ETH, stake_target(gen.data))

    @staticmethod
    def unstake_spec(validator: str) -> IntentSpec:
        return IntentSpec(Action.UNSTAKE, CHAIN, VAULT, 0, UnstakeTarget(validator))

    @staticmethod
    def restake_spec(source: str, target: str) -> IntentSpec:
        return IntentSpec(Action.RESTAKE, CHAIN, VAULT, 0, RestakeTarget(source, target))

    async def submit(self, spec: IntentSpec, who: str = "alice") -> Any:
        """SubmitIntent as ``who``; returns the intent once it awaits approvals (or has ended)."""
        async with self.client(StakingClient, who) as staking:
            resp = await staking.call(
                "SubmitIntent",
                staking_pb2.SubmitIntentRequest(idempotency_key=uuid.uuid4().hex, spec=spec_to_pb(spec)),
            )
        return (await self.wait_for(resp.intent.intent_id, {"AWAITING_APPROVALS", "DENIED"})).intent

    def approval(
        self, intent: Any, who: str, *, expires_at: datetime | None = None, key: Any = None
    ) -> Approval:
        """``who``'s approval of ``intent``, signed with their key (or ``key``), as their CLI signs it."""
        if expires_at is None:
            submitted = ts_to_datetime(intent.created_at, "intent.created_at")
            expires_at = min(datetime.now(UTC) + timedelta(hours=1), submitted + timedelta(hours=24))
        return sign_approval(
            key or self.approver_keys[who],
            approver_id=who,
            intent_digest=intent.digest,
            policy_version=intent.policy_version,
            decision=Decision.APPROVE,
            expires_at=expires_at,
        )

    async def approve(self, intent: Any, who: str, approval: Approval | None = None) -> Any:
        """ApproveIntent as ``who`` (their certificate), with their approval or ``approval``."""
        approval = approval or self.approval(intent, who)
        async with self.client(StakingClient, who) as staking:
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
                await asyncio.sleep(0.1)

    # --- evidence ------------------------------------------------------------------------------

    async def vault_nonce(self) -> int:
        """The vault's next nonce on anvil, counting what waits in its pool."""
        raw = await self.devnet.rpc.call("eth_getTransactionCount", self.vault_address, "pending")
        return int(raw, 16)

    def _read(self, statement: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(statement).scalar_one()

    async def evidence(self) -> Evidence:
        records = await asyncio.to_thread(self._read, select(func.count()).select_from(SigningRecord))
        seq = await asyncio.to_thread(self._read, select(func.coalesce(func.max(AuditRecordRow.sequence), 0)))
        return Evidence(records=int(records), nonce=await self.vault_nonce(), audit_seq=int(seq))

    def audit_since(self, before: Evidence, action: str | None = None) -> list[dict[str, Any]]:
        """The audit records written after ``before`` (``action`` only), oldest first."""
        q = select(AuditRecordRow).where(AuditRecordRow.sequence > before.audit_seq)
        if action is not None:
            q = q.where(AuditRecordRow.action == action)
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(AuditRecordRow.sequence)).mappings().all()
        return [{**dict(r), "payload": json.loads(r["payload_json"])} for r in rows]

    def sql(self, statement: str, params: Mapping[str, Any] | None = None) -> Any:
        """Plain SQL in its own transaction, as the holder of the database URL can run it."""
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":  # each service's tables sit in a schema of its name
                conn.execute(text("SET LOCAL search_path TO policy, signer, chain, staking, audit, public"))
            result = conn.execute(text(statement), dict(params or {}))
            return result.all() if result.returns_rows else result.rowcount

    @contextmanager
    def log_unlocked(self) -> Iterator[None]:
        """The governance log's append-only triggers off, as the database owner can turn them off."""
        triggers = (
            self.sql(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :t", {"t": LOG}
            )
            if self.dialect == "sqlite"
            else []
        )
        if self.dialect == "sqlite":
            for name, _ in triggers:
                self.sql(f'DROP TRIGGER "{name}"')
        else:
            self.sql(f"ALTER TABLE {LOG} DISABLE TRIGGER USER")
        try:
            yield
        finally:
            if self.dialect == "sqlite":
                for _, create in triggers:
                    self.sql(create)
            else:
                self.sql(f"ALTER TABLE {LOG} ENABLE TRIGGER USER")

    @contextmanager
    def log_inserts_swallowed(self) -> Iterator[list[Any]]:
        """Inserts into the governance log turned into no-ops by a trigger, as the database owner
        can; what they would have inserted is kept aside, and given (as :meth:`log_rows` rows)
        in the list this yields once the trigger is dropped again."""
        columns = "seq, change_id, prev_hash, hash, entry, applied_at"
        new = ", ".join(f"NEW.{c.strip()}" for c in columns.split(","))
        if self.dialect == "sqlite":
            self.sql(f"CREATE TABLE swallowed AS SELECT {columns} FROM {LOG} WHERE 0")
            self.sql(
                f"CREATE TRIGGER swallow BEFORE INSERT ON {LOG} BEGIN "
                f"INSERT INTO swallowed ({columns}) VALUES ({new}); SELECT RAISE(IGNORE); END"
            )
        else:
            self.sql(f"CREATE TABLE policy.swallowed AS SELECT {columns} FROM {LOG} WITH NO DATA")
            self.sql(
                "CREATE FUNCTION policy.swallow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"INSERT INTO policy.swallowed ({columns}) VALUES ({new}); RETURN NULL; END $$"
            )
            self.sql(
                f"CREATE TRIGGER swallow BEFORE INSERT ON {LOG} "
                "FOR EACH ROW EXECUTE FUNCTION policy.swallow()"
            )
        swallowed: list[Any] = []
        try:
            yield swallowed
        finally:
            if self.dialect == "sqlite":
                self.sql("DROP TRIGGER swallow")
            else:
                self.sql(f"DROP TRIGGER swallow ON {LOG}")
                self.sql("DROP FUNCTION policy.swallow()")
            swallowed += self.sql(f"SELECT {columns} FROM swallowed ORDER BY seq")
            self.sql("DROP TABLE swallowed")

    def log_rows(self) -> list[Any]:
        """The governance log as stored: (seq, change_id, prev_hash, hash, entry, applied_at) rows."""
        return list(
            self.sql(f"SELECT seq, change_id, prev_hash, hash, entry, applied_at FROM {LOG} ORDER BY seq")
        )

    def put_log_row(self, row: Any) -> None:
        """Inserts a log row (one of :meth:`log_rows`, or a mapping of its columns)."""
        self.sql(
            f"INSERT INTO {LOG} (seq, change_id, prev_hash, hash, entry, applied_at) "
            "VALUES (:seq, :change_id, :prev_hash, :hash, :entry, :applied_at)",
            dict(row._mapping) if hasattr(row, "_mapping") else dict(row),
        )

    async def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


@asynccontextmanager
async def security_stack(
    root: Path, *, database_url: str, temporal_address: str, token: TokenConfig, devnet: Devnet
) -> AsyncIterator[SecurityStack]:
    """Starts the services and the worker in this process, set up; stops them all on the way out."""
    stack = SecurityStack(root, database_url, temporal_address, token, devnet)
    stack._configure()
    async with AsyncExitStack() as exits:
        exits.push_async_callback(stack.close)
        for name in SERVICES:
            await stack.start(name)
        exits.push_async_callback(_stop_all, stack)
        worker, close_worker = await worker_main.build(stack._settings["worker"])
        exits.push_async_callback(close_worker)
        await exits.enter_async_context(_running(worker))
        await stack.setup()
        yield stack


@asynccontextmanager
async def _running(worker: Worker) -> AsyncIterator[None]:
    async with worker:
        yield


async def _stop_all(stack: SecurityStack) -> None:
    for name in reversed(list(stack._running)):
        await stack.stop(name)
