"""Governed changes anchored in the signer: the policy service's side.

The policy service's governed changes (the real ``Governance`` on SQLite and PostgreSQL)
with a real signer serving AnchorGovernance over gRPC on the real SoftHSM token, called
as ``svc:policy``. With the signer up, an applied change comes back anchored; with it
down, applied but not anchored (and audited so); once it is back, the next change, or
``anchor_log``, anchors everything before it too.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.audit.models import AuditRecordRow
from services.audit.writer import AuditWriter
from services.policy.anchoring import AnchoredGovernance
from services.policy.changes import ChangeView, Governance
from services.policy.domain import SignatureScheme
from services.policy.evidence import public_key_der
from services.policy.governance import Change, ChangeState, RegisterApprover, RevokeApproverKey
from services.runtime.ports import free_port
from services.signer.hsm import Hsm
from tests.policy.governed import Admins
from tests.signer.anchor_rig import serving_signer


async def _govern(anchoring: AnchoredGovernance, admins: Admins, change: Change) -> ChangeView:
    """``change`` proposed by adm0 and, unless that applied it, approved by adm1."""
    request = admins.request(change, datetime.now(UTC))
    view = await anchoring.propose(request, admins.sign("adm0", request), caller="adm0")
    if view.state is ChangeState.PROPOSED:
        view = await anchoring.decide(request.change_id, admins.sign("adm1", request), caller="adm1")
    assert view.state is ChangeState.APPLIED, view
    return view


def _register(name: str) -> RegisterApprover:
    key = public_key_der(ed25519.Ed25519PrivateKey.generate())
    return RegisterApprover(name, name, ("ops",), SignatureScheme.ED25519, key)


def _audited(sessions: sessionmaker[Session], action: str) -> list[dict[str, str]]:
    with sessions() as s:
        rows = s.scalars(
            select(AuditRecordRow).where(AuditRecordRow.action == action).order_by(AuditRecordRow.sequence)
        )
        return [{"subject": r.subject, "actor": r.actor, **json.loads(r.payload_json)} for r in rows]


async def test_anchored_with_the_signer_up_not_while_it_is_down_and_caught_up_after(
    hsm: Hsm, session_factory: sessionmaker[Session]
) -> None:
    admins = Admins()
    audit = AuditWriter(session_factory, "svc:policy")
    gov = Governance(session_factory, admins.trust(), audit=audit)
    port = free_port()
    async with serving_signer(session_factory, hsm, admins.trust(), port=port) as signer:
        client = signer.client("svc:policy")  # the policy service's, kept across the outage
        anchoring = AnchoredGovernance(gov, client, audit=audit)
        up = await _govern(anchoring, admins, _register("alice"))
        assert (up.anchored, up.signer_head, up.anchor_error) == (True, 1, "")
    try:
        down = await _govern(anchoring, admins, _register("bob"))  # applied, the log is the truth
        assert (down.entry_seq, down.anchored, down.signer_head) == (2, False, 1)
        assert "signer:" in down.anchor_error
        assert not (await anchoring.get(down.request.change_id)).anchored
        assert (await anchoring.get(up.request.change_id)).anchored
        log_down = await anchoring.anchor_log(caller="adm0")
        assert (log_down.head.seq, log_down.anchored) == (2, False) and log_down.error
        (failed, again) = _audited(session_factory, "governance.anchor_failed")
        assert (failed["subject"], failed["actor"], failed["entry"]) == (
            f"change:{down.request.change_id}",
            "adm1",
            "2",
        )
        assert failed["error"] == "RemoteUnavailable" and again["subject"] == "governance:2"

        # The signer is back: a restarted process of the installation (same token object).
        async with serving_signer(session_factory, hsm, admins.trust(), label=signer.label, port=port):
            await asyncio.wait_for(client.channel.channel_ready(), 10)
            bob_key = gov.current().approvers["bob"].keys[0].key_id
            revoked = await _govern(anchoring, admins, RevokeApproverKey("bob", bob_key, "lost"))
            assert (revoked.entry_seq, revoked.anchored, revoked.signer_head) == (3, True, 3)
            assert (await anchoring.get(down.request.change_id)).anchored  # caught up with it
            listed = await anchoring.list_changes(state=ChangeState.APPLIED, page_size=10, offset=0)
            assert all(v.anchored for v in listed) and len(listed) == 3
            log_up = await anchoring.anchor_log(caller="adm0")
            assert (log_up.head.seq, log_up.anchored, log_up.signer_head, log_up.error) == (3, True, 3, "")
    finally:
        await client.close()
    anchored = _audited(session_factory, "governance.anchored")
    assert [(a["entry"], a["signer_head"]) for a in anchored] == [("1", "1"), ("3", "3"), ("3", "3")]
    assert [a["actor"] for a in anchored] == ["adm1", "adm0", "adm0"]


async def test_without_a_signer_nothing_is_anchored(session_factory: sessionmaker[Session]) -> None:
    admins = Admins()
    anchoring = AnchoredGovernance(Governance(session_factory, admins.trust()), None)
    empty = await anchoring.anchor_log(caller="adm0")
    assert (empty.head.seq, empty.anchored) == (0, True)  # nothing to anchor
    view = await _govern(anchoring, admins, _register("alice"))
    assert (view.anchored, view.anchor_error) == (
        False,
        "this policy service has no signer to anchor the change at",
    )


@pytest.mark.parametrize("role", ["svc:worker", "svc:staking"])
async def test_the_signer_refuses_other_callers(
    hsm: Hsm, session_factory: sessionmaker[Session], role: str
) -> None:
    """A policy service configured with another service's certificate anchors nothing."""
    admins = Admins()
    async with serving_signer(session_factory, hsm, admins.trust()) as signer:
        async with signer.client(role) as client:
            anchoring = AnchoredGovernance(Governance(session_factory, admins.trust()), client)
            view = await _govern(anchoring, admins, _register("alice"))
    assert not view.anchored and "signer:" in view.anchor_error
