"""The velocity ledger on SQLite and PostgreSQL, and the race for the last room under a cap."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from services.policy import repository
from services.policy.domain import VelocityLimit
from services.policy.errors import VelocityConflict, VelocityExceeded
from services.policy.repository import release_velocity, reserve_velocity, velocity_used
from services.runtime.db import make_engine, make_session_factory, transaction
from tests.policy.helpers import WED_10_UTC

NOW = WED_10_UTC
DAY = VelocityLimit(86400, 100)
ETH_CHAIN = "ethereum-devnet"


def _used(
    factory: sessionmaker[Session], vault: str = "v1", action: str | None = None, chain: str = ETH_CHAIN
) -> int:
    with transaction(factory) as s:
        return velocity_used(s, vault_id=vault, chain=chain, action=action, window_seconds=86400, at=NOW)


def test_reserve_counts_within_window_and_refuses_above_cap(session_factory: sessionmaker[Session]) -> None:
    f = session_factory
    reserve_velocity(
        f,
        intent_id="old",
        vault_id="v1",
        chain=ETH_CHAIN,
        action="STAKE",
        amount=90,
        at=NOW - timedelta(days=2),
        limits=[DAY],
    )
    reserve_velocity(
        f, intent_id="a", vault_id="v1", chain=ETH_CHAIN, action="STAKE", amount=60, at=NOW, limits=[DAY]
    )
    reserve_velocity(
        f,
        intent_id="other-vault",
        vault_id="v2",
        chain=ETH_CHAIN,
        action="STAKE",
        amount=100,
        at=NOW,
        limits=[DAY],
    )
    assert _used(f) == 60
    with pytest.raises(VelocityExceeded, match="above the limit of 100"):
        reserve_velocity(
            f, intent_id="b", vault_id="v1", chain=ETH_CHAIN, action="STAKE", amount=41, at=NOW, limits=[DAY]
        )
    reserve_velocity(
        f, intent_id="b", vault_id="v1", chain=ETH_CHAIN, action="STAKE", amount=40, at=NOW, limits=[DAY]
    )
    assert _used(f) == 100


def test_reserve_is_idempotent_per_intent(session_factory: sessionmaker[Session]) -> None:
    f = session_factory
    first = reserve_velocity(
        f, intent_id="a", vault_id="v1", chain=ETH_CHAIN, action="STAKE", amount=70, at=NOW, limits=[DAY]
    )
    again = reserve_velocity(
        f, intent_id="a", vault_id="v1", chain=ETH_CHAIN, action="STAKE", amount=70, at=NOW, limits=[DAY]
    )
    assert first == again and _used(f) == 70
    with pytest.raises(VelocityConflict):
        reserve_velocity(
            f, intent_id="a", vault_id="v1", chain=ETH_CHAIN, action="STAKE", amount=71, at=NOW, limits=[DAY]
        )


def test_release_frees_room_and_is_idempotent(session_factory: sessionmaker[Session]) -> None:
    f = session_factory
    reserve_velocity(
        f, intent_id="a", vault_id="v1", chain=ETH_CHAIN, action="STAKE", amount=100, at=NOW, limits=[DAY]
    )
    assert release_velocity(f, intent_id="a", at=NOW) and release_velocity(f, intent_id="a", at=NOW)
    assert not release_velocity(f, intent_id="never", at=NOW)
    assert _used(f) == 0
    with pytest.raises(VelocityConflict, match="released"):
        reserve_velocity(
            f, intent_id="a", vault_id="v1", chain=ETH_CHAIN, action="STAKE", amount=100, at=NOW, limits=[DAY]
        )
    reserve_velocity(
        f, intent_id="b", vault_id="v1", chain=ETH_CHAIN, action="STAKE", amount=100, at=NOW, limits=[DAY]
    )


def test_per_action_limit_counts_only_that_action(session_factory: sessionmaker[Session]) -> None:
    f = session_factory
    per_stake = VelocityLimit(86400, 50, "STAKE")
    reserve_velocity(
        f,
        intent_id="u",
        vault_id="v1",
        chain=ETH_CHAIN,
        action="UNSTAKE",
        amount=50,
        at=NOW,
        limits=[per_stake],
    )
    reserve_velocity(
        f,
        intent_id="s",
        vault_id="v1",
        chain=ETH_CHAIN,
        action="STAKE",
        amount=50,
        at=NOW,
        limits=[per_stake],
    )
    with pytest.raises(VelocityExceeded):
        reserve_velocity(
            f,
            intent_id="s2",
            vault_id="v1",
            chain=ETH_CHAIN,
            action="STAKE",
            amount=1,
            at=NOW,
            limits=[per_stake],
        )
    assert _used(f, action="STAKE") == 50 and _used(f) == 100


def test_amounts_beyond_64_bits_are_exact(session_factory: sessionmaker[Session]) -> None:
    big = 4096 * 10**18 + 1
    reserve_velocity(
        session_factory,
        intent_id="a",
        vault_id="v1",
        chain=ETH_CHAIN,
        action="STAKE",
        amount=big,
        at=NOW,
        limits=[VelocityLimit(86400, big)],
    )
    assert _used(session_factory) == big


def _race(factories: list[sessionmaker[Session]], r: int, vault: str) -> list[str]:
    barrier = threading.Barrier(2)
    results: list[str] = []

    def race(i: int) -> None:
        barrier.wait()
        try:
            reserve_velocity(
                factories[i],
                intent_id=f"r{r}-{i}",
                vault_id=vault,
                chain=ETH_CHAIN,
                action="STAKE",
                amount=100,
                at=NOW,
                limits=[VelocityLimit(86400, 1000)],
            )
            results.append("won")
        except VelocityExceeded:
            results.append("refused")

    threads = [threading.Thread(target=race, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


@pytest.mark.parametrize("rounds", [5])
def test_two_intents_racing_for_the_last_room_on_postgresql(
    pg_url: str, rounds: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each round: two threads, two engines, one room of 100 left: exactly one wins.

    The sum is slowed down to widen the race window: without the vault lock both
    threads win every time (checked by hand when this test was written).
    """
    real_used = repository.velocity_used

    def slow_used(*args: Any, **kwargs: Any) -> int:
        value = real_used(*args, **kwargs)
        time.sleep(0.05)
        return value

    monkeypatch.setattr(repository, "velocity_used", slow_used)
    engines = [make_engine(pg_url) for _ in range(2)]
    factories = [make_session_factory(e) for e in engines]
    try:
        for r in range(rounds):
            vault = f"race-{r}"
            reserve_velocity(
                factories[0],
                intent_id=f"seed-{r}",
                vault_id=vault,
                chain=ETH_CHAIN,
                action="STAKE",
                amount=900,
                at=NOW,
                limits=[VelocityLimit(86400, 1000)],
            )
            results = _race(factories, r, vault)
            assert sorted(results) == ["refused", "won"]
            with transaction(factories[0]) as s:
                assert (
                    real_used(s, vault_id=vault, chain=ETH_CHAIN, action=None, window_seconds=86400, at=NOW)
                    == 1000
                )
    finally:
        for e in engines:
            e.dispose()


def test_wei_and_uatom_of_one_vault_are_never_summed(session_factory: sessionmaker[Session]) -> None:
    """One vault on two chains: each chain's limit counts that chain's amounts only."""
    f = session_factory
    wei = VelocityLimit(86400, 64 * 10**18)
    uatom = VelocityLimit(86400, 1_000_000)
    reserve_velocity(
        f,
        intent_id="eth",
        vault_id="v1",
        chain=ETH_CHAIN,
        action="STAKE",
        amount=32 * 10**18,
        at=NOW,
        limits=[wei],
    )
    # 32 ETH in wei would exhaust any uatom limit if the two were added
    made = reserve_velocity(
        f,
        intent_id="atom",
        vault_id="v1",
        chain="cosmoshub",
        action="STAKE",
        amount=900_000,
        at=NOW,
        limits=[uatom],
    )
    assert made.chain == "cosmoshub"
    assert _used(f) == 32 * 10**18 and _used(f, chain="cosmoshub") == 900_000
    with pytest.raises(VelocityExceeded, match="on 'cosmoshub'"):
        reserve_velocity(
            f,
            intent_id="atom2",
            vault_id="v1",
            chain="cosmoshub",
            action="STAKE",
            amount=100_001,
            at=NOW,
            limits=[uatom],
        )
    reserve_velocity(
        f,
        intent_id="eth2",
        vault_id="v1",
        chain=ETH_CHAIN,
        action="STAKE",
        amount=32 * 10**18,
        at=NOW,
        limits=[wei],
    )
    with pytest.raises(VelocityConflict):  # the same intent on another chain is another reservation
        reserve_velocity(
            f,
            intent_id="eth",
            vault_id="v1",
            chain="cosmoshub",
            action="STAKE",
            amount=32 * 10**18,
            at=NOW,
            limits=[],
        )


def test_a_reservation_of_unknown_chain_counts_on_every_chain_of_its_vault(
    session_factory: sessionmaker[Session],
) -> None:
    """What policy_0005 could not attribute (no recorded evaluation) keeps limiting, as before it."""
    f = session_factory
    reserve_velocity(
        f, intent_id="old", vault_id="v1", chain="", action="STAKE", amount=40, at=NOW, limits=[]
    )
    assert _used(f) == 40 and _used(f, chain="cosmoshub") == 40 and _used(f, vault="v2") == 0
    again = reserve_velocity(
        f, intent_id="old", vault_id="v1", chain=ETH_CHAIN, action="STAKE", amount=40, at=NOW, limits=[DAY]
    )
    assert again.chain == ""  # a retried reservation of that intent replays it
