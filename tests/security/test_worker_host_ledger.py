"""The worker host against the signer's ledger: records read, rewritten, appended and cut around
a crash, and a second signer process of the installation.

The ledger's promise (``services.signer.ledger``, ``services.signer.anchor``): no record is in the
database before the head covering it is on the HSM token, and "already signed?" and velocity come
from records the signer verified against the chain, the HSM and that head. The worker host holds
the database as its owner, ``svc:worker`` (it calls ``Sign`` and ``BroadcastTransaction``) and may
kill the signer. Findings 3 and 4 of this directory's README (closed) are the first two tests.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from typing import Any

from sqlalchemy.orm import Session

from services.families.ethereum.transactions import UnsignedTransaction, parse_signed
from services.pb.custos.signer.v1 import signer_pb2
from services.pb.custos.staking.v1 import staking_pb2
from services.runtime.errors import CustosError
from services.runtime.grpc_errors import RemoteError
from services.signer.client import SignerClient
from services.signer.ledger import record_hash, replace_record
from services.signer.models import SigningRecord
from services.staking.client import StakingClient
from tests.security.insiders import WorkerHost, assert_refused
from tests.security.stack import CHAIN, ETH, SIGNING_RECORDS, Real, SecurityStack
from tests.security.world import World


def _records_of(stack: SecurityStack, intent_id: str) -> list[Any]:
    return list(
        stack.sql(
            f"SELECT * FROM {SIGNING_RECORDS} WHERE intent_id = :i ORDER BY ledger_seq", {"i": intent_id}
        )
    )


async def _funded_vault(stack: SecurityStack) -> tuple[str, str]:
    """A new vault: its key made by ops in the HSM, its address funded on anvil."""
    vault = f"vault-{uuid.uuid4().hex[:8]}"
    async with stack.client(SignerClient, "ops") as signer:
        key = await signer.call(
            "CreateKey",
            signer_pb2.CreateKeyRequest(
                vault_id=vault,
                algorithm=signer_pb2.KEY_ALGORITHM_SECP256K1,
                purpose=signer_pb2.KEY_PURPOSE_VAULT,
            ),
        )
    address = next(a.address for a in key.key.addresses if a.chain == CHAIN)
    await asyncio.to_thread(stack.devnet.fund, address, 100 * ETH)
    return vault, str(address)


async def _nonce(stack: SecurityStack, address: str) -> int:
    return int(await stack.devnet.rpc.call("eth_getTransactionCount", address, "pending"), 16)


def _stored(stack: SecurityStack, record_id: str) -> SigningRecord:
    """The record as the signer reads it (its columns' types, which its hash is over)."""
    with Session(stack.engine) as s:
        record = s.get(SigningRecord, record_id)
        assert record is not None
        s.expunge(record)
        return record


def _put_records(stack: SecurityStack, rows: list[Any]) -> None:
    for row in rows:
        values = dict(row._mapping)
        columns, params = ", ".join(values), ", ".join(f":{k}" for k in values)
        stack.sql(f"INSERT INTO {SIGNING_RECORDS} ({columns}) VALUES ({params})", values)


async def _sign_or_refusal(worker_host: WorkerHost, real: Real, **kwargs: Any) -> Any:
    """The signer's answer to ``Sign``: the response, or the typed error it refused with."""
    try:
        return await worker_host.sign(real, **kwargs)
    except CustosError as e:
        assert isinstance(e, RemoteError), e
        return e


async def _honest(stack: SecurityStack, spec: Any) -> Real:
    """A submitted intent and the approvals olivia and oscar signed for it (which the worker host
    sees in its workflow's history); the workflow itself is left waiting."""
    intent = await stack.submit(spec)
    return Real(intent, spec, [stack.approval(intent, who) for who in ("olivia", "oscar")])


async def _cancel(stack: SecurityStack, real: Real) -> None:
    async with stack.client(StakingClient, "alice") as staking:
        await staking.call(
            "CancelIntent", staking_pb2.CancelIntentRequest(intent_id=real.id, reason="attack over")
        )


async def test_a_signature_read_before_its_head_reached_the_token(
    stack: SecurityStack, world: World, worker_host: WorkerHost
) -> None:
    """The worker host asks for z (a 32 ETH stake from a vault of its own, approvals olivia and
    oscar) and kills the signer the moment z's record is committed. z's signed transaction is in
    the database, which the worker host reads and broadcasts; it deletes the record, starts the
    signer again and asks for z at the next nonce. Before the fix the token's head was written
    after the commit: killed in between, the cut record left no trace, z's step was free again and
    a second 32 ETH deposit was signed and mined. The head now reaches the token before the
    database: the restarted signer finds z's batch on the token but not in the database, and signs
    z's step only as the same transaction, at the same nonce."""
    vault, address = await _funded_vault(stack)  # its own velocity: vault-1's is the other tests'
    z = await _honest(stack, replace(stack.stake_spec(32, withdrawal_to=address), vault_id=vault))
    start = await _nonce(stack, address)
    cut: list[Any] = []
    got: list[bytes] = []
    try:
        await worker_host.sign(z, tx=worker_host.tx(z.spec, nonce=start))  # committed, then killed
        await stack.stop("signer")
        cut = _records_of(stack, z.id)
        got += [bytes(r.signed_tx) for r in cut]  # read as the database owner
        for signed in got:
            await worker_host.broadcast(signed)
        stack.sql(f"DELETE FROM {SIGNING_RECORDS} WHERE intent_id = :i", {"i": z.id})
        await stack.start("signer")
        before = await stack.evidence()
        answer = await _sign_or_refusal(worker_host, z, tx=worker_host.tx(z.spec, nonce=start + len(got)))
        if not isinstance(answer, RemoteError):
            got.append(answer.signed_tx)
            await worker_host.broadcast(answer.signed_tx)  # it lands: anvil's nonce stays the ledger's
            assert await _nonce(stack, address) == start + 2  # two 32 ETH deposits mined
        assert isinstance(answer, RemoteError), f"{len(got)} signed transactions for z's one step"
        await assert_refused(
            stack,
            before,
            answer,
            status="FAILED_PRECONDITION",
            error_type="ConflictingSignature",
            subject=f"intent:{z.id}",
        )
    finally:
        if "signer" not in stack._running:
            await stack.start("signer")
        if cut and not _records_of(stack, z.id):  # refused: the ledger as it was
            _put_records(stack, cut)
            await stack.restart("signer")
        await _cancel(stack, z)


async def test_another_signer_process_reads_a_rewritten_record(
    stack: SecurityStack, world: World, worker_host: WorkerHost
) -> None:
    """Two signer processes on one database and token, as the signer scales. The worker host has
    process A sign w (a consolidation, approvals olivia and oscar) and broadcasts it; before process
    B reads w's record, it rewrites the record's intent id (the amount, vault or time would do for
    velocity) and recomputes its hash, which is no secret. B checks the link, the hash and the HSM's
    signature over the record's signing digest, none of which binds the intent. Before the fix it
    counted the record as another intent's, signed w again at the next nonce, and both requests
    were mined. Now B compares the chain with the head A wrote to the token before its commit,
    when it takes the ledger lock to commit its own: they differ, and nothing of B's leaves."""
    validator = world.x.spec.target.validator  # type: ignore[union-attr]
    w = await _honest(stack, stack.restake_spec(validator, world.honest_validator))
    rewritten: list[Any] = []
    second: Any = None
    try:
        async with stack.second_signer() as process_b:
            start = await stack.vault_nonce()
            first = await worker_host.sign(w, tx=worker_host.tx(w.spec, nonce=start))  # process A
            await worker_host.broadcast(first.signed_tx)
            (row,) = _records_of(stack, w.id)
            record = replace_record(_stored(stack, row.record_id), intent_id=f"{w.id}-void")
            stack.sql(
                f"UPDATE {SIGNING_RECORDS} SET intent_id = :i, record_hash = :h WHERE record_id = :r",
                {"i": record.intent_id, "h": record_hash(record), "r": record.record_id},
            )
            rewritten.append(row)
            before = await stack.evidence()
            second = await _sign_or_refusal(
                worker_host, w, tx=worker_host.tx(w.spec, nonce=before.nonce), at=process_b
            )
            if not isinstance(second, RemoteError):
                await worker_host.broadcast(second.signed_tx)
                assert await stack.vault_nonce() == start + 2  # both requests landed
            assert isinstance(second, RemoteError), "w's one approval set signed twice"
            await assert_refused(
                stack,
                before,
                second,
                status="FAILED_PRECONDITION",
                error_type="LedgerUnverified",
                subject=f"intent:{w.id}",
            )
    finally:
        if rewritten and isinstance(second, RemoteError | None):  # refused: the record as it was
            (row,) = rewritten
            stack.sql(
                f"UPDATE {SIGNING_RECORDS} SET intent_id = :i, record_hash = :h WHERE record_id = :r",
                {"i": row.intent_id, "h": row.record_hash, "r": row.record_id},
            )
        await stack.restart("signer")  # process A, which stops at the chain B extended
        await _cancel(stack, w)


async def test_a_record_appended_with_a_signature_from_the_ledger(
    stack: SecurityStack, world: World, worker_host: WorkerHost
) -> None:
    """A record appended by hand, well linked, claiming d's step was signed with amount 0 (so d's
    40 ETH could come back as a "fee bump" outside velocity) and carrying x's real signature, the
    only kind of HSM signature the worker host can copy: the running signer reads it on its next
    Sign and signs nothing more, until an operator removes it."""
    x, d = world.x, world.d
    (last,) = stack.sql(f"SELECT * FROM {SIGNING_RECORDS} ORDER BY ledger_seq DESC LIMIT 1")
    (source,) = _records_of(stack, x.id)[:1]
    forged = replace_record(
        _stored(stack, source.record_id),
        record_id="sig_forged_by_the_worker_host",
        intent_id=d.id,
        nonce=10**6,  # a nonce nobody signed: the record's fields are the forger's to choose
        amount="0",
        ledger_seq=int(last.ledger_seq) + 1,
        prev_hash=bytes(last.record_hash),
    )
    forged.record_hash = record_hash(forged)
    values = {c.key: getattr(forged, c.key) for c in SigningRecord.__table__.columns}
    columns, params = ", ".join(values), ", ".join(f":{k}" for k in values)
    stack.sql(f"INSERT INTO {SIGNING_RECORDS} ({columns}) VALUES ({params})", values)
    try:
        before = await stack.evidence()
        error = await worker_host.refused(world.u, tx=worker_host.tx(world.u.spec, nonce=before.nonce))
        record = await assert_refused(
            stack,
            before,
            error,
            status="FAILED_PRECONDITION",
            error_type="LedgerUnverified",
            subject=f"intent:{world.u.id}",
        )
        assert "repeats a signature" in record["payload"]["reason"]
    finally:
        stack.sql(f"DELETE FROM {SIGNING_RECORDS} WHERE record_id = :r", {"r": forged.record_id})
        await stack.restart("signer")


async def test_fee_bumps_that_change_more_than_fees(
    stack: SecurityStack, world: World, worker_host: WorkerHost
) -> None:
    """x's approvals at x's own nonce with only the fee cap raised, or both fees higher but another
    call: neither is a fee bump (both fee fields strictly higher, the same call; the gas limit may
    change, see test_families), so the step would be signed over another payload."""
    x = world.x
    (record,) = _records_of(stack, x.id)
    old = parse_signed(bytes(record.signed_tx)).tx
    cap_only = _unsigned(old, max_fee_per_gas=old.max_fee_per_gas + 1)
    other_nonce = _unsigned(
        old,
        max_fee_per_gas=old.max_fee_per_gas + 1,
        max_priority_fee_per_gas=old.max_priority_fee_per_gas + 1,
        nonce=old.nonce + 1,
    )
    for tx in (cap_only, other_nonce):
        before = await stack.evidence()
        error = await worker_host.refused(x, tx=tx)
        await assert_refused(
            stack,
            before,
            error,
            status="FAILED_PRECONDITION",
            error_type="ConflictingSignature",
            subject=f"intent:{x.id}",
        )


def _unsigned(tx: UnsignedTransaction, **changes: int) -> bytes:
    """``tx`` unsigned again, with ``changes`` to its integer fields."""
    fields = {
        "chain_id": tx.chain_id,
        "nonce": tx.nonce,
        "max_priority_fee_per_gas": tx.max_priority_fee_per_gas,
        "max_fee_per_gas": tx.max_fee_per_gas,
        "gas": tx.gas,
        "value": tx.value,
        **changes,
    }
    return UnsignedTransaction(to=tx.to, data=tx.data, **fields).encode()
