"""The worker host against the ledger's token anchoring (a second red-team pass).

The insider holds the database as its owner, ``svc:worker`` (it calls ``Sign`` with the approvals
of real intents) and may stop, pause and restart a signer process at any moment; not the HSM PIN.
Each test plays one attack on twin signer processes sharing a database and a token (the wiring of
tests/signer/test_ledger.py). A refused attack asserts its typed error and that nothing more was
signed; one that works is a strict xfail named as an open finding (tests/security/README.md).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text

from services.runtime.db import utcnow
from services.signer.anchor import DataStore
from services.signer.errors import (
    ApprovalsInsufficient,
    ConflictingSignature,
    HsmUnavailable,
    LedgerUnverified,
    NonceReused,
)
from services.signer.hsm import Hsm
from services.signer.ledger import record_hash, replace_record
from services.signer.models import SigningRecord
from services.signer.service import SignerService, SignInput, SignOutput
from tests.fixtures.database import sql
from tests.signer.conftest import POLICY, SignerRig

VALIDATOR = bytes.fromhex("a1" * 48)
GWEI = 10**9
_LEDGER_LOCK = 0x6C656467  # services.signer.ledger's advisory lock key


def _process(
    rig: SignerRig,
    hsm: Hsm,
    label: str,
    store: DataStore | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> SignerService:
    """One signer process of the installation: the rig's wiring, the token head under ``label``."""
    return SignerService(
        hsm=hsm,
        sessions=rig.sessions,
        policy=rig.policy,
        audit=rig.audit,
        chains=[c.config for c in rig.service._chains.values()],
        ledger_store=store or hsm,
        ledger_label=label,
        clock=clock,
    )


def _request(rig: SignerRig, i: int, *, nonce: int, max_fee: int = 2 * GWEI, tip: int = GWEI) -> SignInput:
    spec = rig.unstake_spec(VALIDATOR, (i + 1) * GWEI)
    tx = rig.unstake_tx(VALIDATOR, (i + 1) * GWEI, nonce=nonce, max_fee=max_fee, tip=tip)
    return rig.request(spec, tx, intent_id=f"intent-{i}")


def _sign(rig: SignerRig, service: SignerService, i: int, *, nonce: int) -> SignOutput:
    return service.sign_blocking(_request(rig, i, nonce=nonce), "svc:worker")


def _count(rig: SignerRig) -> int:
    with rig.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(SigningRecord)) or 0)


def _owner(rig: SignerRig, statement: str, params: dict[str, object] | None = None) -> None:
    """Plain SQL as the database owner."""
    with rig.sessions.begin() as s:
        s.execute(text(sql(s, statement)), params or {})


@pytest.fixture
def label() -> str:
    return f"t-ledger-rt-{secrets.token_hex(6)}"


class _StopsAfterTokenWriteFake:
    """A signer process killed right after its token write, before its commit (the write lands,
    the transaction never commits)."""

    def __init__(self, hsm: Hsm) -> None:
        self._hsm = hsm

    def load_all_data(self, label: str) -> list[bytes]:
        return self._hsm.load_all_data(label)

    def replace_data(self, label: str, value: bytes, replaces: Collection[bytes]) -> None:
        self._hsm.replace_data(label, value, replaces)
        raise HsmUnavailable("the signer process stopped here")


class _PausedBeforeTokenWriteFake:
    """A signer process that stalls between taking the ledger lock and writing its head: stopped
    by the host (``kill -STOP``), descheduled, or waiting for its HSM. While ``armed``, the next
    write waits for ``go`` after setting ``reached``."""

    def __init__(self, hsm: Hsm) -> None:
        self._hsm = hsm
        self.armed = False
        self.reached = threading.Event()
        self.go = threading.Event()

    def load_all_data(self, label: str) -> list[bytes]:
        return self._hsm.load_all_data(label)

    def replace_data(self, label: str, value: bytes, replaces: Collection[bytes]) -> None:
        if self.armed:
            self.armed = False
            self.reached.set()
            assert self.go.wait(30)
        self._hsm.replace_data(label, value, replaces)


# --- findings 6 and 7 (closed) ------------------------------------------------------------------


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_signer_that_loses_its_ledger_lock_leaves_both_heads(rig: SignerRig, hsm: Hsm, label: str) -> None:
    """Process A holds the advisory lock and stalls before its token write; the database owner
    ends A's session (``pg_terminate_backend``, or an ``idle_in_transaction_session_timeout`` set
    on the database), so the lock is free; process B signs intent-2 (nonce 2), writes its head and
    commits: its signature leaves. A resumes and writes its own head (A's commit then fails); the
    owner deletes B's record and restarts the signer. At 1ab006e A's write replaced B's head, the
    chain ended where A's batch began, B's record was nowhere, and intent-2's approvals signed again
    at nonce 3. A writer now destroys only the heads it read: B's stays beside A's, and both batches
    are lost, so intent-2 signs again only as the same transaction."""
    pause = _PausedBeforeTokenWriteFake(hsm)
    a = _process(rig, hsm, label, pause)
    b = _process(rig, hsm, label)
    try:
        _sign(rig, a, 0, nonce=0)  # seq 1, anchored
        pause.armed = True
        with ThreadPoolExecutor(1) as pool:
            stalled = pool.submit(_sign, rig, a, 1, nonce=1)
            assert pause.reached.wait(30)  # A holds the lock, its head not yet written
            with rig.sessions.begin() as s:
                ended = s.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                        "AND classid::bigint = :c AND granted"
                    ),
                    {"c": _LEDGER_LOCK},
                ).all()
            assert ended == [(True,)]
            first = _sign(rig, b, 2, nonce=2)  # B signs intent-2: this signature leaves
            pause.go.set()
            with pytest.raises(Exception):  # noqa: B017 - A's commit dies with its session
                stalled.result(30)
    finally:
        a.close()
        b.close()
    assert not first.replayed
    _owner(rig, "DELETE FROM {signer_signing_records} WHERE intent_id = 'intent-2'")
    restarted = _process(rig, hsm, label)
    try:
        with pytest.raises((ConflictingSignature, LedgerUnverified)):
            _sign(rig, restarted, 2, nonce=3)  # intent-2's approvals, a second time
    finally:
        restarted.close()


class _Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def test_a_lost_entry_does_not_hold_its_nonce(rig: SignerRig, hsm: Hsm, label: str) -> None:
    """The worker host kills the signer between its token write and its commit (on PostgreSQL a
    deferred constraint trigger failing the commit does the same, deterministically), and keeps it
    down, or failing, past the approvals' expiry. intent-0 can no longer be signed again (its
    approvals expired), and no other approved intent may take nonce 0: every transaction of the
    vault after nonce 0 waits for it on chain, for ever (a permanent DoS of the vault)."""
    clock = _Clock()
    killed = _process(rig, hsm, label, _StopsAfterTokenWriteFake(hsm), clock)
    with pytest.raises(HsmUnavailable):
        _sign(rig, killed, 0, nonce=0)
    killed.close()
    assert _count(rig) == 0
    clock.now += timedelta(hours=2)  # the approvals of intent-0 have expired
    restarted = _process(rig, hsm, label, clock=clock)
    try:
        with pytest.raises(ApprovalsInsufficient):
            _sign(rig, restarted, 0, nonce=0)
        # a later intent, approved now, built at the vault's next nonce (still 0 on chain)
        submitted = clock.now - timedelta(minutes=1)
        spec = rig.unstake_spec(VALIDATOR, 5 * GWEI)
        approvals = tuple(
            rig.approvers.approve(
                who,
                spec,
                intent_id="intent-later",
                submitted_at=submitted,
                expires=clock.now - datetime.now(UTC) + timedelta(minutes=30),
            )
            for who in ("alice", "bob")
        )
        later = SignInput(
            intent_id="intent-later",
            step="unstake",
            spec=spec,
            initiator=rig.initiator,
            policy_version=POLICY,
            approvals=approvals,
            unsigned_tx=rig.unstake_tx(VALIDATOR, 5 * GWEI, nonce=0),
            submitted_at=submitted,
        )
        assert not restarted.sign_blocking(later, "svc:worker").replayed
    finally:
        restarted.close()


# --- refused -------------------------------------------------------------------------------------


def test_a_cut_signature_appended_again_past_the_token_head_is_refused(
    rig: SignerRig, hsm: Hsm, label: str
) -> None:
    """A lost entry's signature is the HSM's, over a digest no stored record holds: it passes the
    check a record read from the database gets. The owner cuts intent-1's record (it becomes lost),
    lets the signer commit another batch, then appends, well linked, a record carrying intent-1's
    genuine signature as another intent's with amount 0. A restarted signer loads it (the chain
    may run past the token's head while another process commits), but the ledger lock compares
    the chain with the token again: nothing signs, in the running process or a restarted one."""
    first = _process(rig, hsm, label)
    try:
        _sign(rig, first, 0, nonce=0)
        _sign(rig, first, 1, nonce=1)
    finally:
        first.close()
    with rig.sessions() as s:
        cut = s.scalars(select(SigningRecord).where(SigningRecord.ledger_seq == 2)).one()
        s.expunge(cut)
    _owner(rig, "DELETE FROM {signer_signing_records} WHERE ledger_seq = 2")
    running = _process(rig, hsm, label)
    try:
        _sign(rig, running, 3, nonce=3)  # seq 2 again, the cut record carried as lost
        with rig.sessions() as s:
            tail = s.scalars(select(SigningRecord).where(SigningRecord.ledger_seq == 2)).one()
        forged = replace_record(
            cut,
            record_id="sig_forged",
            intent_id="intent-9",
            amount="0",
            ledger_seq=3,
            prev_hash=bytes(tail.record_hash),
        )
        forged.record_hash = record_hash(forged)
        with rig.sessions.begin() as s:
            s.add(forged)
        with pytest.raises(LedgerUnverified, match="added by someone other than a signer"):
            _sign(rig, running, 4, nonce=4)
    finally:
        running.close()
    restarted = _process(rig, hsm, label)
    try:
        with pytest.raises(LedgerUnverified):
            _sign(rig, restarted, 4, nonce=4)
        with pytest.raises((LedgerUnverified, ConflictingSignature)):
            _sign(rig, restarted, 1, nonce=5)  # intent-1's approvals again
    finally:
        restarted.close()
    assert _count(rig) == 3  # seq 1, seq 2 and the forged seq 3: nothing signed since


def test_a_lost_transaction_is_neither_bumped_nor_taken_by_an_identical_intent(
    rig: SignerRig, hsm: Hsm, label: str
) -> None:
    """intent-0 is lost (killed after its token write). Its approvals ask for a fee bump of the same
    transaction (its signature may be out: the bump would be a second one at that nonce, which is
    harmless, but "the same transaction" is what the token holds); another intent approved with
    exactly intent-0's terms asks for the very same bytes (same payload digest, another intent):
    the first is ConflictingSignature; the second is signed, the very transaction intent-0's lost
    signature would put on chain (a lost entry does not hold its nonce: finding 7), so whichever
    lands, one transaction moves funds once."""
    killed = _process(rig, hsm, label, _StopsAfterTokenWriteFake(hsm))
    with pytest.raises(HsmUnavailable):
        _sign(rig, killed, 0, nonce=0)
    killed.close()
    restarted = _process(rig, hsm, label)
    try:
        with pytest.raises(ConflictingSignature, match="not in the database"):
            restarted.sign_blocking(_request(rig, 0, nonce=0, max_fee=3 * GWEI, tip=2 * GWEI), "svc:worker")
        same_terms = rig.unstake_spec(VALIDATOR, GWEI)  # intent-0's spec, under another intent id
        twin = rig.request(same_terms, rig.unstake_tx(VALIDATOR, GWEI, nonce=0), intent_id="intent-twin")
        assert twin.unsigned_tx == _request(rig, 0, nonce=0).unsigned_tx
        assert not restarted.sign_blocking(twin, "svc:worker").replayed
        with pytest.raises(NonceReused):  # intent-0 itself, now that the nonce is another's record
            _sign(rig, restarted, 0, nonce=0)
    finally:
        restarted.close()
    assert _count(rig) == 1


def test_a_kill_loop_at_the_token_write_neither_frees_the_step_nor_grows_the_head(
    rig: SignerRig, hsm: Hsm, label: str
) -> None:
    """Killed after its token write on every try of the same Sign, restarted each time: the step
    stays bound to its one transaction and the head on the token stays the same size (a lost
    entry is kept once); the same transaction then signs once."""
    sizes = []
    for _ in range(4):
        killed = _process(rig, hsm, label, _StopsAfterTokenWriteFake(hsm))
        with pytest.raises(HsmUnavailable):
            _sign(rig, killed, 0, nonce=0)
        killed.close()
        raw = hsm.load_data(label)
        assert raw is not None
        sizes.append(len(raw))
    assert len(set(sizes[1:])) == 1
    restarted = _process(rig, hsm, label)
    try:
        with pytest.raises(ConflictingSignature):
            _sign(rig, restarted, 0, nonce=1)
        assert not _sign(rig, restarted, 0, nonce=0).replayed
        assert _sign(rig, restarted, 0, nonce=0).replayed
    finally:
        restarted.close()
    assert _count(rig) == 1


def test_two_processes_signing_at_once_extend_one_chain(rig: SignerRig, hsm: Hsm, label: str) -> None:
    """Is the token write serialised across processes? Two signer processes, three callers each,
    sign at once: neither extends a head the other extended (a restarted signer verifies the whole
    chain against the token and signs on)."""
    a, b = _process(rig, hsm, label), _process(rig, hsm, label)
    try:
        with ThreadPoolExecutor(6) as pool:
            done = list(pool.map(lambda i: _sign(rig, (a, b)[i % 2], i, nonce=i), range(18)))
    finally:
        a.close()
        b.close()
    assert len({o.signing_record_id for o in done}) == 18
    restarted = _process(rig, hsm, label)
    try:
        _sign(rig, restarted, 18, nonce=18)
    finally:
        restarted.close()
    with rig.sessions() as s:
        seqs = sorted(s.scalars(select(SigningRecord.ledger_seq)))
    assert seqs == list(range(1, 20))
