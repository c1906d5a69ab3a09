"""Policy evaluation benchmark: evaluations/s and p50/p99 latency for a 1,000-rule policy.

    .venv/bin/python bench/policy.py [inprocess] [grpc] [--seconds 3]

Sections (run all by default, or name some):

* ``inprocess``: :func:`services.policy.engine.evaluate` on a parsed policy.
* ``grpc``: EvaluateIntent through the served PolicyServicer (mTLS, roles, SQLite); its
  database and PKI (the CA's and the services' private keys) live in one temporary
  folder, removed when the section ends.

The worst case is measured: the matching rule is the last of 1,000, so every rule's
selectors are tried first. The last line prints the headline figures and the ratio
against a 1-rule policy measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml

from services.families.config import ChainConfig
from services.policy.document import FORMAT, Policy, parse_policy
from services.policy.engine import VelocityKey, evaluate, velocity_keys
from services.runtime.intent import Action, IntentSpec, StakeTarget

AT = datetime(2025, 1, 8, 10, 0, tzinfo=UTC)
SPEC = IntentSpec(Action.STAKE, "ethereum-devnet", "vault-target", 32 * 10**18, StakeTarget("0x" + "aa" * 48))
CHAINS = {
    "ethereum-devnet": ChainConfig(name="ethereum-devnet", chain_id=31337, rpc_url="http://127.0.0.1:8545")
}


def make_policy(n_rules: int) -> Policy:
    return parse_policy(yaml.safe_dump(_body(n_rules), sort_keys=False))


def _body(n_rules: int) -> dict[str, object]:
    rules = []
    for i in range(n_rules - 1):  # distinct vaults: only the last rule matches SPEC
        rules.append(
            {
                "id": f"r{i}",
                "match": {
                    "action": ["STAKE", "UNSTAKE"],
                    "chain": ["ethereum-devnet"],
                    "vault": [f"vault-{i}"],
                    "amount": {"max": "1_024_000_000_000_000_000_000"},
                },
                "limits": {"velocity": {"window": "24h", "max": "4_096_000_000_000_000_000_000"}},
                "require": {
                    "groups": [{"name": "ops", "threshold": 2, "approvers": ["o1", "o2", "o3"]}],
                    "expiry": "24h",
                },
            }
        )
    rules.append(
        {
            "id": "target",
            "match": {"action": ["STAKE"], "chain": ["ethereum-devnet"], "vault": ["vault-target"]},
            "limits": {
                "velocity": {"window": "24h", "max": "4_096_000_000_000_000_000_000"},
                "time": {
                    "weekdays": ["mon", "tue", "wed", "thu", "fri"],
                    "from": "07:00",
                    "to": "19:00",
                    "tz": "Europe/Zurich",
                },
            },
            "require": {
                "groups": [
                    {"name": "ops", "threshold": 2, "approvers": ["o1", "o2", "o3"]},
                    {"name": "risk", "threshold": 1, "approver_groups": ["risk"]},
                ],
                "expiry": "24h",
            },
        }
    )
    body: dict[str, object] = {
        "format": FORMAT,
        "default": "deny",
        "rules": rules,
    }
    return body


def measure(fn: Callable[[], object], seconds: float) -> tuple[float, float, float]:
    """Returns (per second, p50 ms, p99 ms) of ``fn`` called for about ``seconds``."""
    for _ in range(20):
        fn()
    samples: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    q = statistics.quantiles(samples, n=100)
    return len(samples) / sum(samples), q[49] * 1000, q[98] * 1000


DIRECTORY = {"risk": ["r1", "r2"]}


def inprocess(seconds: float) -> dict[str, tuple[float, float, float]]:
    out = {}
    for n in (1, 1000):
        t0 = time.perf_counter()
        policy = make_policy(n)
        parse_ms = (time.perf_counter() - t0) * 1000
        used = {k: 0 for k in velocity_keys(policy, SPEC)}
        decision = evaluate(policy, SPEC, "alice", (), AT, used, chains=CHAINS, directory=DIRECTORY)
        assert decision.allowed and decision.rule_id == "target", decision

        def once(p: Policy = policy, u: dict[VelocityKey, int] = used) -> object:
            return evaluate(p, SPEC, "alice", (), AT, u, chains=CHAINS, directory=DIRECTORY)

        rate, p50, p99 = measure(once, seconds)
        print(
            f"inprocess rules={n:5d}: {rate:10.0f} eval/s  p50 {p50:.3f} ms  p99 {p99:.3f} ms"
            f"  (parse {parse_ms:.0f} ms)"
        )
        out[f"inprocess-{n}"] = (rate, p50, p99)
    return out


def grpc_section(seconds: float) -> dict[str, tuple[float, float, float]]:
    """EvaluateIntent through the served PolicyServicer (mTLS, roles, SQLite), one call at a time."""
    return asyncio.run(_grpc(seconds))


async def _grpc(seconds: float) -> dict[str, tuple[float, float, float]]:
    out = {}
    for n in (1, 1000):
        with tempfile.TemporaryDirectory(prefix="custos-bench-policy-") as tmp:
            samples = await _grpc_samples(n, seconds, Path(tmp))
        q = statistics.quantiles(samples, n=100)
        rate, p50, p99 = len(samples) / sum(samples), q[49] * 1000, q[98] * 1000
        print(f"grpc      rules={n:5d}: {rate:10.0f} eval/s  p50 {p50:.3f} ms  p99 {p99:.3f} ms")
        out[f"grpc-{n}"] = (rate, p50, p99)
    return out


async def _grpc_samples(n: int, seconds: float, tmp: Path) -> list[float]:
    """EvaluateIntent latencies against an ``n``-rule policy served from ``tmp`` (database, PKI)."""
    from bench._grpc import client, new_pki, serve
    from bench._seed import seed_governed
    from services.pb.custos.policy.v1 import policy_pb2, policy_pb2_grpc
    from services.policy.client import PolicyClient
    from services.policy.service import PolicyService
    from services.policy.servicer import PolicyServicer
    from services.runtime.convert import spec_to_pb
    from services.runtime.db import make_engine, make_session_factory
    from services.runtime.migrate import upgrade
    from services.runtime.server import ServiceBinding

    url = f"sqlite:///{tmp}/policy.db"
    upgrade(url)
    engine = make_engine(url)
    try:
        svc = PolicyService(make_session_factory(engine), chains=CHAINS.values())
        doc = yaml.safe_dump(_body(n), sort_keys=False)
        seed_governed(make_session_factory(engine), {}, doc, tmp)
        binding = ServiceBinding(
            policy_pb2.DESCRIPTOR.services_by_name["PolicyService"],
            policy_pb2_grpc.add_PolicyServiceServicer_to_server,
            PolicyServicer(svc, None),
        )
        running, pki = await serve(binding, "policy", new_pki(tmp))
        samples: list[float] = []
        try:
            request = policy_pb2.EvaluateIntentRequest(spec=spec_to_pb(SPEC), initiator="alice")
            async with client(PolicyClient, running.port, pki, "worker") as c:  # EvaluateIntent's one caller
                for _ in range(20):
                    await c.call("EvaluateIntent", request)
                end = time.perf_counter() + seconds
                while time.perf_counter() < end:
                    t0 = time.perf_counter()
                    await c.call("EvaluateIntent", request)
                    samples.append(time.perf_counter() - t0)
        finally:
            await running.stop(0)
        return samples
    finally:
        engine.dispose()


SECTIONS: dict[str, Callable[[float], dict[str, tuple[float, float, float]]]] = {
    "inprocess": inprocess,
    "grpc": grpc_section,
}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("sections", nargs="*", metavar="SECTION", help="inprocess, grpc (default: both)")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per case (default 3)")
    args = parser.parse_args(argv)
    unknown = [n for n in args.sections if n not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {unknown[0]!r} (choose from {', '.join(SECTIONS)})")
    results: dict[str, tuple[float, float, float]] = {}
    for name in args.sections or list(SECTIONS):
        results.update(SECTIONS[name](args.seconds))
    big, base, rpc = results.get("inprocess-1000"), results.get("inprocess-1"), results.get("grpc-1000")
    if big and base:
        grpc_part = (
            f"; gRPC 1000 rules {rpc[0]:.0f} eval/s p50 {rpc[1]:.3f} ms p99 {rpc[2]:.3f} ms" if rpc else ""
        )
        print(
            f"policy bench: 1000 rules in process {big[0]:.0f} eval/s, p50 {big[1]:.3f} ms, "
            f"p99 {big[2]:.3f} ms{grpc_part}; baseline 1 rule {base[0]:.0f} eval/s; "
            f"ratio {big[0] / base[0]:.4f}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
