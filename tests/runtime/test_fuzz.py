"""Every RPC of every custos service, fuzzed: bad input never ends in INTERNAL or UNKNOWN.

The real services (each assembled by its own ``main.build``, as ``custos serve`` does)
and the real worker run in this process over mTLS (tests/telemetry/stack.py), on a
Temporal dev server, SoftHSM, anvil, and SQLite or PostgreSQL, seeded with a policy,
approvers, a vault key and an intent awaiting approvals, so that plausible values
reach past the first checks. The RPCs come from the descriptors: one added later is
fuzzed without an edit here. Each request is sent by a caller holding exactly the
roles its RPC declares, as raw bytes (so bodies that do not parse can be sent too):
see tests/runtime/fuzzing.py for what. What must hold for each: an answer or a
typed refusal (never INTERNAL or UNKNOWN), a bounded status message, and no
traceback in the log.

``CUSTOS_FUZZ_SEED`` picks another seed (the default one makes runs comparable).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.timestamp_pb2 import Timestamp
from temporalio.testing import WorkflowEnvironment

from services.chain.devnet import Devnet
from services.pb.custos.common.v1 import common_pb2
from services.policy.evidence import public_key_der
from services.runtime.client import channel_credentials
from services.runtime.grpc_errors import MAX_STATUS_MESSAGE
from services.runtime.pki import issue
from services.signer.softhsm import TokenConfig
from tests.runtime.callsites import custos_services
from tests.runtime.fuzzing import Case, Values, cases
from tests.telemetry.stack import PEOPLE, POLICY, InProcessStack, in_process_stack

SEED = int(os.environ.get("CUSTOS_FUZZ_SEED", "20261130"))
#: Random messages per RPC, on top of the empty body, garbage, extremes and plausible mutants.
RANDOM_PER_RPC = 3
UNARY_TIMEOUT = 5.0
#: A stream that is still open after this long (a watch waiting for news) has not failed.
STREAM_TIMEOUT = 1.0
_S = grpc.StatusCode
#: What a request may get: an answer or a typed refusal; never INTERNAL or UNKNOWN (nor the
#: RESOURCE_EXHAUSTED of a status too long for gRPC's metadata).
ANSWERS = frozenset({_S.OK, _S.INVALID_ARGUMENT, _S.NOT_FOUND, _S.FAILED_PRECONDITION})
ANSWERS |= {_S.PERMISSION_DENIED, _S.ALREADY_EXISTS}
#: A stream may also still be open at its deadline (a watch waiting for news).
STREAM_ANSWERS = ANSWERS | {_S.DEADLINE_EXCEEDED}


@dataclass(frozen=True)
class Outcome:
    case: Case
    code: grpc.StatusCode
    details: str


class Callers:
    """A caller per set of roles an RPC declares, and a channel per (roles, service).

    A person of the stack holding exactly those roles calls (``olivia`` approves, so her
    approvals get as far as the workflow); otherwise a new certificate with those roles.
    """

    def __init__(self, stack: InProcessStack) -> None:
        self._stack = stack
        self._channels: dict[tuple[frozenset[str], str], grpc.aio.Channel] = {}
        self._names = {frozenset(roles): name for name, roles in reversed(PEOPLE.items())}

    def identity(self, roles: frozenset[str]) -> str:
        if roles not in self._names:
            name = f"fuzz-{len(self._names)}"
            issue(self._stack.pki, name, sorted(roles))
            self._names[roles] = name
        return self._names[roles]

    def channel(self, roles: frozenset[str], service: str) -> grpc.aio.Channel:
        key = (roles, service)
        if key not in self._channels:
            name, pki = self.identity(roles), self._stack.pki
            creds = channel_credentials(pki / "ca.crt", pki / f"{name}.crt", pki / f"{name}.key")
            self._channels[key] = grpc.aio.secure_channel(self._stack.endpoints[service], creds)
        return self._channels[key]

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close(None)


async def send(channel: grpc.aio.Channel, case: Case) -> Outcome:
    path = f"/{case.method.containing_service.full_name}/{case.method.name}"
    try:
        if case.method.server_streaming:
            call = channel.unary_stream(path, None, None)(case.body, timeout=STREAM_TIMEOUT)
            async for _ in call:
                pass
        else:
            await channel.unary_unary(path, None, None)(case.body, timeout=UNARY_TIMEOUT)
    except grpc.aio.AioRpcError as e:
        return Outcome(case, e.code(), e.details() or "")
    return Outcome(case, grpc.StatusCode.OK, "")


def _service_of(descriptor: ServiceDescriptor) -> str:
    """``custos.staking.v1.StakingService`` -> ``staking`` (the endpoint's name)."""
    return descriptor.full_name.split(".")[1]


def _named(stack: InProcessStack, intent: Any, rpc: str, caller: str) -> dict[str, Any]:
    """Plausible values by field name, from the seeded state, for ``caller`` calling ``rpc``."""
    now = int(time.time())
    approval = common_pb2.Approval(
        approver_id=caller,  # a decision is the caller's own
        key_id="k-olivia",
        decision=common_pb2.DECISION_REJECT if rpc == "RejectIntent" else common_pb2.DECISION_APPROVE,
        intent_digest=intent.digest,
        policy_version=intent.policy_version,
        expires_at=Timestamp(seconds=now + 3600),
        signature=b"\x01" * 64,
    )
    day = common_pb2.TimeRange(start=Timestamp(seconds=now - 86400), end=Timestamp(seconds=now + 3600))
    validator = intent.spec.stake.validator
    return {
        "intent_id": intent.intent_id,
        "idempotency_key": "fuzz-once",
        "spec": intent.spec,
        "chain": intent.spec.chain,
        "vault_id": intent.spec.vault_id,
        "vault_address": stack.vault_address,
        "amount": intent.spec.amount,
        "validator": validator,
        "source_validator": validator,
        "target_validator": validator,
        "initiator": intent.initiator,
        "policy_version": intent.policy_version,
        "version": intent.policy_version,
        "approval": approval,
        "approvals": approval,
        "approver_id": caller,
        "key_id": "k-olivia",
        "intent_digest": intent.digest,
        "signature": b"\x01" * 64,
        "step": "deposit",
        "document": POLICY,
        "unsigned_tx": b"\x02" + b"\x00" * 63,
        "signed_tx": b"\x02" + b"\x00" * 127,
        "tx_hash": "0x" + "ab" * 32,
        "payload_json": "{}",
        "subject": f"intent:{intent.intent_id}",
        "outcome": "ok",
        "group": "operations",
        "groups": "operations",
        "scheme": common_pb2.SIGNATURE_SCHEME_ED25519,
        "public_key": public_key_der(ed25519.Ed25519PrivateKey.generate()),
        "page_size": 10,
        "from_sequence": 1,
        "sequence": 1,
        "at": Timestamp(seconds=now),
        "created": day,
        "recorded": day,
        "time": day,
    }


def _known(stack: InProcessStack, intent: Any, callers: list[str]) -> list[str]:
    return [
        intent.intent_id,
        intent.policy_version,
        intent.spec.vault_id,
        intent.spec.chain,
        intent.spec.stake.validator,
        intent.initiator,
        stack.vault_address,
        "olivia",
        "dave",
        "32000000000000000000",
        "deposit",
        datetime.now(UTC).isoformat(),
        *callers,
    ]


async def test_no_rpc_answers_bad_input_with_internal_or_unknown(
    dev_server_env: WorkflowEnvironment,
    softhsm_token: TokenConfig,
    audit_token: TokenConfig,
    devnet: Devnet,
    db_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CUSTOS_CONFIG", raising=False)
    async with in_process_stack(
        tmp_path,
        database_url=db_url,
        temporal_address=dev_server_env.client.service_client.config.target_host,
        token=softhsm_token,
        devnet=devnet,
        audit_token=audit_token,
    ) as stack:
        await stack.setup()
        intent = await stack.submit(stack.stake_spec())
        intent = (await stack.wait_for(intent.intent_id, {"AWAITING_APPROVALS"})).intent

        rpcs = [m for s in custos_services() for m in s.methods]
        served = {path.split("/")[1] for path in stack.roles}
        assert {m.containing_service.full_name for m in rpcs} == served, "a service is not fuzzed"
        callers = Callers(stack)
        roles = {m: stack.roles[f"/{m.containing_service.full_name}/{m.name}"] for m in rpcs}
        identities = [callers.identity(r) for r in roles.values()]
        values = Values(SEED, _known(stack, intent, identities), [POLICY])
        caplog.clear()
        caplog.set_level(logging.WARNING)
        outcomes: list[Outcome] = []
        started = time.monotonic()
        try:
            for method in rpcs:
                channel = callers.channel(roles[method], _service_of(method.containing_service))
                values.named = _named(stack, intent, method.name, callers.identity(roles[method]))
                for case in cases(values, method, RANDOM_PER_RPC):
                    outcomes.append(await send(channel, case))
        finally:
            await callers.close()
        elapsed = time.monotonic() - started

    bad = [
        o for o in outcomes if o.code not in (STREAM_ANSWERS if o.case.method.server_streaming else ANSWERS)
    ]
    long = [o for o in outcomes if len(o.details) > MAX_STATUS_MESSAGE]
    tracebacks = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    codes = Counter(o.code.name for o in outcomes)
    print(f"\nfuzz: {len(outcomes)} requests, {len(rpcs)} RPCs, {elapsed:.1f}s, seed {SEED}: {dict(codes)}")
    shown = [
        f"{o.case.method.containing_service.name}/{o.case.method.name} ({o.case.what}): "
        f"{o.code.name}: {o.details[:160]!r}"
        for o in bad
    ]
    assert not bad, f"{len(bad)} of {len(outcomes)} requests (seed {SEED}):\n" + "\n".join(shown)
    assert not long, f"status messages longer than {MAX_STATUS_MESSAGE}: " + "; ".join(
        f"{o.case.method.name} ({o.case.what}): {len(o.details)}" for o in long
    )
    assert not tracebacks, "tracebacks in the log:\n" + "\n".join(
        f"{r.name}: {r.getMessage()[:200]}" for r in tracebacks
    )
