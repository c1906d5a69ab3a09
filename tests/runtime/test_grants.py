"""Least privilege: each role holds only the RPCs its code calls.

``GRANTS`` is the reviewed matrix: a change to any servicer's ``ROLES`` fails here until
this table changes with it, so every grant is deliberate. Next to each row, who calls:
people through the ``custos`` commands made for them (services/cli/commands, and the demo
in services/cli/scenario.py), services through their typed clients and the worker's
activities. The other tests check what the table cannot: that each service identity's
grants match the RPCs its own code calls (found by reading that code), and that each
RPC granted to people is called by the CLI.
"""

from __future__ import annotations

from typing import Any

import pytest

from services.audit.servicer import AuditServicer
from services.chain.servicer import ChainServicer
from services.policy.servicer import PolicyServicer
from services.runtime.pki import SERVICE_ROLES
from services.runtime.settings import SERVICE_NAMES
from services.signer.servicer import SignerServicer
from services.staking.servicer import StakingServicer
from tests.runtime.callsites import REPO, code_of, custos_services, rpcs_called

NOBODY: frozenset[str] = frozenset()


def roles(*names: str) -> frozenset[str]:
    return frozenset(names)


SERVICERS: dict[str, Any] = {
    "custos.audit.v1.AuditService": AuditServicer,
    "custos.chain.v1.ChainService": ChainServicer,
    "custos.policy.v1.PolicyService": PolicyServicer,
    "custos.signer.v1.SignerService": SignerServicer,
    "custos.staking.v1.StakingService": StakingServicer,
}

GRANTS: dict[str, dict[str, frozenset[str]]] = {
    "custos.audit.v1.AuditService": {
        "AppendEvent": NOBODY,  # each component writes its own records to the database
        "QueryEvents": roles("compliance", "operator"),  # audit query
        "ExportEvents": roles("compliance", "operator"),  # audit export; the demo (carol)
        "VerifyChain": roles("compliance", "operator"),  # audit verify; the demo (carol)
        "CreateCheckpoint": roles("compliance"),  # the demo (carol)
    },
    "custos.chain.v1.ChainService": {
        "ListChains": roles("svc:worker"),  # UnbondingSeconds
        "ValidateIntent": roles("svc:staking"),  # SubmitIntent's chain checks
        "BuildTransaction": roles("svc:worker"),  # BuildTransaction
        "DecodeTransaction": NOBODY,  # the signer decodes with its own copy of the decoder
        "BroadcastTransaction": roles("svc:worker"),  # BroadcastTransaction
        "GetTransactionStatus": roles("svc:worker"),  # AwaitConfirmation
        "ReconcileVaults": roles("compliance", "operator"),  # reconcile run
        "AcknowledgeReconcileAlert": roles("operator"),  # reconcile ack
        "ReleaseNonce": roles("svc:worker"),  # a failure before signing gives the nonce back
        "GetWaitStatus": roles("svc:worker"),  # a family's wait (an unbonding) follows the chain
    },
    "custos.policy.v1.PolicyService": {
        "EvaluateIntent": roles("svc:worker"),  # EvaluatePolicy
        "GetPolicy": roles("policy-admin", "svc:staking"),  # policy show; SubmitIntent
        "ListPolicyVersions": roles("policy-admin"),  # policy list
        "ProposePolicy": roles("policy-admin"),  # policy propose
        "SimulatePolicy": roles("policy-admin"),  # policy simulate
        "GetApprover": roles("svc:staking"),  # ApproveIntent: a key revoked now is refused
        "ListApprovers": roles("svc:staking"),  # the registry handed to a new intent's workflow
        "ProposeChange": roles("policy-admin"),  # admin register-approver, add-key, ...; policy propose
        "DecideChange": roles("policy-admin"),  # admin approve, reject
        "GetChange": roles("compliance", "policy-admin"),  # admin show (and before a decision)
        "ListChanges": roles("compliance", "policy-admin"),  # admin changes
        "GetGovernance": roles("compliance", "policy-admin"),  # admin trust, verify-log; policy propose
        "ListGovernanceEntries": roles("compliance", "policy-admin"),  # admin verify-log
        "AnchorLog": roles("policy-admin"),  # admin anchor
        "ReserveVelocity": roles("svc:worker"),  # ReserveVelocity
        "ReleaseVelocity": roles("svc:worker"),  # ReleaseVelocity
    },
    "custos.signer.v1.SignerService": {
        "CreateKey": roles("operator"),  # keys create; the demo (ops)
        # intents submit --generate-deposit (the vault's address); SubmitIntent; BuildTransaction
        "GetKey": roles("initiator", "svc:staking", "svc:worker"),
        "ListKeys": roles("operator", "svc:chain"),  # keys list; reconciliation's vaults
        "Sign": roles("svc:worker"),  # SignTransaction
        "ListSigningRecords": roles("svc:chain"),  # reconciliation
        "AnchorGovernance": roles("svc:policy"),  # each governed change the policy service applies
    },
    "custos.staking.v1.StakingService": {
        "SubmitIntent": roles("initiator"),  # intents submit
        # intents show and watch; approve and reject; policy simulate --intent; the demo (ops)
        "GetIntent": roles("initiator", "operator", "approver", "policy-admin"),
        "ListIntents": roles("initiator", "operator", "approver"),  # intents list; --needs-me (inbox)
        "ApproveIntent": roles("approver"),  # approve
        "RejectIntent": roles("approver"),  # reject
        "CancelIntent": roles("initiator", "operator"),  # intents cancel
        "WatchIntent": roles("initiator", "operator"),  # intents watch; the demo (ops)
        "RecordTransition": roles("svc:worker"),  # RecordTransition
        "RecordDecision": roles("svc:worker"),  # RecordDecision, from the approve/reject update handlers
    },
}

#: The process each service identity is: the code that runs with its certificate.
ENTRY_POINTS = {name: f"services.{name}.main" for name in SERVICE_NAMES} | {
    "worker": "workflows.staking.worker"
}


def declared() -> dict[str, dict[str, frozenset[str]]]:
    return {name: dict(servicer.ROLES) for name, servicer in SERVICERS.items()}


def test_the_grants_are_the_reviewed_matrix() -> None:
    assert set(SERVICERS) == {s.full_name for s in custos_services()}, "a service is missing here"
    assert declared() == GRANTS


@pytest.mark.parametrize("identity", sorted(SERVICE_ROLES))
def test_a_service_holds_exactly_the_rpcs_its_code_calls(identity: str) -> None:
    assert set(ENTRY_POINTS) == set(SERVICE_ROLES), "a service identity without an entry point"
    (role,) = SERVICE_ROLES[identity]
    calls = rpcs_called(code_of(ENTRY_POINTS[identity]))
    granted = {
        (service, rpc)
        for service, grants in declared().items()
        for rpc, holders in grants.items()
        if role in holders
    }
    assert granted - calls == set(), f"{role} holds RPCs its code never calls"
    assert calls - granted == set(), f"{role} calls RPCs it lacks"


def test_every_rpc_granted_to_people_is_called_by_the_cli() -> None:
    calls = rpcs_called(sorted((REPO / "services" / "cli").rglob("*.py")))
    people = {
        (service, rpc)
        for service, grants in declared().items()
        for rpc, holders in grants.items()
        if any(not r.startswith("svc:") for r in holders)
    }
    assert people - calls == set(), "people hold RPCs no custos command calls"


def test_the_call_site_scan_sees_what_it_must() -> None:
    """The scan is what the grant tests stand on: it finds the worker's calls, the one through its
    typed client too, and none of the signer's, which calls no service."""
    worker = rpcs_called(code_of(ENTRY_POINTS["worker"]))
    assert ("custos.signer.v1.SignerService", "Sign") in worker
    assert ("custos.staking.v1.StakingService", "RecordTransition") in worker  # staking.record_transition
    assert ("custos.staking.v1.StakingService", "RecordDecision") in worker  # staking.record_decision
    staking = code_of(ENTRY_POINTS["staking"])
    assert ("custos.staking.v1.StakingService", "RecordTransition") not in rpcs_called(staking)
    signer = code_of(ENTRY_POINTS["signer"])
    assert REPO / "services" / "signer" / "service.py" in signer
    assert rpcs_called(signer) == set()
