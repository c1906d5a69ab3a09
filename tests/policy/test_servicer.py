"""The servicer converts proto <-> domain; roles are declared for every RPC."""

from __future__ import annotations

import contextvars

import pytest
from sqlalchemy.orm import Session, sessionmaker

from services.pb.custos.common.v1 import common_pb2
from services.pb.custos.policy.v1 import policy_pb2
from services.policy.changes import Governance
from services.policy.convert import change_to_pb
from services.policy.domain import SignatureScheme
from services.policy.evidence import public_key_der
from services.policy.governance import ActivatePolicy, Change, RegisterApprover
from services.policy.service import PolicyService
from services.policy.servicer import PolicyServicer
from services.runtime.auth import Principal, reset_principal, set_principal
from services.runtime.convert import approval_to_pb
from services.runtime.errors import InvalidArgument
from tests.policy.governed import Admins
from tests.policy.helpers import CHAINS, WED_10_UTC, allow, doc
from tests.policy.test_service import OPS


def test_every_rpc_declares_roles() -> None:
    names = {m.name for m in policy_pb2.DESCRIPTOR.services_by_name["PolicyService"].methods}
    assert set(PolicyServicer.ROLES) == names
    assert "initiator" not in PolicyServicer.ROLES["ProposePolicy"]
    assert PolicyServicer.ROLES["ProposePolicy"] == {"policy-admin"}


def _as(identity: str) -> contextvars.Token[Principal | None]:
    return set_principal(Principal(identity, frozenset({"policy-admin"})))


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "deep", ["[" * 5000, "a:\n" + "".join(" " * i + "- b:\n" for i in range(2, 2000, 2))]
)
async def test_a_document_nested_too_deep_is_invalid_argument(
    session_factory: sessionmaker[Session], deep: str
) -> None:
    """Flow or block style: a RecursionError (INTERNAL) in the YAML parser before this check."""
    servicer = PolicyServicer(
        PolicyService(session_factory, chains=CHAINS.values(), clock=lambda: WED_10_UTC), None
    )
    token = set_principal(Principal("adm0", frozenset({"policy-admin"})))
    try:
        with pytest.raises(InvalidArgument, match="nested deeper than 32 levels"):
            await servicer.ProposePolicy(policy_pb2.ProposePolicyRequest(document=deep), None)
        simulate = policy_pb2.SimulatePolicyRequest(document=deep, recorded=common_pb2.TimeRange())
        with pytest.raises(InvalidArgument, match="nested deeper than 32 levels"):
            await servicer.SimulatePolicy(simulate, None)
    finally:
        reset_principal(token)


async def test_govern_register_evaluate(session_factory: sessionmaker[Session]) -> None:
    admins = Admins()
    gov = Governance(session_factory, admins.trust(), clock=lambda: WED_10_UTC)
    servicer = PolicyServicer(
        PolicyService(session_factory, chains=CHAINS.values(), clock=lambda: WED_10_UTC), gov
    )

    async def govern_pb(change: Change) -> policy_pb2.Change:
        request = admins.request(change, WED_10_UTC)
        token = _as("adm0")
        try:
            await servicer.ProposeChange(
                policy_pb2.ProposeChangeRequest(
                    request=change_to_pb(request), approval=approval_to_pb(admins.sign("adm0", request))
                ),
                None,
            )
        finally:
            reset_principal(token)
        token = _as("adm1")
        try:
            resp = await servicer.DecideChange(
                policy_pb2.DecideChangeRequest(
                    change_id=request.change_id, approval=approval_to_pb(admins.sign("adm1", request))
                ),
                None,
            )
        finally:
            reset_principal(token)
        assert resp.change.state == policy_pb2.CHANGE_STATE_APPLIED, resp.change
        return resp.change

    for name, key in OPS.items():
        await govern_pb(
            RegisterApprover(name, name, ("ops",), SignatureScheme.ECDSA_P256, public_key_der(key))
        )
    token = _as("adm0")
    try:
        text = doc([allow("r", groups=[{"name": "ops", "threshold": 2, "approver_groups": ["ops"]}])])
        proposed = await servicer.ProposePolicy(policy_pb2.ProposePolicyRequest(document=text), None)
        assert proposed.policy.proposed_by == "adm0"
    finally:
        reset_principal(token)
    applied = await govern_pb(ActivatePolicy(proposed.policy.version, ""))
    assert applied.entry_sequence == 4 and applied.summary.startswith("activate policy")
    token = _as("adm0")
    try:
        state = await servicer.GetGovernance(policy_pb2.GetGovernanceRequest(), None)
        assert state.head_sequence == 4 and state.active_policy_version == proposed.policy.version
        assert state.fingerprint == admins.trust().fingerprint() and state.quorum == 1
        spec = common_pb2.IntentSpec(
            action=common_pb2.ACTION_STAKE,
            chain="ethereum-devnet",
            vault_id="v1",
            amount="32000000000000000000",
            stake=common_pb2.StakeTarget(validator="0xaa"),
        )
        resp = await servicer.EvaluateIntent(
            policy_pb2.EvaluateIntentRequest(intent_id="i1", spec=spec, initiator="o1"), None
        )
        d = resp.decision
        assert d.outcome == policy_pb2.OUTCOME_ALLOW and d.rule_id == "r"
        assert list(d.requirement.groups[0].members) == ["o2", "o3"]
        assert [a.approver_id for a in resp.approvers] == ["o2", "o3"]
        listed = await servicer.ListApprovers(policy_pb2.ListApproversRequest(group="ops", page_size=2), None)
        assert len(listed.approvers) == 2 and listed.next_page_token == "2"
        with pytest.raises(InvalidArgument):
            await servicer.EvaluateIntent(policy_pb2.EvaluateIntentRequest(spec=spec, initiator=""), None)
    finally:
        reset_principal(token)
