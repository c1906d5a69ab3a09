"""End to end on the real stack: Temporal dev server, every service as its own process,
SoftHSM, anvil with the staking contracts, a Cosmos SDK node (injectived), the Solana devnet (LiteSVM),
mTLS. STAKE, UNSTAKE and RESTAKE reach CONFIRMED on Ethereum and Cosmos, with a Cosmos vote and claim; the
Cosmos UNSTAKE only once the chain's unbonding ended; a Solana STAKE, and an UNSTAKE in two signed steps
around the cooldown epoch."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.cli import devstack
from services.cli.scenario import run_scenario
from services.staking.models import IntentRow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devstack.Stack]:
    s = devstack.Stack.named(tmp_path_factory.mktemp("stack"), "it")
    devstack.up(s)
    procs = s.running()
    try:
        yield s
    finally:
        devstack.down(s)
        assert devstack.leftover(procs) == [], "dev down left processes behind"


async def test_stake_unstake_restake_confirm_and_the_refusals_hold(stack: devstack.Stack) -> None:
    lines: list[str] = []
    results = await run_scenario(stack, lines.append)
    assert results == {
        "stake": "CONFIRMED",
        "unstake": "CONFIRMED",
        "restake": "CONFIRMED",
        "cosmos_stake": "CONFIRMED",
        "cosmos_restake": "CONFIRMED",
        "cosmos_unstake": "CONFIRMED",
        "cosmos_vote": "CONFIRMED",
        "cosmos_claim": "CONFIRMED",
        "solana_stake": "CONFIRMED",
        "solana_unstake": "CONFIRMED",
        "self_approval": "REFUSED",
        "over_limit": "DENIED",
        "lone_admin": "REFUSED",
        "audit": "OK",
    }, "\n".join(lines)


def test_read_model_and_chain_agree(stack: devstack.Stack) -> None:
    """Every confirmed intent has a transaction hash, and the read model holds every transition."""
    from sqlalchemy import select

    from services.runtime.db import make_engine, make_session_factory

    engine = make_engine(f"sqlite:///{Path(stack.root) / 'custos.db'}")
    try:
        with make_session_factory(engine)() as s:
            rows = list(s.scalars(select(IntentRow)))
    finally:
        engine.dispose()
    confirmed = [r for r in rows if r.state == "CONFIRMED"]
    ethereum = [r for r in confirmed if r.chain == "ethereum-devnet"]
    solana = {r.action: r for r in confirmed if r.chain == "solana-devnet"}
    assert set(solana) == {"STAKE", "UNSTAKE"}
    # the UNSTAKE signed two transactions (deactivate, then withdraw after the cooldown epoch)
    assert solana["UNSTAKE"].last_sequence == solana["STAKE"].last_sequence + 3
    cosmos = {r.action: r for r in confirmed if r.chain == "cosmos-devnet"}
    assert len(ethereum) == 3 and set(cosmos) == {"STAKE", "RESTAKE", "UNSTAKE", "VOTE", "CLAIM_REWARDS"}
    assert all(r.tx_hash.startswith("0x") and r.last_sequence == 7 for r in ethereum)
    # Cosmos transaction ids are the chain's own: 64 upper-case hex digits
    assert all(len(r.tx_hash) == 64 and r.tx_hash == r.tx_hash.upper() for r in cosmos.values())
    # the undelegation went through UNBONDING (the chain's completion time) before CONFIRMED
    assert cosmos["UNSTAKE"].last_sequence == 8 and cosmos["STAKE"].last_sequence == 7


def _open_files(pid: int) -> set[str]:
    out: set[str] = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed while we looked
            out.add(os.readlink(fd))
    return out


def test_the_worker_has_no_database_open_the_staking_service_does(stack: devstack.Stack) -> None:
    """The worker writes no table: after the scenario's intents it holds no handle on the database
    (nor its WAL), which the staking service, the one that records their transitions, holds."""
    database = str((Path(stack.root) / "custos.db").resolve())
    pids = {p["name"]: p["pid"] for p in stack.running()}
    holding = {
        name: sorted(f for f in _open_files(pids[name]) if f.startswith(database))
        for name in ("worker", "staking")
    }
    assert holding["worker"] == [], holding
    assert holding["staking"], "the probe sees no database handle at all: it proves nothing"


def test_the_audit_trail_tells_each_intents_story_in_order(stack: devstack.Stack) -> None:
    from sqlalchemy import select

    from services.audit import repository as audit_repo
    from services.runtime.db import make_engine, make_session_factory

    engine = make_engine(f"sqlite:///{Path(stack.root) / 'custos.db'}")
    try:
        with make_session_factory(engine)() as s:
            stake = s.scalars(select(IntentRow).where(IntentRow.action == "STAKE")).first()
            assert stake is not None
            records = audit_repo.records_between(s, 1, audit_repo.read_head(s).sequence)
    finally:
        engine.dispose()
    story = [r.action for r in records if r.subject == f"intent:{stake.intent_id}"]
    expected = [
        "intent.submitted",
        "intent.awaiting_policy",
        "intent.awaiting_approvals",
        "intent.approved_by",
        "intent.approved_by",
        "intent.approved",
        "intent.signing",
        "signer.sign",
        "intent.broadcast",
        "intent.confirmed",
    ]
    assert [a for a in story if a in set(expected)] == expected, story


async def test_an_intent_recorded_but_never_started_is_started_by_the_reconciler(
    stack: devstack.Stack,
) -> None:
    """As if staking died between recording an intent and starting its workflow."""
    import asyncio
    import uuid
    from datetime import timedelta

    from sqlalchemy import select

    from services.runtime.db import make_engine, make_session_factory, transaction

    engine = make_engine(f"sqlite:///{Path(stack.root) / 'custos.db'}")
    factory = make_session_factory(engine)
    try:
        with transaction(factory) as s:
            model = s.scalars(select(IntentRow).where(IntentRow.action == "STAKE")).first()
            assert model is not None
            orphan = IntentRow(
                **{
                    c.key: getattr(model, c.key)
                    for c in IntentRow.__table__.columns
                    if c.key not in {"intent_id", "idempotency_key", "state", "workflow_started"}
                },
                intent_id=f"int-{uuid.uuid4().hex}",
                idempotency_key=f"orphan-{uuid.uuid4().hex}",
                state="SUBMITTED",
                workflow_started=0,
            )
            orphan.last_sequence, orphan.tx_hash, orphan.reason = 1, "", ""
            orphan.created_at = orphan.updated_at = model.created_at - timedelta(minutes=1)
            s.add(orphan)
            orphan_id = orphan.intent_id
        state = ""
        for _ in range(120):
            with factory() as s:
                row = s.get(IntentRow, orphan_id)
                assert row is not None
                state = row.state if row.workflow_started else "not started"
            if state == "AWAITING_APPROVALS":
                break
            await asyncio.sleep(0.25)
        else:
            raise AssertionError(f"the reconciler did not start {orphan_id}: {state}")
    finally:
        engine.dispose()
