"""The worker host against ``RecordDecision``: can it make the record say someone decided what they did not?

``RecordDecision`` (svc:worker only) writes an approval row and its ``intent.approved_by`` /
``intent.rejected_by`` audit record, whose actor is the approver. The staking service checks that
the approval's digest and policy version are the intent's and that the signature verifies with a
key the registry holds for the approver (revoked or not). The signer does not read these records
(it judges approvals from the governance log): what is at stake is what compliance and the
approvers read. Each attack plays the worker host's certificate against a live stack; a refused
one asserts the typed refusal, one that works is a strict xfail asserting the safe outcome.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import ed25519

from services.pb.custos.common.v1 import common_pb2
from services.pb.custos.staking.v1 import staking_pb2
from services.policy.domain import SignatureScheme
from services.policy.evidence import public_key_der, sign_approval
from services.policy.governance import AddApproverKey, RegisterApprover
from services.runtime.convert import approval_to_pb, ts_to_datetime
from services.runtime.errors import CustosError
from services.runtime.grpc_errors import RemoteError
from services.runtime.intent import Approval, Decision
from services.staking.client import StakingClient
from tests.security.stack import Evidence, SecurityStack
from tests.security.world import World


@dataclass
class Mine:
    """An exit of x's validator submitted for these attacks (cancelled once they are over), the
    key ``paula`` had revoked before it was submitted, and ``rita``: registered, in no group the
    policy requires."""

    intent: Any
    revoked: ed25519.Ed25519PrivateKey
    rita: ed25519.Ed25519PrivateKey

    @property
    def id(self) -> str:
        return str(self.intent.intent_id)


@pytest_asyncio.fixture(scope="module", loop_scope="package")
async def mine(stack: SecurityStack) -> AsyncIterator[Mine]:
    world = stack.world
    assert isinstance(world, World)
    revoked, rita = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    await stack.govern(AddApproverKey("paula", SignatureScheme.ED25519, public_key_der(revoked)))
    await stack.revoke("paula", "key reported lost", key=revoked)
    await stack.govern(
        RegisterApprover("rita", "Rita", ("treasury",), SignatureScheme.ED25519, public_key_der(rita))
    )
    intent = await stack.submit(stack.unstake_spec(world.x.spec.target.validator))  # type: ignore[union-attr]
    assert intent.state == staking_pb2.INTENT_STATE_AWAITING_APPROVALS, intent
    try:
        yield Mine(intent, revoked, rita)
    finally:
        await _cancel(stack, str(intent.intent_id))


async def _cancel(stack: SecurityStack, intent_id: str) -> None:
    async with stack.client(StakingClient, "alice") as staking:
        await staking.call(
            "CancelIntent", staking_pb2.CancelIntentRequest(intent_id=intent_id, reason="attack over")
        )
    await stack.wait_for(intent_id, {"CANCELLED"})


def _signed(
    intent: Any,
    who: str,
    key: ed25519.Ed25519PrivateKey,
    decision: Decision = Decision.APPROVE,
    *,
    expires_at: datetime | None = None,
) -> Approval:
    return sign_approval(
        key,
        approver_id=who,
        intent_digest=intent.digest,
        policy_version=intent.policy_version,
        decision=decision,
        expires_at=expires_at or datetime.now(UTC) + timedelta(hours=1),
    )


def _request(intent_id: str, a: Approval, reason: str = "", quorum_met: bool = False) -> Any:
    return staking_pb2.RecordDecisionRequest(
        intent_id=intent_id, approval=approval_to_pb(a), reason=reason, quorum_met=quorum_met
    )


async def _record(stack: SecurityStack, request: Any, person: str = "worker") -> bool:
    async with stack.client(StakingClient, person) as staking:
        resp = await staking.call("RecordDecision", request)
    return bool(resp.recorded)


async def _refused(stack: SecurityStack, request: Any, person: str = "worker") -> RemoteError:
    with pytest.raises(CustosError) as caught:
        await _record(stack, request, person)
    assert isinstance(caught.value, RemoteError), caught.value
    return caught.value


async def _approvals(stack: SecurityStack, intent_id: str) -> dict[str, Any]:
    """What the approvers and operators read (GetIntent): the recorded decisions, by approver."""
    async with stack.client(StakingClient, "ops") as staking:
        got = await staking.call("GetIntent", staking_pb2.GetIntentRequest(intent_id=intent_id))
    return {a.approver_id: a for a in got.intent.approvals}


def _decisions_audited(stack: SecurityStack, intent_id: str, approver: str) -> list[dict[str, Any]]:
    rows = stack.audit_since(Evidence(records=0, nonce=0, audit_seq=0))
    return [
        r
        for r in rows
        if r["action"] in {"intent.approved_by", "intent.rejected_by"}
        and r["subject"] == f"intent:{intent_id}"
        and r["payload"].get("approver_id") == approver
    ]


# --- refused -------------------------------------------------------------------------------------


async def test_only_the_worker_may_record(stack: SecurityStack, mine: Mine) -> None:
    a = _signed(mine.intent, "otto", stack.approver_keys["otto"])
    error = await _refused(stack, _request(mine.id, a), person="otto")
    assert error.status.name == "PERMISSION_DENIED", error
    assert "otto" not in await _approvals(stack, mine.id)


async def test_a_real_approval_of_another_intent_is_refused(
    stack: SecurityStack, world: World, mine: Mine
) -> None:
    """oscar's real approval of u (the worker host saw it reach u's workflow), recorded for mine."""
    oscar_on_u = next(a for a in world.u.approvals if a.approver_id == "oscar")
    error = await _refused(stack, _request(mine.id, oscar_on_u))
    assert (error.status.name, error.remote_type) == ("FAILED_PRECONDITION", "FailedPrecondition"), error
    # the other intent's digest with this intent's policy version only: the signature no longer fits
    error = await _refused(stack, _request(mine.id, replace(oscar_on_u, intent_digest=mine.intent.digest)))
    assert error.status.name == "FAILED_PRECONDITION", error
    assert "oscar" not in await _approvals(stack, mine.id)


async def test_a_reject_for_an_approver_who_approved_is_refused(stack: SecurityStack, mine: Mine) -> None:
    """oscar's real APPROVE of mine, its decision turned into REJECT: the signature covers the decision."""
    approve = _signed(mine.intent, "oscar", stack.approver_keys["oscar"])
    error = await _refused(stack, _request(mine.id, replace(approve, decision=Decision.REJECT), "no"))
    assert (error.status.name, error.remote_type) == ("FAILED_PRECONDITION", "FailedPrecondition"), error
    assert "oscar" not in await _approvals(stack, mine.id)


async def test_a_decision_signed_by_the_worker_host_is_refused(stack: SecurityStack, mine: Mine) -> None:
    """A key the worker host made, under olivia's name and key id; and under the name of someone
    the registry does not hold (alice, the initiator)."""
    forged = _signed(mine.intent, "olivia", ed25519.Ed25519PrivateKey.generate())
    olivia_key = _signed(mine.intent, "olivia", stack.approver_keys["olivia"]).key_id
    error = await _refused(stack, _request(mine.id, replace(forged, key_id=olivia_key)))
    assert (error.status.name, error.remote_type) == ("FAILED_PRECONDITION", "FailedPrecondition"), error
    error = await _refused(stack, _request(mine.id, replace(forged, approver_id="alice")))
    assert (error.status.name, error.remote_type) == ("FAILED_PRECONDITION", "FailedPrecondition"), error
    assert not {"olivia", "alice"} & set(await _approvals(stack, mine.id))


def _malformed(mine: Mine, a: Approval) -> dict[str, Any]:
    pb = approval_to_pb(a)

    def with_(**fields: Any) -> Any:
        p = type(pb)()
        p.CopyFrom(pb)
        for k, v in fields.items():
            if k == "expires_seconds":
                p.expires_at.seconds = v
            else:
                setattr(p, k, v)
        return staking_pb2.RecordDecisionRequest(intent_id=mine.id, approval=p)

    return {
        "no approval": staking_pb2.RecordDecisionRequest(intent_id=mine.id),
        "intent id of 10k": staking_pb2.RecordDecisionRequest(intent_id="i" * 10_000, approval=pb),
        "unknown intent": staking_pb2.RecordDecisionRequest(intent_id="no-such-intent", approval=pb),
        "approver id of 10k": with_(approver_id="o" * 10_000),
        "approver id with a newline": with_(approver_id="otto\nolivia"),
        "key id of 10k": with_(key_id="k" * 10_000),
        "digest of 31 bytes": with_(intent_digest=bytes(31)),
        "decision unspecified": with_(decision=common_pb2.DECISION_UNSPECIFIED),
        "decision out of range": with_(decision=99),
        "expiry past 9999": with_(expires_seconds=2**62),
        "signature of 1 MB": with_(signature=b"\x01" * 1_000_000),
        "signature of 63 bytes": with_(signature=a.signature[:63]),
        "reason of 100k": staking_pb2.RecordDecisionRequest(
            intent_id=mine.id, approval=pb, reason="r" * 100_000
        ),
        "reason of two lines": staking_pb2.RecordDecisionRequest(
            intent_id=mine.id, approval=pb, reason="a\nb"
        ),
        "reason with a NUL": staking_pb2.RecordDecisionRequest(
            intent_id=mine.id, approval=pb, reason="a\x00b"
        ),
    }


EXPECTED = {
    "no approval": ("INVALID_ARGUMENT",),
    "intent id of 10k": ("INVALID_ARGUMENT",),
    "unknown intent": ("NOT_FOUND",),
    "approver id of 10k": ("INVALID_ARGUMENT",),
    "approver id with a newline": ("INVALID_ARGUMENT",),
    "key id of 10k": ("INVALID_ARGUMENT",),
    "digest of 31 bytes": ("INVALID_ARGUMENT",),
    "decision unspecified": ("INVALID_ARGUMENT",),
    "decision out of range": ("INVALID_ARGUMENT",),
    "expiry past 9999": ("INVALID_ARGUMENT",),
    "signature of 1 MB": ("FAILED_PRECONDITION",),
    "signature of 63 bytes": ("FAILED_PRECONDITION",),
    "reason of 100k": ("INVALID_ARGUMENT",),
    "reason of two lines": ("INVALID_ARGUMENT",),
    "reason with a NUL": ("INVALID_ARGUMENT",),
}


async def test_malformed_fields_get_typed_refusals(stack: SecurityStack, mine: Mine) -> None:
    """Each malformed request is refused with its own status, never INTERNAL, nothing recorded."""
    a = _signed(mine.intent, "otto", stack.approver_keys["otto"], Decision.REJECT)
    got = {}
    for name, request in _malformed(mine, a).items():
        error = await _refused(stack, request)
        got[name] = (error.status.name,)
        assert "Traceback" not in str(error), (name, error)
    assert got == EXPECTED
    assert "otto" not in await _approvals(stack, mine.id)


# --- the record says what the approver did not sign ----------------------------------------------


@pytest.mark.xfail(
    strict=True,
    reason="finding (open): a rejection's reason is not signed; the worker host records a real REJECT "
    "first with a reason of its own (audited with the approver as actor), and the approver's retry "
    "cannot replace it",
)
async def test_a_reason_the_approver_did_not_write(stack: SecurityStack, mine: Mine) -> None:
    """otto signs a REJECT of mine with his reason; the worker host sees it reach the workflow and
    records it first, with its own reason. The workflow's own record (otto's reason) is then a
    retry: recorded=False, and the read model and audit trail keep the worker host's words."""
    reject = _signed(mine.intent, "otto", stack.approver_keys["otto"], Decision.REJECT)
    planted = "approved by mistake, olivia told me to block it"
    first = await _record(stack, _request(mine.id, reject, reason=planted))
    second = await _record(stack, _request(mine.id, reject, reason="validator still earning"))
    row = (await _approvals(stack, mine.id))["otto"]
    (audited,) = _decisions_audited(stack, mine.id, "otto")
    assert (first, second) == (True, False)
    assert audited["actor"] == "otto"
    # safe: a reason otto did not sign is not recorded as his
    assert row.reason != planted and audited["payload"].get("reason") != planted


async def test_quorum_met_is_the_workers_word(stack: SecurityStack, mine: Mine) -> None:
    """oscar's approval, the only one on mine, recorded with quorum_met=True (2 of operations needed):
    the staking service counts the recorded approvals against the requirement itself (finding 16, closed).
    (oscar: quinn's key is revoked by test_worker_host_governance_log.py when the directory runs.)"""
    approve = _signed(mine.intent, "oscar", stack.approver_keys["oscar"])
    assert await _record(stack, _request(mine.id, approve, quorum_met=True))
    counted = [
        a for a in (await _approvals(stack, mine.id)).values() if a.decision == common_pb2.DECISION_APPROVE
    ]
    (audited,) = _decisions_audited(stack, mine.id, "oscar")
    assert len(counted) == 1
    assert audited["payload"]["quorum_met"] is False


async def test_a_key_revoked_before_the_intent_existed(stack: SecurityStack, mine: Mine) -> None:
    """paula's second key was revoked (reported lost) before mine was submitted: whoever holds it
    signs mine; the staking service refuses it from paula, the worker host records it."""
    lost = _signed(mine.intent, "paula", mine.revoked)
    recorded: bool | RemoteError
    try:
        recorded = await _record(stack, _request(mine.id, lost))
    except RemoteError as e:
        recorded = e
    assert isinstance(recorded, RemoteError) and recorded.status.name == "FAILED_PRECONDITION", recorded
    assert "paula" not in await _approvals(stack, mine.id)


async def test_an_approver_outside_the_required_groups(stack: SecurityStack, mine: Mine) -> None:
    """rita (registered, treasury only) signs mine; the staking service would refuse her
    (NotARequiredApprover) but she reaches the workflow while no requirement is known, so the
    worker host holds her signature; it records it."""
    approve = _signed(mine.intent, "rita", mine.rita)
    recorded: bool | RemoteError
    try:
        recorded = await _record(stack, _request(mine.id, approve))
    except RemoteError as e:
        recorded = e
    assert isinstance(recorded, RemoteError), "an approval from outside the requirement was recorded"
    assert "rita" not in await _approvals(stack, mine.id)


async def test_an_expired_approval(stack: SecurityStack, mine: Mine) -> None:
    submitted = ts_to_datetime(mine.intent.created_at, "created_at")
    stale = _signed(
        mine.intent, "olivia", stack.approver_keys["olivia"], expires_at=submitted - timedelta(seconds=1)
    )
    recorded: bool | RemoteError
    try:
        recorded = await _record(stack, _request(mine.id, stale))
    except RemoteError as e:
        recorded = e
    assert isinstance(recorded, RemoteError), "an expired approval was recorded"
    assert "olivia" not in await _approvals(stack, mine.id)


async def test_a_decision_for_an_intent_that_ended(stack: SecurityStack, world: World) -> None:
    """An exit alice cancelled; otto's approval of it (signed, relayed too late) recorded after."""
    intent = await stack.submit(stack.unstake_spec(world.x.spec.target.validator))  # type: ignore[union-attr]
    await _cancel(stack, str(intent.intent_id))
    late = _signed(intent, "otto", stack.approver_keys["otto"])
    recorded: bool | RemoteError
    try:
        recorded = await _record(stack, _request(str(intent.intent_id), late))
    except RemoteError as e:
        recorded = e
    assert isinstance(recorded, RemoteError), "a decision was recorded on a CANCELLED intent"
    assert recorded.status.name == "FAILED_PRECONDITION"
    assert "otto" not in await _approvals(stack, str(intent.intent_id))
