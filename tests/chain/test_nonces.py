"""Nonce reservations and broadcast records on SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from services.chain.errors import BroadcastRejected
from services.chain.repository import NonceRepository
from services.runtime.db import make_engine, make_session_factory

CHAIN = "ethereum-devnet"
ADDRESS = "0x" + "11" * 20
T0 = datetime(2025, 1, 1, tzinfo=UTC)
RELEASE = timedelta(minutes=10)


def _reserve(
    repo: NonceRepository, intent: str, *, step: str = "stake", floor: int = 0, now: datetime = T0
) -> int:
    return repo.reserve(
        chain=CHAIN,
        address=ADDRESS,
        intent_id=intent,
        step=step,
        chain_nonce=floor,
        now=now,
        release_after=RELEASE,
    )


def test_same_intent_step_gets_the_same_nonce_and_others_the_next(
    session_factory: sessionmaker[Session],
) -> None:
    repo = NonceRepository(session_factory)
    assert _reserve(repo, "a") == 0
    assert _reserve(repo, "a") == 0
    assert _reserve(repo, "b") == 1
    assert _reserve(repo, "a", step="withdraw") == 2
    assert _reserve(repo, "b") == 1


def test_nonces_below_the_nodes_pending_nonce_are_never_handed_out(
    session_factory: sessionmaker[Session],
) -> None:
    repo = NonceRepository(session_factory)
    assert _reserve(repo, "a", floor=7) == 7
    assert _reserve(repo, "b", floor=3) == 8


def test_concurrent_reservations_from_many_connections_are_distinct(db_url: str) -> None:
    """Eight threads, each with its own engine (as separate processes would have)."""
    engines = [make_engine(db_url) for _ in range(8)]
    try:
        repos = [NonceRepository(make_session_factory(e)) for e in engines]
        with ThreadPoolExecutor(8) as pool:
            nonces = list(pool.map(lambda i: _reserve(repos[i], f"intent-{i}"), range(8)))
            again = list(pool.map(lambda i: _reserve(repos[(i + 3) % 8], f"intent-{i}"), range(8)))
    finally:
        for e in engines:
            e.dispose()
    assert sorted(nonces) == list(range(8))
    assert again == nonces


def test_a_reservation_never_broadcast_is_released_to_the_next_intent(
    session_factory: sessionmaker[Session],
) -> None:
    repo = NonceRepository(session_factory)
    assert _reserve(repo, "lost") == 0
    assert _reserve(repo, "sent") == 1
    repo.record_broadcast(chain=CHAIN, tx_hash="0x" + "01" * 32, address=ADDRESS, nonce=1, raw=b"x", now=T0)
    # Within the timeout the gap stays reserved for its intent.
    assert _reserve(repo, "next", now=T0 + timedelta(minutes=5)) == 2
    # Past it, nonce 0 (not yet used on chain: the node's pending nonce is 0) goes to a new intent,
    # which fills the gap that blocks nonce 1.
    later = T0 + timedelta(minutes=11)
    assert _reserve(repo, "new", now=later) == 0
    # A broadcast nonce is never taken back, and the node's floor is respected.
    assert _reserve(repo, "newer", now=later, floor=2) == 3
    # And once "next" (nonce 2) is itself stale and unused on chain, it is handed on too.
    assert _reserve(repo, "newest", now=later + timedelta(minutes=11), floor=2) == 2


def test_a_second_transaction_for_a_broadcast_nonce_is_refused(
    session_factory: sessionmaker[Session],
) -> None:
    repo = NonceRepository(session_factory)
    nonce = _reserve(repo, "a")

    def record(tx_hash: str, raw: bytes) -> bool:
        return repo.record_broadcast(
            chain=CHAIN, address=ADDRESS, nonce=nonce, now=T0, tx_hash=tx_hash, raw=raw
        )

    assert record("0x" + "01" * 32, b"one") is False
    assert record("0x" + "01" * 32, b"one") is True
    with pytest.raises(BroadcastRejected):
        record("0x" + "02" * 32, b"two")
    row = repo.broadcast(CHAIN, "0x" + "01" * 32)
    assert row is not None and row.raw == b"one"


def test_forgetting_a_refused_broadcast_frees_its_nonce_for_the_same_step(
    session_factory: sessionmaker[Session],
) -> None:
    repo = NonceRepository(session_factory)
    nonce = _reserve(repo, "a")
    bad, good = "0x" + "01" * 32, "0x" + "02" * 32
    repo.record_broadcast(chain=CHAIN, address=ADDRESS, nonce=nonce, tx_hash=bad, raw=b"bad", now=T0)
    repo.forget_broadcast(chain=CHAIN, address=ADDRESS, nonce=nonce, tx_hash=bad)
    assert (
        repo.record_broadcast(chain=CHAIN, address=ADDRESS, nonce=nonce, tx_hash=good, raw=b"ok", now=T0)
        is False
    )


def _release(repo: NonceRepository, intent: str) -> tuple[list[int], list[int]]:
    return repo.release(chain=CHAIN, intent_id=intent, now=T0)


def test_a_released_nonce_is_the_next_builds_before_a_new_one(session_factory: sessionmaker[Session]) -> None:
    repo = NonceRepository(session_factory)
    assert [_reserve(repo, i) for i in ("a", "b", "c")] == [0, 1, 2]
    assert _release(repo, "b") == ([1], [])
    assert _release(repo, "b") == ([], [])  # a repeated call gives nothing more back
    assert _reserve(repo, "d") == 1  # well within the stale timeout: the gap is filled at once
    assert _reserve(repo, "e") == 3
    assert _reserve(repo, "b") == 4  # the released intent lost its nonce to "d"


def test_the_lowest_released_nonce_the_chain_has_not_used_goes_first(
    session_factory: sessionmaker[Session],
) -> None:
    repo = NonceRepository(session_factory)
    assert [_reserve(repo, i) for i in ("a", "b", "c", "d")] == [0, 1, 2, 3]
    assert _release(repo, "c") == ([2], [])
    assert _release(repo, "a") == ([0], [])
    assert _reserve(repo, "e", floor=1) == 2  # 0 is below the node's pending nonce: used on chain
    assert _reserve(repo, "f", floor=1) == 4


def test_an_intent_asking_again_after_its_release_takes_its_own_nonce_back(
    session_factory: sessionmaker[Session],
) -> None:
    """A late retry of a build that was given back reuses its nonce rather than opening a new gap."""
    repo = NonceRepository(session_factory)
    assert _reserve(repo, "a") == 0
    assert _release(repo, "a") == ([0], [])
    assert _reserve(repo, "a") == 0
    assert _reserve(repo, "b") == 1


def test_a_nonce_a_signed_transaction_was_sent_with_is_never_given_to_another_intent(
    session_factory: sessionmaker[Session],
) -> None:
    """Sent (BROADCAST) or refused outright by the node (REFUSED): kept, released or stale alike."""
    repo = NonceRepository(session_factory)
    assert _reserve(repo, "sent") == 0
    assert _reserve(repo, "refused") == 1
    sent, refused = "0x" + "01" * 32, "0x" + "02" * 32
    repo.record_broadcast(chain=CHAIN, address=ADDRESS, nonce=0, tx_hash=sent, raw=b"s", now=T0)
    repo.record_broadcast(chain=CHAIN, address=ADDRESS, nonce=1, tx_hash=refused, raw=b"r", now=T0)
    repo.forget_broadcast(chain=CHAIN, address=ADDRESS, nonce=1, tx_hash=refused)
    assert _release(repo, "sent") == ([], [0])
    assert _release(repo, "refused") == ([], [1])
    # long past the stale timeout, with the chain still expecting nonce 0 or 1
    later = T0 + timedelta(hours=1)
    assert _reserve(repo, "next", floor=1, now=later) == 2
    assert _reserve(repo, "refused", now=later) == 1  # its own step may still send a replacement
