"""One approver, with their certificate and their valid key, and nothing else.

The operations group needs two approvers. olivia alone approves a new exit twice (two distinct
signatures over its digest), approves as oscar with her own key, and asks the signer herself:
the intent still awaits a second approver, and nothing is signed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.pb.custos.signer.v1 import signer_pb2
from services.pb.custos.staking.v1 import staking_pb2
from services.policy.evidence import sign_approval
from services.runtime.convert import approval_to_pb, datetime_to_ts, spec_to_pb
from services.runtime.errors import CustosError
from services.runtime.grpc_errors import RemoteError
from services.runtime.intent import Decision
from services.signer.client import SignerClient
from services.staking.client import StakingClient
from tests.security.insiders import WorkerHost
from tests.security.stack import SecurityStack
from tests.security.world import World


async def test_one_approver_alone(stack: SecurityStack, world: World, worker_host: WorkerHost) -> None:
    spec = stack.unstake_spec(world.x.spec.target.validator)  # type: ignore[union-attr]
    intent = await stack.submit(spec)
    before = await stack.evidence()
    try:
        first = await stack.approve(intent, "olivia")
        assert not first.quorum_met
        # the same approver again, with a later expiry: another valid signature, still her: the
        # answer recorded for her first decision (a retry after a lost answer), counted once
        again = stack.approval(intent, "olivia", expires_at=datetime.now(UTC) + timedelta(minutes=90))
        twice = await stack.approve(intent, "olivia", again)
        assert not twice.quorum_met
        assert [a.approver_id for a in twice.intent.approvals] == ["olivia"]
        # her key over the intent, naming oscar: the caller is not the approver it names
        as_oscar = sign_approval(
            stack.approver_keys["olivia"],
            approver_id="oscar",
            intent_digest=intent.digest,
            policy_version=intent.policy_version,
            decision=Decision.APPROVE,
            expires_at=datetime.now(UTC) + timedelta(hours=1),
        )
        with pytest.raises(CustosError) as named:
            await stack.approve(intent, "olivia", as_oscar)
        # straight to the signer, with her approval counted twice
        request = signer_pb2.SignRequest(
            intent_id=intent.intent_id,
            step="unstake",
            spec=spec_to_pb(spec),
            initiator=intent.initiator,
            policy_version=intent.policy_version,
            approvals=[approval_to_pb(stack.approval(intent, "olivia")), approval_to_pb(again)],
            unsigned_tx=worker_host.tx(spec, nonce=before.nonce),
            submitted_at=datetime_to_ts(datetime.now(UTC)),
        )
        with pytest.raises(CustosError) as signer:
            async with stack.client(SignerClient, "olivia") as client:
                await client.call("Sign", request)
        assert _typed(named.value) == ("PERMISSION_DENIED", "NotYourIntent")
        assert _typed(signer.value)[0] == "PERMISSION_DENIED"
        state = (await stack.wait_for(intent.intent_id, {"AWAITING_APPROVALS"})).intent.state
        assert state == staking_pb2.INTENT_STATE_AWAITING_APPROVALS
        after = await stack.evidence()
        assert (after.records, after.nonce) == (before.records, before.nonce)
        refused = {(r["action"], r["actor"]) for r in stack.audit_since(before) if r["outcome"] == "refused"}
        assert ("approval.refused", "olivia") in refused, refused
        denied = [r for r in stack.audit_since(before) if r["actor"] == "olivia" and "Sign" in str(r)]
        assert denied, "the signer's PERMISSION_DENIED is not audited"
    finally:
        async with stack.client(StakingClient, "alice") as staking:
            await staking.call(
                "CancelIntent",
                staking_pb2.CancelIntentRequest(intent_id=intent.intent_id, reason="attack over"),
            )


def _typed(error: BaseException) -> tuple[str, str]:
    """The gRPC status and custos error type a refusal came back with."""
    assert isinstance(error, RemoteError), error
    return error.status.name, error.remote_type
