"""Signatures per second: raw ``C_Sign`` against the signer's service path, 1 and 2 processes.

    .venv/bin/python -m bench.signer [--seconds 3] [--processes 1 2] [--db-url URL]

Each worker is a process started with multiprocessing "spawn" that opens its own
HSM session (one per process, as in production) on a throw-away SoftHSM token,
waits at a barrier, and counts for ``--seconds``:

* ``raw``: ``C_Sign`` with ``CKM_ECDSA`` over a 32-byte digest, nothing else;
* ``service``: ``SignerService.sign`` with every check on: the approvals' Ed25519
  signatures and quorum (the policy's evidence check), the Ethereum decoder, the
  conflict checks, the HSM signature with low-S and recovery id, and the signing
  record plus its audit entry committed in one database transaction.

The last line prints both rates and their ratio. A new path (the gRPC one) is one
more function in ``PATHS``: it receives the worker's ``Env`` and the seconds to run.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

GWEI = 10**9
CHAIN = "ethereum-devnet"
CHAIN_ID = 31337
POLICY = "bench-1"


@dataclass(frozen=True)
class Env:
    """What a worker process needs to reach the token and the database (picklable)."""

    conf_path: str
    label: str
    pin: str
    db_url: str
    worker: int


def _open_hsm(env: Env) -> Any:
    import os

    os.environ["SOFTHSM2_CONF"] = env.conf_path  # before the library is loaded in this process
    from pydantic import SecretStr

    from services.runtime.settings import HsmSettings
    from services.signer.hsm import Hsm

    return Hsm(HsmSettings(token_label=env.label, pin=SecretStr(env.pin))).open()


def _until(seconds: float, step: Callable[[int], object]) -> int:
    n, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        step(n)
        n += 1
    return n


def raw_path(env: Env, seconds: float, ready: Callable[[], None]) -> int:
    from pkcs11 import Mechanism

    from services.signer.types import KeyAlgorithm

    hsm = _open_hsm(env)
    key_id = secrets.token_bytes(16)
    hsm.generate_keypair(KeyAlgorithm.SECP256K1, f"bench-raw-{key_id.hex()}", key_id)
    digest = secrets.token_bytes(32)
    ready()
    return _until(seconds, lambda _: hsm.sign_raw(key_id, digest, Mechanism.ECDSA))


def service_path(env: Env, seconds: float, ready: Callable[[], None]) -> int:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from services.audit.writer import AuditWriter
    from services.chain.config import ChainConfig
    from services.chain.ethereum import contracts
    from services.chain.ethereum.adapter import EthereumAdapter
    from services.policy.domain import (
        ApprovalGroup,
        ApproverInfo,
        ApproverKeyInfo,
        Requirement,
        SignatureScheme,
        key_id_for,
    )
    from services.policy.evidence import public_key_der, sign_approval
    from services.runtime.db import make_engine, make_session_factory
    from services.runtime.intent import Action, Decision, IntentSpec, UnstakeTarget, intent_digest
    from services.signer import eip1559
    from services.signer.adapters import EthereumIntentCheck, audit_in_transaction
    from services.signer.ports import StaticPolicySource
    from services.signer.service import ChainConfig as SignerChains
    from services.signer.service import SignerService, SignInput
    from services.signer.types import KeyAlgorithm, KeyPurpose

    hsm = _open_hsm(env)
    sessions = make_session_factory(make_engine(env.db_url))
    now = datetime.now(UTC)
    approvers = {n: Ed25519PrivateKey.generate() for n in ("alice", "bob")}
    registry = {
        n: ApproverInfo(
            n,
            n,
            frozenset({"ops"}),
            (
                ApproverKeyInfo(
                    key_id_for(public_key_der(k)), SignatureScheme.ED25519, public_key_der(k), now
                ),
            ),
            now,
        )
        for n, k in approvers.items()
    }
    policy = StaticPolicySource(
        {POLICY: Requirement((ApprovalGroup("ops", 2, frozenset(approvers)),), 3600, POLICY, "r")}, registry
    )
    chain = ChainConfig(name=CHAIN, chain_id=CHAIN_ID, rpc_url="http://127.0.0.1:9")
    service = SignerService(
        hsm=hsm,
        sessions=sessions,
        policy=policy,
        decoder=EthereumIntentCheck({CHAIN: EthereumAdapter(chain)}),
        audit=audit_in_transaction(AuditWriter(sessions, "svc:signer")),
        chains=SignerChains(ethereum={CHAIN: CHAIN_ID}),
    )
    vault = service.create_key_blocking(
        "bench", f"bench-vault-{env.worker}-{secrets.token_hex(3)}", KeyAlgorithm.SECP256K1, KeyPurpose.VAULT
    )
    validator = secrets.token_bytes(48)
    spec = IntentSpec(
        Action.UNSTAKE, CHAIN, vault.vault_id, 32 * 10**9 * GWEI, UnstakeTarget("0x" + validator.hex())
    )
    approvals = tuple(
        sign_approval(
            k,
            approver_id=n,
            intent_digest=intent_digest(spec, POLICY),
            policy_version=POLICY,
            decision=Decision.APPROVE,
            expires_at=now + timedelta(hours=1),
        )
        for n, k in approvers.items()
    )
    intent = f"bench-{env.worker}-{secrets.token_hex(4)}"

    def request(i: int) -> SignInput:
        # One step per signature, each with its own nonce: every call is a new signature.
        tx = eip1559.encode_unsigned(
            eip1559.Eip1559Tx(
                CHAIN_ID,
                i,
                GWEI,
                2 * GWEI,
                200_000,
                contracts.WITHDRAWAL_REQUEST_CONTRACT,
                1,
                contracts.withdrawal_request_calldata(validator, 32 * 10**9),
                (),
            )
        )
        return SignInput(intent, f"step-{i}", spec, "ivan", POLICY, approvals, tx)

    service.sign_blocking(request(10**9), "bench")  # warm caches (key handle, public key)
    ready()
    return _until(seconds, lambda i: service.sign_blocking(request(i), "bench"))


#: name -> worker function(env, seconds, ready) returning the number of signatures made.
PATHS: dict[str, Callable[[Env, float, Callable[[], None]], int]] = {
    "raw": raw_path,
    "service": service_path,
}


def _worker(path: str, env: Env, seconds: float, barrier: Any, out: Any) -> None:
    def ready() -> None:
        barrier.wait()

    out.put(PATHS[path](env, seconds, ready))


def measure(path: str, processes: int, seconds: float, env: Env) -> float:
    ctx = mp.get_context("spawn")  # never fork a process that has loaded PKCS#11
    barrier, out = ctx.Barrier(processes), ctx.Queue()
    procs = [
        ctx.Process(
            target=_worker,
            args=(path, Env(env.conf_path, env.label, env.pin, env.db_url, i), seconds, barrier, out),
        )
        for i in range(processes)
    ]
    for p in procs:
        p.start()
    total = sum(out.get(timeout=seconds + 120) for _ in procs)
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"{path} worker failed with exit code {p.exitcode}")
    return total / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS))
    parser.add_argument("--db-url", default="", help="default: an SQLite file in a temporary folder")
    args = parser.parse_args()

    from services.runtime.migrate import upgrade
    from services.signer.softhsm import ensure_token

    state = Path(tempfile.mkdtemp(prefix="custos-bench-"))
    pin = secrets.token_hex(8)
    token = ensure_token(state, "bench", pin, secrets.token_hex(8))
    db_url = args.db_url or f"sqlite:///{state / 'custos.db'}"
    upgrade(db_url)
    env = Env(str(token.conf_path), token.label, pin, db_url, 0)

    rates: dict[tuple[str, int], float] = {}
    for n in args.processes:
        for path in args.paths:
            rates[path, n] = measure(path, n, args.seconds, env)
            print(f"{path:>8} x{n}: {rates[path, n]:8.0f} signatures/s", flush=True)
    summary = []
    for n in args.processes:
        raw = rates.get(("raw", n))
        for path in args.paths:
            if path != "raw" and raw:
                summary.append(
                    f"{n}p {path} {rates[path, n]:.0f}/s raw {raw:.0f}/s ratio {rates[path, n] / raw:.2f}"
                )
    print("; ".join(summary))


if __name__ == "__main__":
    main()
