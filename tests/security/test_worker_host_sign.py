"""The worker host calls the signer's ``Sign`` itself, with what it holds.

It holds the ``svc:worker`` certificate (the only identity ``Sign`` serves), every
approval that reached a workflow it runs (``World``: x's and d's, signed and sent;
u's and r's, signed and not yet acted on), and whatever bytes it cares to build.
Each attack asks for a signature the approvals do not grant. The signer must refuse
it with a typed error and an audit record, sign nothing, and nothing may leave the
vault on anvil.

Before the insider-proof approvals (d6b3e87), approvals named no intent: the first
attack got a second 32 ETH deposit mined, ten-year approvals counted, an exit's
value was not bounded (see the README of this directory for how each was replayed
against that code).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from services.families.config import HOODI_GENESIS_FORK_VERSION
from services.families.ethereum.deposit import generate_deposit_data, stake_target
from services.runtime.intent import Action, IntentSpec
from tests.security.insiders import WorkerHost, assert_refused
from tests.security.stack import CHAIN, ETH, VAULT, Real, SecurityStack, validator_pubkey
from tests.security.world import World

#: Where the attacker would like funds and validators to end up.
ATTACKER = "0x" + "a7" * 20


def made_up_id() -> str:
    return f"int-{uuid.uuid4().hex}"


async def test_a_real_intents_approvals_buy_nothing_under_made_up_intent_ids(
    stack: SecurityStack, world: World, worker_host: WorkerHost
) -> None:
    """x's two approvals, presented for the same 32 ETH deposit under intent ids never
    submitted (and under x's initiator and submission time, or new ones), count for nothing:
    the digest they signed names x."""
    x = world.x
    now = datetime.now(UTC)
    for binding in ({}, {"submitted_at": now}, {"initiator": "ops", "submitted_at": now}):
        before = await stack.evidence()
        intent_id = made_up_id()
        error = await worker_host.refused(
            x, intent_id=intent_id, tx=worker_host.tx(x.spec, nonce=before.nonce), **binding
        )
        record = await assert_refused(
            stack,
            before,
            error,
            status="PERMISSION_DENIED",
            error_type="ApprovalsInsufficient",
            subject=f"intent:{intent_id}",
        )
        assert sorted(record["payload"]["not_counted"]) == [
            "olivia: signed for another intent",
            "oscar: signed for another intent",
        ]


async def test_a_signed_intents_approvals_are_spent_once(
    stack: SecurityStack, world: World, worker_host: WorkerHost
) -> None:
    """x was signed and mined: its approvals asked again for x's step, at the next nonce,
    get nothing (the signer signed that step over another payload)."""
    x = world.x
    before = await stack.evidence()
    error = await worker_host.refused(x, tx=worker_host.tx(x.spec, nonce=before.nonce))
    await assert_refused(
        stack,
        before,
        error,
        status="FAILED_PRECONDITION",
        error_type="ConflictingSignature",
        subject=f"intent:{x.id}",
    )


async def test_a_signed_intents_approvals_buy_no_second_step(
    stack: SecurityStack, world: World, worker_host: WorkerHost
) -> None:
    """An Ethereum action is one transaction, its step named after the action. x's approvals
    asked for the same deposit under another step name, at the next nonce, would be a second
    32 ETH deposit: refused as a malformed request."""
    x = world.x
    for step in ("stake-2", "deposit", "STAKE", "unstake"):
        before = await stack.evidence()
        error = await worker_host.refused(x, step=step, tx=worker_host.tx(x.spec, nonce=before.nonce))
        record = await assert_refused(
            stack,
            before,
            error,
            status="INVALID_ARGUMENT",
            error_type="BadSignRequest",
            subject=f"intent:{x.id}",
        )
        assert "step" in record["payload"]["reason"]


async def test_an_approval_counts_only_within_the_intents_window(
    stack: SecurityStack, world: World, worker_host: WorkerHost
) -> None:
    """olivia signed u's approval to count for ten years (her CLI would not; a hand-made one
    would): it does not count past u's approval window, so oscar's alone is short."""
    u = world.u
    ten_years = datetime.now(UTC) + timedelta(days=3650)
    approvals = [stack.approval(u.intent, "olivia", expires_at=ten_years), u.approvals[1]]
    before = await stack.evidence()
    error = await worker_host.refused(u, approvals=approvals, tx=worker_host.tx(u.spec, nonce=before.nonce))
    record = await assert_refused(
        stack,
        before,
        error,
        status="PERMISSION_DENIED",
        error_type="ApprovalsInsufficient",
        subject=f"intent:{u.id}",
    )
    assert record["payload"]["not_counted"] == ["olivia: approval expires after the intent's approval window"]


async def test_an_exit_sends_no_value(stack: SecurityStack, world: World, worker_host: WorkerHost) -> None:
    """u is a full exit, approved by two: the transaction carrying it with 100 ETH of value
    (the system contract would keep it) is not u."""
    u = world.u
    before = await stack.evidence()
    error = await worker_host.refused(u, tx=worker_host.tx(u.spec, nonce=before.nonce, value=100 * ETH))
    record = await assert_refused(
        stack,
        before,
        error,
        status="FAILED_PRECONDITION",
        error_type="TransactionMismatch",
        subject=f"intent:{u.id}",
    )
    assert record["payload"]["value"] == str(100 * ETH)


async def test_a_consolidation_goes_only_where_approved(
    stack: SecurityStack, world: World, worker_host: WorkerHost
) -> None:
    """r consolidates x's validator into an honest one. Its approvals do not sign the
    consolidation into the attacker's validator: not as r's transaction, nor as an intent
    of its own."""
    r = world.r
    source = r.spec.target.source_validator  # type: ignore[union-attr]
    theirs = stack.restake_spec(source, validator_pubkey("attacker"))
    before = await stack.evidence()
    error = await worker_host.refused(r, tx=worker_host.tx(theirs, nonce=before.nonce))
    record = await assert_refused(
        stack,
        before,
        error,
        status="FAILED_PRECONDITION",
        error_type="TransactionMismatch",
        subject=f"intent:{r.id}",
    )
    assert "validator" in record["payload"]["reason"]

    before = await stack.evidence()
    intent_id = made_up_id()
    error = await worker_host.refused(
        r, intent_id=intent_id, spec=theirs, tx=worker_host.tx(theirs, nonce=before.nonce)
    )
    await assert_refused(
        stack,
        before,
        error,
        status="PERMISSION_DENIED",
        error_type="ApprovalsInsufficient",
        subject=f"intent:{intent_id}",
    )


async def test_a_thousand_eth_stake_to_the_attackers_validator(
    stack: SecurityStack, world: World, worker_host: WorkerHost
) -> None:
    """A made-up 1,000 ETH deposit to a validator whose withdrawals go to the attacker: the
    active policy, which the signer evaluates itself, denies it before any approval counts."""
    gen = generate_deposit_data(
        withdrawal_address=bytes.fromhex(ATTACKER[2:]),
        amount_wei=1000 * ETH,
        genesis_fork_version=bytes.fromhex(HOODI_GENESIS_FORK_VERSION[2:]),
        compounding=True,
    )
    spec = IntentSpec(Action.STAKE, CHAIN, VAULT, 1000 * ETH, stake_target(gen.data))
    before = await stack.evidence()
    intent_id = made_up_id()
    error = await worker_host.refused(
        world.x,
        intent_id=intent_id,
        spec=spec,
        submitted_at=datetime.now(UTC),
        tx=worker_host.tx(spec, nonce=before.nonce),
    )
    record = await assert_refused(
        stack,
        before,
        error,
        status="FAILED_PRECONDITION",
        error_type="PolicyRefuses",
        subject=f"intent:{intent_id}",
    )
    assert record["payload"]["rule_id"] == "cap"


async def test_a_denied_intents_approvals_from_temporal_history(
    stack: SecurityStack, world: World, worker_host: WorkerHost
) -> None:
    """d was DENIED when its quorum met the vault's velocity limit. Its two approvals, read from
    its workflow's history at the Temporal frontend, go straight to the signer: the signer
    counts what it signed for the vault itself and refuses too."""
    d = world.d
    approvals = await worker_host.approvals_in_history(d.id)
    assert sorted(a.approver_id for a in approvals) == ["olivia", "oscar"]
    stolen = Real(d.intent, d.spec, approvals)
    before = await stack.evidence()
    error = await worker_host.refused(stolen, tx=worker_host.tx(d.spec, nonce=before.nonce))
    record = await assert_refused(
        stack,
        before,
        error,
        status="FAILED_PRECONDITION",
        error_type="PolicyRefuses",
        subject=f"intent:{d.id}",
    )
    assert any("velocity" in reason for reason in record["payload"]["reasons"])
