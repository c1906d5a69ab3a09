"""The worker host keeps a revocation from the signer: it kills the signer as the revocation applies.

The policy service has the signer anchor each governance entry before it answers; a change
applied while the signer cannot be reached is applied unanchored (``anchored: false``), and the
README lists it as not covered until the next change or ``custos admin anchor``. What this module
adds: the worker host, who may kill the signer, decides when the signer cannot be reached.
"""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from services.pb.custos.policy.v1 import policy_pb2
from services.pb.custos.staking.v1 import staking_pb2
from services.policy.domain import SignatureScheme
from services.policy.evidence import public_key_der
from services.policy.governance import AddApproverKey
from services.runtime.errors import CustosError
from services.runtime.grpc_errors import RemoteError
from services.staking.client import StakingClient
from tests.security.insiders import WorkerHost
from tests.security.stack import LOG, Real, SecurityStack
from tests.security.world import World


@pytest.mark.xfail(
    strict=True,
    reason="finding (open, known window): the worker host kills the signer as a one-admin revocation "
    "applies, deletes the unanchored entry, starts the signer, and the revoked key's approval counts",
)
async def test_a_revocation_applied_while_the_worker_host_holds_the_signer_down(
    stack: SecurityStack, world: World, worker_host: WorkerHost
) -> None:
    """paula's second key approved v (an exit) with olivia; dave revokes that key (one admin, "at
    once"). The worker host has killed the signer at that moment, so the change applies unanchored;
    it deletes the revocation from the log (triggers dropped), starts the signer, which reads a log
    that ends where its token's head does, and asks for v with the revoked key's approval. Today
    the exit is signed and mined; the next governed change or ``custos admin anchor`` would then
    stop the signer, after the fact."""
    spare = ed25519.Ed25519PrivateKey.generate()
    await stack.govern(AddApproverKey("paula", SignatureScheme.ED25519, public_key_der(spare)))
    spec = stack.unstake_spec(world.x.spec.target.validator)  # type: ignore[union-attr]
    intent = await stack.submit(spec)
    v = Real(intent, spec, [stack.approval(intent, "olivia"), stack.approval(intent, "paula", key=spare)])
    cut: list[Any] = []
    answer: Any = None
    try:
        await stack.stop("signer")  # killed: the policy service cannot reach it
        try:
            change = await stack.revoke("paula", "key reported lost", key=spare)
            assert change.state == policy_pb2.CHANGE_STATE_APPLIED, change
            assert not change.anchored and change.anchor_error
            cut = [r for r in stack.log_rows() if r.change_id == change.request.change_id]
            assert len(cut) == 1
            with stack.log_unlocked():
                stack.sql(f"DELETE FROM {LOG} WHERE seq = :s", {"s": cut[0].seq})
        finally:
            await stack.start("signer")
        before = await stack.evidence()
        try:
            answer = await worker_host.sign(v, tx=worker_host.tx(spec, nonce=before.nonce))
        except CustosError as e:
            assert isinstance(e, RemoteError), e
            answer = e
        if not isinstance(answer, RemoteError):
            await worker_host.broadcast(answer.signed_tx)  # it lands; anvil's nonce stays the ledger's
            assert await stack.vault_nonce() == before.nonce + 1
        assert isinstance(answer, RemoteError), "signed with the approval of a revoked key"
        assert (answer.status.name, answer.remote_type) in {
            ("FAILED_PRECONDITION", "GovernanceUnverified"),
            ("PERMISSION_DENIED", "ApprovalsInsufficient"),
        }, answer
        after = await stack.evidence()
        assert after.records == before.records
        assert [r for r in stack.audit_since(before, "signer.sign") if r["outcome"] == "refused"]
    finally:
        for row in cut:  # the log as the policy service appended it; the signer reads it on
            stack.put_log_row(row)
        await stack.restart("signer")
        async with stack.client(StakingClient, "alice") as staking:
            await staking.call(
                "CancelIntent", staking_pb2.CancelIntentRequest(intent_id=v.id, reason="attack over")
            )
