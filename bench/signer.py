"""Signatures per second: raw ``C_Sign``, the signer in process, and Sign over gRPC; 1 and 2 processes.

    .venv/bin/python bench/signer.py [--seconds 3] [--processes 1 2] [--paths raw service grpc]
                                    [--db sqlite|postgresql|URL] [--concurrency 16]

Every process is started with multiprocessing "spawn" (never fork a process that
has loaded PKCS#11) and opens its own HSM session on one throw-away SoftHSM token;
all share one database (a fresh SQLite file, or a fresh PostgreSQL database with
``--db postgresql``, dropped at the end), seeded as production runs: approvers and
an active policy version in the policy tables, the vault key made by the signer.

* ``raw``: ``C_Sign`` with ``CKM_ECDSA`` over a 32-byte digest, nothing else.
* ``service``: ``SignerService.sign_blocking`` called in the worker process, one call
  at a time.
* ``grpc``: ``Sign`` through the real SignerService served over mTLS (built by
  ``services.signer.main``, so the policy version and the approver registry are read
  from the database), called by this process as ``svc:worker`` with ``--concurrency``
  calls in flight per server process.

Every signed request is a distinct intent (its own validator, approvals and nonce), so
each call verifies two Ed25519 approvals against the quorum, decodes the transaction
against the intent, checks for conflicts, signs in the HSM and commits its signing
record with its audit entry. Requests are made before the clock starts. After each
run the database is asked how many signing records and "signed" audit entries the
run left: both must equal the number of signatures counted.

The last line prints the gRPC and raw rates and their ratio per process count.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import queue
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# Run as ``python bench/signer.py``: the repository root (``bench``, ``services``) on the path,
# for this process and the spawned ones (they inherit ``sys.path``).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GWEI = 10**9
CHAIN = "ethereum-devnet"
CHAIN_ID = 31337
INITIATOR = "ivan"
#: Requests made ahead per process and second of measurement (a run stops early if it uses them all).
POOL_PER_SECOND = 2500
PG_ADMIN_URL = os.environ.get("CUSTOS_TEST_PG_URL", "postgresql://127.0.0.1:5432/test")

POLICY_DOC = """\
format: custos.policy/v1
default: deny
rules:
  - id: bench-unstake
    match: {action: [UNSTAKE], chain: [ethereum-devnet]}
    require:
      groups: [{name: ops, threshold: 2, approver_groups: [ops]}]
      expiry: 1h
"""


@dataclass(frozen=True)
class Env:
    """What a process needs to reach the token, the database and the seeded state (picklable)."""

    conf_path: str
    label: str
    pin: str
    db_url: str
    pki: str = ""
    policy_version: str = ""
    vault_id: str = ""
    #: CKA_ID (hex) of the key the raw path signs with.
    raw_key: str = ""
    #: (approver id, raw Ed25519 private key): the approvers' side, which signs approvals.
    approvers: tuple[tuple[str, bytes], ...] = ()
    #: The trust root the governance log was signed under (the signer's trust file).
    trust_file: str = ""
    worker: int = 0
    #: First nonce (and intent number) of this process in this run: keeps runs apart.
    nonce_base: int = 0
    #: The signer's ``decide_threads`` setting (-1: its default).
    decide_threads: int = -1
    #: The signer's ``commit_window`` setting in seconds (negative: its default).
    commit_window: float = -1.0


# --- set-up -------------------------------------------------------------------------------------


def _settings(env: Env) -> Any:
    from pydantic import SecretStr

    from bench._grpc import server_tls
    from services.families.config import ChainConfig
    from services.runtime.settings import HsmSettings
    from services.signer.main import SignerSettings

    settings = SignerSettings(
        state_dir=Path(env.pki).parent,
        database_url=env.db_url,
        listen="127.0.0.1:0",
        tls=server_tls(Path(env.pki), "signer"),
        hsm=HsmSettings(token_label=env.label, pin=SecretStr(env.pin)),
        chains=[ChainConfig(name=CHAIN, chain_id=CHAIN_ID, rpc_url="http://127.0.0.1:9")],
        trust_file=Path(env.trust_file),
    )
    if env.decide_threads >= 0:
        settings = settings.model_copy(update={"decide_threads": env.decide_threads})
    if env.commit_window >= 0:
        settings = settings.model_copy(update={"commit_window": env.commit_window})
    return settings


def _open_hsm(env: Env) -> Any:
    os.environ["SOFTHSM2_CONF"] = env.conf_path  # before the library is loaded in this process
    from services.signer.hsm import Hsm

    return Hsm(_settings(env).hsm).open()


def _service(env: Env) -> tuple[Any, Any]:
    """(hsm, SignerService) wired as ``custos serve signer`` wires them."""
    from services.runtime.db import make_engine, make_session_factory, read_only
    from services.signer.main import make_service

    hsm = _open_hsm(env)
    engine = make_engine(env.db_url)
    sessions, reads = make_session_factory(engine), make_session_factory(read_only(engine))
    return hsm, make_service(_settings(env), sessions, reads, hsm)


def seed_policy(db_url: str, state: Path) -> tuple[str, tuple[tuple[str, bytes], ...], str]:
    """As an installation is seeded: admins pinned in a trust file govern the registration of two
    Ed25519 approvers in group ``ops`` and the activation of a 2-of-ops policy.

    Returns the policy version, the approvers' raw keys and the trust file's path.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    from bench._seed import seed_governed
    from services.policy.evidence import public_key_der
    from services.runtime.db import make_engine, make_session_factory

    keys = {name: Ed25519PrivateKey.generate() for name in ("alice", "bob")}
    engine = make_engine(db_url)
    version, trust_file = seed_governed(
        make_session_factory(engine),
        {name: (("ops",), public_key_der(k)) for name, k in keys.items()},
        POLICY_DOC,
        state,
    )
    engine.dispose()
    raw = tuple(
        (n, k.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())) for n, k in keys.items()
    )
    return version, raw, str(trust_file)


def _create_keys(env: Env, out: Any) -> None:
    from services.signer.types import KeyAlgorithm, KeyPurpose

    hsm, service = _service(env)
    key = service.create_key_blocking("bench", "bench-vault", KeyAlgorithm.SECP256K1, KeyPurpose.VAULT)
    raw = secrets.token_bytes(16)
    hsm.generate_keypair(KeyAlgorithm.SECP256K1, "bench-raw", raw)
    service.close()
    hsm.close()
    out.put((key.vault_id, raw.hex()))


def create_keys(env: Env) -> Env:
    """Makes the vault key and the raw path's key in a spawned process (this one never loads PKCS#11).

    Made once, before any measurement: SoftHSM's file store is not safe to write from
    one process while another opens the token.
    """
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    p = ctx.Process(target=_create_keys, args=(env, out))
    p.start()
    ((vault_id, raw),) = _collect(out, [p], "key set-up")
    p.join()
    return replace(env, vault_id=vault_id, raw_key=raw)


def requests(env: Env, count: int) -> list[Any]:
    """``count`` distinct sign requests: own validator, approvals, nonce and intent id each."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from services.families.ethereum import contracts
    from services.families.ethereum.transactions import UnsignedTransaction
    from services.policy.evidence import sign_approval
    from services.runtime.intent import (
        Action,
        Decision,
        IntentBinding,
        IntentSpec,
        UnstakeTarget,
        intent_digest,
        submission_time,
    )
    from services.signer.service import SignInput

    keys = [(n, Ed25519PrivateKey.from_private_bytes(raw)) for n, raw in env.approvers]
    submitted = submission_time(datetime.now(UTC))
    expires = submitted + timedelta(minutes=30)
    out = []
    for nonce in range(env.nonce_base, env.nonce_base + count):
        validator = secrets.token_bytes(48)
        spec = IntentSpec(
            Action.UNSTAKE, CHAIN, env.vault_id, 32 * 10**9 * GWEI, UnstakeTarget("0x" + validator.hex())
        )
        intent_id = f"bench-{nonce}"
        digest = intent_digest(spec, env.policy_version, IntentBinding(intent_id, INITIATOR, submitted))
        approvals = tuple(
            sign_approval(
                k,
                approver_id=n,
                intent_digest=digest,
                policy_version=env.policy_version,
                decision=Decision.APPROVE,
                expires_at=expires,
            )
            for n, k in keys
        )
        tx = UnsignedTransaction(
            CHAIN_ID,
            nonce,
            GWEI,
            2 * GWEI,
            200_000,
            bytes.fromhex(contracts.WITHDRAWAL_REQUEST_CONTRACT[2:]),
            1,
            contracts.withdrawal_request_calldata(validator, 32 * 10**9),
        ).encode()
        out.append(
            SignInput(intent_id, "unstake", spec, INITIATOR, env.policy_version, approvals, tx, submitted)
        )
    return out


# --- the in-process paths -----------------------------------------------------------------------


def _until(seconds: float, step: Callable[[], bool]) -> tuple[int, float]:
    """Calls ``step`` until ``seconds`` pass or it returns False; (calls, elapsed)."""
    n, t0 = 0, time.perf_counter()
    end = t0 + seconds
    while time.perf_counter() < end and step():
        n += 1
    return n, time.perf_counter() - t0


def raw_path(env: Env, seconds: float, ready: Callable[[], None]) -> tuple[int, float, int]:
    from pkcs11 import Mechanism

    hsm = _open_hsm(env)
    key_id = bytes.fromhex(env.raw_key)
    digest = secrets.token_bytes(32)

    def step() -> bool:
        hsm.sign_raw(key_id, digest, Mechanism.ECDSA)
        return True

    ready()
    return (*_until(seconds, step), 0)


def service_path(env: Env, seconds: float, ready: Callable[[], None]) -> tuple[int, float, int]:
    _, service = _service(env)
    pool: Iterator[Any] = iter(requests(env, int(seconds * POOL_PER_SECOND) + 1))
    service.sign_blocking(next(pool), "svc:worker")  # warm the caches (key handle, parsed policy)

    def step() -> bool:
        request = next(pool, None)
        if request is None:
            return False
        out = service.sign_blocking(request, "svc:worker")
        assert not out.replayed, "a distinct intent was answered as a replay"
        return True

    ready()
    try:
        n, elapsed = _until(seconds, step)
    finally:
        service.close()
    return n, elapsed, 1


#: name -> worker function(env, seconds, ready) returning (signatures, seconds, warm-up signatures).
PATHS: dict[str, Callable[[Env, float, Callable[[], None]], tuple[int, float, int]]] = {
    "raw": raw_path,
    "service": service_path,
}


def _worker(path: str, env: Env, seconds: float, barrier: Any, out: Any) -> None:
    def ready() -> None:
        barrier.wait()

    out.put(PATHS[path](env, seconds, ready))


def _collect(out: Any, procs: list[Any], what: str) -> list[Any]:
    """One result per process; gives up as soon as one of them died."""
    results: list[Any] = []
    while len(results) < len(procs):
        try:
            results.append(out.get(timeout=1))
        except queue.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                for p in procs:
                    p.terminate()
                raise SystemExit(f"{what}: a process failed with exit code {dead[0]}") from None
    return results


def measure(path: str, processes: int, seconds: float, env: Env) -> tuple[float, int]:
    """(signatures per second, signatures made) of ``path`` in ``processes`` processes."""
    ctx = mp.get_context("spawn")  # never fork a process that has loaded PKCS#11
    barrier, out = ctx.Barrier(processes), ctx.Queue()
    procs = [
        ctx.Process(
            target=_worker,
            args=(path, replace(env, worker=i, nonce_base=env.nonce_base + i * 10**7), seconds, barrier, out),
        )
        for i in range(processes)
    ]
    for p in procs:
        p.start()
    results = _collect(out, procs, path)
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"{path} worker failed with exit code {p.exitcode}")
    return sum(n / elapsed for n, elapsed, _ in results), sum(n + warm for n, _, warm in results)


# --- the gRPC path ------------------------------------------------------------------------------


def _grpc_server(env: Env, ports: Any, stop: Any) -> None:
    asyncio.run(_serve_signer(env, ports, stop))


async def _serve_signer(env: Env, ports: Any, stop: Any) -> None:
    from services.runtime.server import start_server
    from services.signer.main import build

    os.environ["SOFTHSM2_CONF"] = env.conf_path  # before build() loads the library
    settings = _settings(env)
    component = await build(settings)
    try:
        running = await start_server(settings, component.bindings, on_denied=component.on_denied)
        ports.put(running.port)
        await asyncio.to_thread(stop.wait)
        await running.stop(1)
    finally:
        await component.close()


async def _drive(ports: list[int], env: Env, seconds: float, concurrency: int) -> tuple[int, float, int]:
    """Calls Sign on every server with ``concurrency`` calls in flight each.

    Returns (signatures in the measured window, its seconds, warm-up signatures).
    """
    from bench._grpc import client
    from services.pb.custos.signer.v1 import signer_pb2 as pb
    from services.runtime.convert import approval_to_pb, datetime_to_ts, spec_to_pb
    from services.signer.client import SignerClient

    warm = 4 * len(ports)
    pool = [
        pb.SignRequest(
            intent_id=r.intent_id,
            step=r.step,
            spec=spec_to_pb(r.spec),
            initiator=r.initiator,
            policy_version=r.policy_version,
            approvals=[approval_to_pb(a) for a in r.approvals],
            unsigned_tx=r.unsigned_tx,
            submitted_at=datetime_to_ts(r.submitted_at),
        )
        for r in requests(env, int(seconds * POOL_PER_SECOND * len(ports)) + warm)
    ]
    it = iter(pool)
    clients = [client(SignerClient, port, Path(env.pki), "worker") for port in ports]
    try:
        for c in clients:  # handshakes, key handles, the parsed policy
            for _ in range(4):
                await c.call("Sign", next(it))
        done, end = 0, 0.0

        async def caller(c: Any) -> None:
            nonlocal done
            while time.perf_counter() < end:
                request = next(it, None)
                if request is None:
                    return
                out = await c.call("Sign", request)
                assert out.signing_record_id and not out.replayed
                done += 1

        t0 = time.perf_counter()
        end = t0 + seconds
        await asyncio.gather(*(caller(c) for c in clients for _ in range(concurrency)))
        return done, time.perf_counter() - t0, warm
    finally:
        for c in clients:
            await c.close()


def measure_grpc(processes: int, seconds: float, env: Env, concurrency: int) -> tuple[float, int]:
    """(signatures per second, signatures made) through ``processes`` signer servers."""
    ctx = mp.get_context("spawn")
    ports_q, stop = ctx.Queue(), ctx.Event()
    procs = [
        ctx.Process(target=_grpc_server, args=(replace(env, worker=i), ports_q, stop))
        for i in range(processes)
    ]
    for p in procs:
        p.start()
    try:
        ports = [int(port) for port in _collect(ports_q, procs, "grpc server")]
        n, elapsed, warm = asyncio.run(_drive(ports, env, seconds, concurrency))
    finally:
        stop.set()
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
    return n / elapsed, n + warm


# --- bookkeeping --------------------------------------------------------------------------------


def recorded(db_url: str) -> tuple[int, int]:
    """(signing records, "signed" audit entries of the signer) in the database."""
    from sqlalchemy import func, select

    from services.audit.models import AuditRecordRow
    from services.runtime.db import make_engine, make_session_factory
    from services.signer.models import SigningRecord

    engine = make_engine(db_url)
    try:
        with make_session_factory(engine)() as s:
            records = s.scalar(select(func.count()).select_from(SigningRecord)) or 0
            audits = (
                s.scalar(
                    select(func.count())
                    .select_from(AuditRecordRow)
                    .where(AuditRecordRow.action == "signer.sign", AuditRecordRow.outcome == "signed")
                )
                or 0
            )
            return records, audits
    finally:
        engine.dispose()


def _database(spec: str, state: Path) -> tuple[str, Callable[[], None]]:
    """(URL, clean-up) of the database to use: ``sqlite``, ``postgresql`` (fresh) or a URL."""
    if spec == "sqlite":
        return f"sqlite:///{state / 'custos.db'}", lambda: None
    if spec != "postgresql":
        return spec, lambda: None
    import psycopg

    name = f"custos_bench_{secrets.token_hex(6)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}", drop


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--paths", nargs="+", default=["raw", "service", "grpc"], choices=["raw", "service", "grpc"]
    )
    parser.add_argument(
        "--db", "--db-url", default="sqlite", help="sqlite (default), postgresql (a fresh database), or a URL"
    )
    parser.add_argument("--concurrency", type=int, default=16, help="gRPC calls in flight per server process")
    parser.add_argument(
        "--decide-threads", type=int, default=-1, help="the signer's decide_threads (default: its default)"
    )
    parser.add_argument(
        "--commit-window",
        type=float,
        default=-1.0,
        help="the signer's commit_window, seconds (default: its own)",
    )
    args = parser.parse_args()

    from bench._grpc import new_pki
    from services.runtime.migrate import upgrade
    from services.signer.softhsm import ensure_token

    state = Path(tempfile.mkdtemp(prefix="custos-bench-"))
    pin = secrets.token_hex(8)
    token = ensure_token(state, "bench", pin, secrets.token_hex(8))
    db_url, drop = _database(args.db, state)
    env: Env | None = None
    try:
        upgrade(db_url)
        policy_version, approvers, trust_file = seed_policy(db_url, state)
        env = Env(
            conf_path=str(token.conf_path),
            label=token.label,
            pin=pin,
            db_url=db_url,
            pki=str(new_pki()),
            policy_version=policy_version,
            approvers=approvers,
            trust_file=trust_file,
            decide_threads=args.decide_threads,
            commit_window=args.commit_window,
        )
        env = create_keys(env)

        rates: dict[tuple[str, int], float] = {}
        for run, (n, path) in enumerate((n, p) for n in args.processes for p in args.paths):
            run_env = replace(env, nonce_base=(run + 1) * 10**8)
            before = recorded(db_url)
            if path == "grpc":
                rates[path, n], made = measure_grpc(n, args.seconds, run_env, args.concurrency)
            else:
                rates[path, n], made = measure(path, n, args.seconds, run_env)
            note = ""
            if path != "raw":
                after = recorded(db_url)
                records, audits = after[0] - before[0], after[1] - before[1]
                note = f"  ({made} signed with warm-up: {records} signing records, {audits} audit entries)"
                if not made == records == audits:
                    raise SystemExit(f"{path}: {made} signatures but {records} records, {audits} entries")
            print(f"{path:>8} x{n}: {rates[path, n]:8.0f} signatures/s{note}", flush=True)
    finally:
        drop()
        shutil.rmtree(state, ignore_errors=True)
        if env is not None:
            shutil.rmtree(env.pki, ignore_errors=True)

    def per_process(path: str) -> str:
        return ", ".join(f"{n}p {rates[path, n]:.0f}/s" for n in args.processes if (path, n) in rates)

    parts = [f"{p} {per_process(p)}" for p in ("grpc", "service", "raw") if p in args.paths]
    top = "grpc" if "grpc" in args.paths else "service"
    ratios = ", ".join(
        f"{n}p {rates[top, n] / rates['raw', n]:.2f}"
        for n in args.processes
        if (top, n) in rates and ("raw", n) in rates
    )
    print(f"signer ({args.db}): {'; '.join(parts)}; ratio {top}/raw {ratios or 'n/a'} (aim >= 0.5)")


if __name__ == "__main__":
    main()
