"""The worker host rewrites the governance log: it appends, rewrites and deletes entries,
dropping the append-only triggers first, as the database owner can.

The signer replays the log and verifies every entry against the admins pinned in its trust
file; entries it verified are never read again, and the head it reached is remembered on
its HSM token, so a log cut short is refused after a restart. The policy service has the
signer anchor each entry it appends before it answers, so an entry cut before the signer's
next Sign is no gap either. Before the insider-proof approvals (d6b3e87) there was no log:
the registry and the active policy were the rows the attacks of test_worker_host_database.py
write, and those got signatures.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric import ed25519

from services.policy.domain import SignatureScheme
from services.policy.evidence import public_key_der, sign_approval
from services.policy.governance import (
    GOVERNANCE_VERSION,
    AddApproverKey,
    Entry,
    entry_from_plain,
    new_request,
)
from services.runtime.intent import Decision
from tests.security.insiders import WorkerHost, assert_refused, signer_judges_again
from tests.security.stack import APPROVER_KEYS, LOG, SIGNING_RECORDS, Real, SecurityStack
from tests.security.world import World


async def test_a_forged_governance_entry(stack: SecurityStack, world: World, worker_host: WorkerHost) -> None:
    """An entry appended to the log by hand, adding the attacker's key to olivia and 'signed' by
    dave and erin with keys the attacker made: it does not verify against the signer's trust
    root, and a log that does not verify signs nothing at all, until an operator restores it."""
    u = world.u
    head = stack.log_rows()[-1]
    attacker = ed25519.Ed25519PrivateKey.generate()
    request = new_request(
        AddApproverKey("olivia", SignatureScheme.ED25519, public_key_der(attacker)),
        change_id=f"chg-{uuid.uuid4().hex[:24]}",
        proposer="dave",
        expires_at=datetime.now(UTC) + timedelta(hours=1),
    )
    fake_admins = [
        sign_approval(
            ed25519.Ed25519PrivateKey.generate(),
            approver_id=admin,
            intent_digest=request.digest(),
            policy_version=GOVERNANCE_VERSION,
            decision=Decision.APPROVE,
            expires_at=request.expires_at,
        )
        for admin in ("dave", "erin")
    ]
    entry = Entry(head.seq + 1, bytes(head.hash), request, tuple(fake_admins), datetime.now(UTC))
    stack.put_log_row(
        {
            "seq": entry.seq,
            "change_id": request.change_id,
            "prev_hash": entry.prev_hash,
            "hash": entry.hash(),
            "entry": entry.canonical().decode(),
            "applied_at": entry.applied_at,
        }
    )
    try:
        for approvals in ([stack.approval(u.intent, "olivia", key=attacker), u.approvals[1]], u.approvals):
            before = await stack.evidence()
            error = await worker_host.refused(
                u, approvals=approvals, tx=worker_host.tx(u.spec, nonce=before.nonce)
            )
            record = await assert_refused(
                stack,
                before,
                error,
                status="FAILED_PRECONDITION",
                error_type="GovernanceUnverified",
                subject=f"intent:{u.id}",
            )
            assert "not signed by the admin quorum" in record["payload"]["reason"]
    finally:
        with stack.log_unlocked():
            stack.sql(f"DELETE FROM {LOG} WHERE seq = :s", {"s": entry.seq})
        await stack.restart("signer")
    await signer_judges_again(stack, world.u, worker_host)


async def test_a_rewritten_governance_entry(
    stack: SecurityStack, world: World, worker_host: WorkerHost
) -> None:
    """olivia's registration rewritten in place to carry the attacker's key, with its row's hash
    recomputed to match: a signer that verified it once never reads it again, and a restarted
    one finds the admins' signatures no longer cover it."""
    u = world.u
    rows = stack.log_rows()
    original = next(r for r in rows if '"approver_id":"olivia"' in r.entry and "approver.register" in r.entry)
    attacker = ed25519.Ed25519PrivateKey.generate()
    data = json.loads(original.entry)
    data["request"]["change"]["public_key"] = public_key_der(attacker).hex()
    rewritten = entry_from_plain(data)
    approvals = [stack.approval(u.intent, "olivia", key=attacker), u.approvals[1]]
    with stack.log_unlocked():
        stack.sql(
            f"UPDATE {LOG} SET entry = :e, hash = :h WHERE seq = :s",
            {"e": rewritten.canonical().decode(), "h": rewritten.hash(), "s": original.seq},
        )
    try:
        before = await stack.evidence()
        error = await worker_host.refused(
            u, approvals=approvals, tx=worker_host.tx(u.spec, nonce=before.nonce)
        )
        await assert_refused(
            stack,
            before,
            error,
            status="PERMISSION_DENIED",
            error_type="ApprovalsInsufficient",
            subject=f"intent:{u.id}",
        )
        await stack.restart("signer")
        before = await stack.evidence()
        error = await worker_host.refused(
            u, approvals=approvals, tx=worker_host.tx(u.spec, nonce=before.nonce)
        )
        await assert_refused(
            stack,
            before,
            error,
            status="FAILED_PRECONDITION",
            error_type="GovernanceUnverified",
            subject=f"intent:{u.id}",
        )
    finally:
        with stack.log_unlocked():
            stack.sql(f"DELETE FROM {LOG} WHERE seq >= :s", {"s": original.seq})
            for row in rows[original.seq - 1 :]:
                stack.put_log_row(row)
        await stack.restart("signer")
    await signer_judges_again(stack, world.u, worker_host)


async def test_a_revocation_cut_off_the_log(
    stack: SecurityStack, world: World, worker_host: WorkerHost
) -> None:
    """paula's key is revoked (one admin may), and the signer has seen it. The attacker deletes
    the revocation entry: the running signer still refuses her approvals, and a restarted one
    refuses everything, because the log no longer reaches the head its HSM remembers."""
    u = world.u
    await stack.revoke("paula")
    approvals = [stack.approval(u.intent, "paula"), u.approvals[0]]
    before = await stack.evidence()
    error = await worker_host.refused(u, approvals=approvals, tx=worker_host.tx(u.spec, nonce=before.nonce))
    await assert_refused(
        stack,
        before,
        error,
        status="PERMISSION_DENIED",
        error_type="ApprovalsInsufficient",
        subject=f"intent:{u.id}",
    )
    revocation = stack.log_rows()[-1]
    assert "approver.revoke_key" in revocation.entry
    with stack.log_unlocked():
        stack.sql(f"DELETE FROM {LOG} WHERE seq = :s", {"s": revocation.seq})
    stack.sql(f"UPDATE {APPROVER_KEYS} SET revoked_at = NULL WHERE approver_id = 'paula'")
    try:
        before = await stack.evidence()
        error = await worker_host.refused(
            u, approvals=approvals, tx=worker_host.tx(u.spec, nonce=before.nonce)
        )
        record = await assert_refused(
            stack,
            before,
            error,
            status="PERMISSION_DENIED",
            error_type="ApprovalsInsufficient",
            subject=f"intent:{u.id}",
        )
        assert "paula: key revoked" in record["payload"]["not_counted"]
        await stack.restart("signer")
        before = await stack.evidence()
        error = await worker_host.refused(
            u, approvals=approvals, tx=worker_host.tx(u.spec, nonce=before.nonce)
        )
        record = await assert_refused(
            stack,
            before,
            error,
            status="FAILED_PRECONDITION",
            error_type="GovernanceUnverified",
            subject=f"intent:{u.id}",
        )
        assert "entries were removed" in record["payload"]["reason"]
    finally:
        stack.put_log_row(revocation)
        stack.sql(
            f"UPDATE {APPROVER_KEYS} SET revoked_at = :t WHERE approver_id = 'paula'",
            {"t": datetime.now(UTC)},
        )
        await stack.restart("signer")
    await signer_judges_again(stack, world.u, worker_host)


async def test_a_revocation_cut_before_the_signer_read_it(
    stack: SecurityStack, world: World, worker_host: WorkerHost
) -> None:
    """quinn approved an exit before her key was revoked (the worker host saw the approval reach
    the workflow). The revocation is appended and deleted before any Sign made the signer read
    the log. The policy service had the signer anchor it before answering: the running signer
    refuses quinn's approval, and a restarted one refuses everything. (Before AnchorGovernance
    quinn's approval counted, and the exit landed on anvil.)"""
    spec = stack.unstake_spec(world.u.spec.target.validator)  # type: ignore[union-attr]
    intent = await stack.submit(spec)
    real = Real(intent, spec, [stack.approval(intent, "quinn"), stack.approval(intent, "olivia")])
    before = await stack.evidence()
    revoked = await stack.revoke("quinn")
    assert revoked.anchored and revoked.signer_head_sequence == revoked.entry_sequence, revoked
    (anchored,) = stack.audit_since(before, "governance.anchored")
    assert anchored["payload"]["entry"] == str(revoked.entry_sequence)  # the trail keeps numbers as text
    revocation = stack.log_rows()[-1]
    with stack.log_unlocked():
        stack.sql(f"DELETE FROM {LOG} WHERE seq = :s", {"s": revocation.seq})
    stack.sql(f"UPDATE {APPROVER_KEYS} SET revoked_at = NULL WHERE approver_id = 'quinn'")
    try:
        before = await stack.evidence()
        error = await worker_host.refused(real, tx=worker_host.tx(spec, nonce=before.nonce))
        record = await assert_refused(
            stack,
            before,
            error,
            status="PERMISSION_DENIED",
            error_type="ApprovalsInsufficient",
            subject=f"intent:{intent.intent_id}",
        )
        assert "quinn: key revoked" in record["payload"]["not_counted"]
        await stack.restart("signer")
        before = await stack.evidence()
        error = await worker_host.refused(real, tx=worker_host.tx(spec, nonce=before.nonce))
        record = await assert_refused(
            stack,
            before,
            error,
            status="FAILED_PRECONDITION",
            error_type="GovernanceUnverified",
            subject=f"intent:{intent.intent_id}",
        )
        assert "entries were removed" in record["payload"]["reason"]
    finally:
        stack.sql(f"DELETE FROM {SIGNING_RECORDS} WHERE intent_id = :i", {"i": intent.intent_id})
        stack.put_log_row(revocation)
        stack.sql(
            f"UPDATE {APPROVER_KEYS} SET revoked_at = :t WHERE approver_id = 'quinn'",
            {"t": datetime.now(UTC)},
        )
        await stack.restart("signer")
    await signer_judges_again(stack, world.u, worker_host)


async def test_a_revocation_whose_insert_was_made_a_no_op(
    stack: SecurityStack, world: World, worker_host: WorkerHost
) -> None:
    """olivia holds a second key, and approved an exit with it (with oscar); then that key is
    revoked, but a trigger the database owner put on the log swallows the entry's insert (the
    change is APPLIED, its projection written, the log one entry short). The signer, asked to
    anchor an entry its log does not hold, says so: the change comes back not anchored, and the
    signer signs nothing (a restarted one neither) until the log holds the revocation. Put back,
    the revoked key's approval is refused. (Before AnchorGovernance the exit was signed.)"""
    spare = ed25519.Ed25519PrivateKey.generate()
    await stack.govern(AddApproverKey("olivia", SignatureScheme.ED25519, public_key_der(spare)))
    spec = stack.unstake_spec(world.u.spec.target.validator)  # type: ignore[union-attr]
    intent = await stack.submit(spec)
    real = Real(intent, spec, [stack.approval(intent, "olivia", key=spare), stack.approval(intent, "oscar")])
    before = await stack.evidence()
    with stack.log_inserts_swallowed() as swallowed:
        revoked = await stack.revoke("olivia", key=spare)
    (revocation,) = swallowed
    assert revoked.entry_sequence == revocation.seq and stack.log_rows()[-1].seq == revocation.seq - 1
    assert not revoked.anchored
    assert f"the policy service anchored entry {revocation.seq}: entries were removed" in revoked.anchor_error
    (failed,) = stack.audit_since(before, "governance.anchor_failed")
    assert (failed["payload"]["entry"], failed["payload"]["error"]) == (
        str(revocation.seq),
        "GovernanceAnchorMismatch",
    )
    (refused,) = stack.audit_since(before, "signer.anchor_governance")
    assert (refused["outcome"], refused["actor"]) == ("refused", "svc:policy")
    try:
        for restart in (False, True):
            if restart:
                await stack.restart("signer")
            before = await stack.evidence()
            error = await worker_host.refused(real, tx=worker_host.tx(spec, nonce=before.nonce))
            record = await assert_refused(
                stack,
                before,
                error,
                status="FAILED_PRECONDITION",
                error_type="GovernanceUnverified",
                subject=f"intent:{intent.intent_id}",
            )
            assert f"the policy service anchored entry {revocation.seq}" in record["payload"]["reason"]
    finally:
        stack.sql(f"DELETE FROM {SIGNING_RECORDS} WHERE intent_id = :i", {"i": intent.intent_id})
        stack.put_log_row(revocation)
    before = await stack.evidence()
    error = await worker_host.refused(real, tx=worker_host.tx(spec, nonce=before.nonce))
    record = await assert_refused(
        stack,
        before,
        error,
        status="PERMISSION_DENIED",
        error_type="ApprovalsInsufficient",
        subject=f"intent:{intent.intent_id}",
    )
    assert "olivia: key revoked" in record["payload"]["not_counted"]
    await signer_judges_again(stack, world.u, worker_host)
