"""What the audit trail says about the changes and signatures that moved things on the stack.

Before the insider-proof approvals (d6b3e87), registry changes were attributed to
``svc:policy`` and the signer's audit entry did not say which approvals it accepted:
after the fact nobody could tell who had made an approver, or whose approvals paid
for a transaction.
"""

from __future__ import annotations

from services.audit.records import signature_ref
from tests.security.stack import ADMINS, APPROVERS, Evidence, SecurityStack
from tests.security.world import World

EVERYTHING = Evidence(records=0, nonce=0, audit_seq=0)


async def test_registry_and_policy_records_name_who_proposed_and_who_approved(stack: SecurityStack) -> None:
    registered = [r for r in stack.audit_since(EVERYTHING, "approver.registered") if r["outcome"] == "ok"]
    activated = stack.audit_since(EVERYTHING, "policy.activated")
    assert sorted(r["subject"] for r in registered) == sorted(f"approver:{a}" for a in APPROVERS)
    assert len(activated) == 1
    for record in (*registered, *activated):
        assert record["actor"] == "dave", record
        assert record["payload"]["proposed_by"] == "dave"
        assert record["payload"]["approved_by"] == list(ADMINS)
    applied = stack.audit_since(EVERYTHING, "governance.applied")
    assert applied and {tuple(r["payload"]["signed_by"]) for r in applied} >= {ADMINS}


async def test_the_signers_record_names_the_approvals_it_accepted(stack: SecurityStack, world: World) -> None:
    x = world.x
    (signed,) = [
        r
        for r in stack.audit_since(EVERYTHING, "signer.sign")
        if r["subject"] == f"intent:{x.id}" and r["outcome"] == "signed"
    ]
    assert signed["actor"] == "svc:worker"
    payload = signed["payload"]
    assert payload["tx_hash"] == x.intent.tx_hash
    assert (payload["policy_version"], payload["rule_id"]) == (x.intent.policy_version, "eth-2-of-5")
    assert payload["approvals"] == [
        {"approver_id": a.approver_id, "key_id": a.key_id, "signature_ref": signature_ref(a.signature)}
        for a in x.approvals
    ]
    assert int(payload["governance_entry"]) >= len(APPROVERS) + 1  # the registrations and the activation
