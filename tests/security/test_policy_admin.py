"""One policy-admin, alone: dave, with his certificate and his admin key file.

The trust root pins dave and erin with a quorum of one: a change applies when its
proposer signed it and one other pinned admin approved it (a revocation only takes
power away, so its proposer suffices). dave proposes whatever he likes; nothing he
proposes applies, nothing he signs passes for erin's signature, and what he planted
signs nothing. Every refusal is typed and audited.

Before the insider-proof approvals (d6b3e87), one admin registered approvers (into any
group, the admin group included), rotated other people's keys, signed "the other
admin's" approval with a key he had planted, and a 32 ETH deposit approved with keys he
had planted on two operations approvers reached CONFIRMED.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from services.pb.custos.policy.v1 import policy_pb2
from services.policy.client import PolicyClient
from services.policy.convert import change_to_pb
from services.policy.document import parse_policy
from services.policy.domain import SignatureScheme
from services.policy.evidence import public_key_der, sign_approval
from services.policy.governance import (
    GOVERNANCE_VERSION,
    ActivatePolicy,
    AddApproverKey,
    Change,
    RegisterApprover,
    approval_from_plain,
    new_request,
)
from services.runtime.convert import approval_to_pb
from services.runtime.errors import CustosError
from services.runtime.grpc_errors import RemoteError
from services.runtime.intent import Decision, IntentBinding, intent_digest
from tests.security.insiders import WorkerHost, assert_refused
from tests.security.stack import POLICY, Evidence, Real, SecurityStack
from tests.security.world import World

SCHEME = SignatureScheme.ED25519


def _der(key: ed25519.Ed25519PrivateKey) -> bytes:
    return public_key_der(key)


async def _refused(call: Any) -> RemoteError:
    with pytest.raises(CustosError) as caught:
        await call
    assert isinstance(caught.value, RemoteError), caught.value
    return caught.value


def _audited(stack: SecurityStack, before: Evidence, action: str, change_id: str) -> dict[str, Any]:
    found = [
        r
        for r in stack.audit_since(before, action)
        if r["subject"] == f"change:{change_id}" and r["outcome"] == "refused"
    ]
    assert found, f"no {action} audited for {change_id}"
    assert found[-1]["actor"] == "dave"
    return found[-1]


async def _nothing_moved(stack: SecurityStack, before: Evidence, head: int) -> None:
    after = await stack.evidence()
    assert (after.records, after.nonce) == (before.records, before.nonce)
    assert stack.log_rows()[-1].seq == head, "the governance log moved"


async def test_what_one_admin_proposes_stays_proposed_and_signs_nothing(
    stack: SecurityStack, world: World, worker_host: WorkerHost
) -> None:
    """dave proposes, alone: an approver of his own in the operations group and one in a group
    named for admins, his own keys on olivia and oscar, a one-approver policy and its
    activation. Each stays PROPOSED, one approval short, and the log does not move. What he
    planted, presented to the signer by whoever holds the worker's identity, counts for
    nothing: the keys are no approvers', the version is not the active one."""
    u = world.u
    head, before = stack.log_rows()[-1].seq, await stack.evidence()
    mallory, on_olivia, on_oscar = (ed25519.Ed25519PrivateKey.generate() for _ in range(3))
    one_approver = POLICY.replace("threshold: 2", "threshold: 1")
    async with stack.client(PolicyClient, "dave") as dave:
        version = (
            await dave.call("ProposePolicy", policy_pb2.ProposePolicyRequest(document=one_approver))
        ).policy.version
        changes: list[Change] = [
            RegisterApprover("mallory", "Mallory", ("operations",), SCHEME, _der(mallory)),
            RegisterApprover("mallory-admin", "Mallory", ("policy-admin", "admins"), SCHEME, _der(mallory)),
            AddApproverKey("olivia", SCHEME, _der(on_olivia)),
            AddApproverKey("oscar", SCHEME, _der(on_oscar)),
            ActivatePolicy(version, u.intent.policy_version),
        ]
        for change in changes:
            proposed = await dave.propose_change(change, stack.admin_keys["dave"], proposer="dave")
            assert (policy_pb2.ChangeState.Name(proposed.state), proposed.missing) == (
                "CHANGE_STATE_PROPOSED",
                1,
            )
    await _nothing_moved(stack, before, head)

    planted = [
        stack.approval(u.intent, "olivia", key=on_olivia),
        stack.approval(u.intent, "oscar", key=on_oscar),
        stack.approval(u.intent, "mallory", key=mallory),
    ]
    before = await stack.evidence()
    error = await worker_host.refused(u, approvals=planted, tx=worker_host.tx(u.spec, nonce=before.nonce))
    record = await assert_refused(
        stack,
        before,
        error,
        status="PERMISSION_DENIED",
        error_type="ApprovalsInsufficient",
        subject=f"intent:{u.id}",
    )
    assert sorted(record["payload"]["not_counted"]) == [
        "mallory: unknown approver",
        "olivia: key is not registered to this approver",
        "oscar: key is not registered to this approver",
    ]

    # olivia's real key, under the version dave proposed (one approval would do there)
    intent_id = f"int-{uuid.uuid4().hex}"
    binding = IntentBinding(intent_id, "alice", datetime.now(UTC))
    assert parse_policy(one_approver).version == version
    approval = sign_approval(
        stack.approver_keys["olivia"],
        approver_id="olivia",
        intent_digest=intent_digest(u.spec, version, binding),
        policy_version=version,
        decision=Decision.APPROVE,
        expires_at=binding.submitted_at + timedelta(hours=1),
    )
    before = await stack.evidence()
    error = await worker_host.refused(
        Real(u.intent, u.spec, [approval]),
        intent_id=intent_id,
        policy_version=version,
        submitted_at=binding.submitted_at,
        tx=worker_host.tx(u.spec, nonce=before.nonce),
    )
    await assert_refused(
        stack,
        before,
        error,
        status="PERMISSION_DENIED",
        error_type="PolicyNotActive",
        subject=f"intent:{intent_id}",
    )


async def test_one_admin_cannot_be_his_own_quorum_or_sign_as_another(
    stack: SecurityStack, world: World
) -> None:
    """dave approves his own change, then approves it as erin (with his key, and with erin's real
    signature lifted from an entry of the log), proposes a change in erin's name, and reuses an
    applied change's id for his own: each refused, typed and audited; nothing applies."""
    planted = ed25519.Ed25519PrivateKey.generate()
    dave_key = stack.admin_keys["dave"]
    head, before = stack.log_rows()[-1].seq, await stack.evidence()
    async with stack.client(PolicyClient, "dave") as dave:
        proposed = await dave.propose_change(
            AddApproverKey("olivia", SCHEME, _der(planted)), dave_key, proposer="dave"
        )
        change_id = proposed.request.change_id

        error = await _refused(
            dave.decide_change(change_id, dave_key, admin="dave", decision=Decision.APPROVE)
        )
        assert (error.status.name, error.remote_type) == ("FAILED_PRECONDITION", "ChangeStateConflict")
        _audited(stack, before, "governance.approve_refused", change_id)

        error = await _refused(
            dave.decide_change(change_id, dave_key, admin="erin", decision=Decision.APPROVE)
        )
        assert (error.status.name, error.remote_type) == ("PERMISSION_DENIED", "ChangeRefused")
        assert (
            _audited(stack, before, "governance.approve_refused", change_id)["payload"]["signed_as"] == "erin"
        )

        entries = await dave.call(
            "ListGovernanceEntries", policy_pb2.ListGovernanceEntriesRequest(page_size=100)
        )
        lifted = next(
            approval_from_plain(a)
            for e in entries.entries
            for a in json.loads(e.canonical)["approvals"]
            if a["approver_id"] == "erin"
        )
        error = await _refused(
            dave.call(
                "DecideChange",
                policy_pb2.DecideChangeRequest(change_id=change_id, approval=approval_to_pb(lifted)),
            )
        )
        assert (error.status.name, error.remote_type) == ("PERMISSION_DENIED", "ChangeRefused")

        as_erin = new_request(
            AddApproverKey("oscar", SCHEME, _der(planted)),
            change_id=f"chg-{uuid.uuid4().hex[:24]}",
            proposer="erin",
            expires_at=datetime.now(UTC) + timedelta(hours=1),
        )
        signed = sign_approval(
            dave_key,
            approver_id="erin",
            intent_digest=as_erin.digest(),
            policy_version=GOVERNANCE_VERSION,
            decision=Decision.APPROVE,
            expires_at=as_erin.expires_at,
        )
        error = await _refused(
            dave.call(
                "ProposeChange",
                policy_pb2.ProposeChangeRequest(
                    request=change_to_pb(as_erin), approval=approval_to_pb(signed)
                ),
            )
        )
        assert (error.status.name, error.remote_type) == ("PERMISSION_DENIED", "ChangeRefused")
        _audited(stack, before, "governance.propose_refused", as_erin.change_id)

        applied_id = json.loads(entries.entries[-1].canonical)["request"]["change_id"]
        error = await _refused(
            dave.propose_change(
                AddApproverKey("oscar", SCHEME, _der(planted)),
                dave_key,
                proposer="dave",
                change_id=applied_id,
            )
        )
        assert (error.status.name, error.remote_type) == ("FAILED_PRECONDITION", "ChangeStateConflict")
        _audited(stack, before, "governance.propose_refused", applied_id)

        still = await dave.get_change(change_id)
        assert (policy_pb2.ChangeState.Name(still.state), still.missing) == ("CHANGE_STATE_PROPOSED", 1)
    await _nothing_moved(stack, before, head)
