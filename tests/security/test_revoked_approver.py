"""An approver whose key was revoked: otto, with his certificate and his old key file.

Three intents are submitted while otto's key is good, so each workflow pinned a
registry in which it is; then one admin revokes it (a revocation needs only its
proposer and takes effect at once). otto approves anyway, through ApproveIntent and
straight to Temporal; olivia's honest approval makes the quorum as the workflow counts
it. The signer counts from the governance log, where the key is revoked: it refuses,
audited, and nothing is signed.

Before the insider-proof approvals (d6b3e87), ApproveIntent accepted a key revoked
after the intent's submission.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from services.pb.custos.staking.v1 import staking_pb2
from services.runtime.errors import CustosError
from services.runtime.grpc_errors import RemoteError
from tests.security.insiders import approval_data
from tests.security.stack import Evidence, SecurityStack
from tests.security.world import World


@dataclass
class Revoked:
    """Intents submitted while otto's key was good; the key, revoked after."""

    through_temporal: Any
    refused_at_the_door: Any


@pytest_asyncio.fixture(scope="module", loop_scope="package")
async def revoked(stack: SecurityStack) -> AsyncIterator[Revoked]:
    world = stack.world
    assert isinstance(world, World)
    spec = stack.unstake_spec(world.u.spec.target.validator)  # type: ignore[union-attr]
    intents = Revoked(*[await stack.submit(spec) for _ in range(2)])
    await stack.revoke("otto")
    yield intents


async def _signer_refused_otto(stack: SecurityStack, before: Evidence, intent: Any) -> None:
    ended = (await stack.wait_for(intent.intent_id, {"FAILED", "CONFIRMED"})).intent
    assert ended.state == staking_pb2.INTENT_STATE_FAILED, ended.reason
    after = await stack.evidence()
    assert (after.records, after.nonce) == (before.records, before.nonce)
    (refusal,) = [
        r
        for r in stack.audit_since(before, "signer.sign")
        if r["subject"] == f"intent:{intent.intent_id}" and r["outcome"] == "refused"
    ]
    assert refusal["payload"]["error"] == "ApprovalsInsufficient"
    assert "otto: key revoked" in refusal["payload"]["not_counted"]


async def test_straight_to_temporal_after_the_revocation(stack: SecurityStack, revoked: Revoked) -> None:
    """otto sends his approval as an update straight to the workflow's frontend: the same."""
    intent = revoked.through_temporal
    before = await stack.evidence()
    handle = (await stack.temporal()).get_workflow_handle(intent.intent_id)
    await handle.execute_update("approve", approval_data(stack.approval(intent, "otto")))
    await stack.approve(intent, "olivia")
    await _signer_refused_otto(stack, before, intent)


async def test_approve_intent_refuses_a_key_revoked_after_submission(
    stack: SecurityStack, revoked: Revoked
) -> None:
    intent = revoked.refused_at_the_door
    before = await stack.evidence()
    with pytest.raises(CustosError) as caught:
        await stack.approve(intent, "otto")
    error = caught.value
    assert isinstance(error, RemoteError)
    assert (error.status.name, error.remote_type) == ("FAILED_PRECONDITION", "ApprovalKeyRefused")
    assert [r["payload"]["key_id"] for r in stack.audit_since(before, "approve.refused")]
    got = (await stack.wait_for(intent.intent_id, {"AWAITING_APPROVALS"})).intent
    assert got.state == staking_pb2.INTENT_STATE_AWAITING_APPROVALS
