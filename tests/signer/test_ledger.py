"""The signer's ledger: signing records chained, checked, and their head anchored on the HSM token.

Whoever can write the database alters a record (an amount to zero), deletes one (so its
approvals sign again), or cuts the tail: a signer started on such a ledger signs nothing,
and a running one answers from what it verified. Two signers on one database see each
other's records. On SQLite and PostgreSQL, with the real HSM.
"""

from __future__ import annotations

import itertools
import json
import secrets
from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from services.runtime.migrate import alembic_config, upgrade
from services.signer.errors import LedgerUnverified, NonceReused
from services.signer.hsm import Hsm
from services.signer.ledger import GENESIS, HeadAnchor, Ledger, record_hash
from services.signer.models import SigningRecord
from services.signer.service import SignerService
from tests.fixtures.database import sql
from tests.signer.conftest import SignerRig

VALIDATOR = bytes.fromhex("a1" * 48)
GWEI = 10**9


def _sign(rig: SignerRig, service: SignerService, i: int, *, nonce: int | None = None) -> object:
    spec = rig.unstake_spec(VALIDATOR, (i + 1) * GWEI)
    tx = rig.unstake_tx(VALIDATOR, (i + 1) * GWEI, nonce=i if nonce is None else nonce)
    return service.sign_blocking(rig.request(spec, tx, intent_id=f"intent-{i}"), "w")


def _twin(rig: SignerRig, hsm: Hsm, label: str) -> SignerService:
    """Another signer process on the same database and token (same wiring as the rig's)."""
    return SignerService(
        hsm=hsm,
        sessions=rig.sessions,
        policy=rig.policy,
        decoder=rig.service._decoder,
        audit=rig.audit,
        chains=rig.service._chains,
        ledger_store=hsm,
        ledger_label=label,
    )


@pytest.fixture
def label() -> str:
    return f"t-ledger-{secrets.token_hex(6)}"


@pytest.fixture
def anchored(rig: SignerRig, hsm: Hsm, label: str) -> Iterator[SignerService]:
    """A signer whose ledger head is anchored on the token (the rig's own anchors nothing)."""
    service = _twin(rig, hsm, label)
    yield service
    service.close()


def _owner(session_factory: sessionmaker[Session], statement: str) -> None:
    """Plain SQL as the database owner (the records are insert-only for every service role)."""
    with session_factory.begin() as s:
        s.execute(text(sql(s, statement)))


def test_records_form_a_chain(rig: SignerRig, anchored: SignerService) -> None:
    for i in range(3):
        _sign(rig, anchored, i)
    with rig.sessions() as s:
        records = list(s.scalars(select(SigningRecord).order_by(SigningRecord.ledger_seq)))
    assert [r.ledger_seq for r in records] == [1, 2, 3]
    assert bytes(records[0].prev_hash) == GENESIS
    for before, after in itertools.pairwise(records):
        assert bytes(after.prev_hash) == bytes(before.record_hash)
    assert all(bytes(r.record_hash) == record_hash(r) for r in records)


def test_two_signers_on_one_database_see_each_others_records(
    rig: SignerRig, hsm: Hsm, anchored: SignerService, label: str
) -> None:
    other = _twin(rig, hsm, label)
    try:
        _sign(rig, anchored, 0)
        _sign(rig, other, 1)
        with pytest.raises(NonceReused):  # nonce 1 was signed by the other process
            _sign(rig, anchored, 2, nonce=1)
        _sign(rig, anchored, 3)
    finally:
        other.close()
    with rig.sessions() as s:
        assert s.scalar(select(func.count()).select_from(SigningRecord)) == 3


@pytest.mark.parametrize(
    "tamper",
    [
        "UPDATE {signer_signing_records} SET amount = '0' WHERE ledger_seq = 1",
        "DELETE FROM {signer_signing_records} WHERE ledger_seq = 2",
        "DELETE FROM {signer_signing_records} WHERE ledger_seq = 3",  # the tail: only the anchor knows
    ],
    ids=["altered", "removed", "cut"],
)
def test_a_signer_started_on_an_altered_ledger_signs_nothing(
    rig: SignerRig, hsm: Hsm, anchored: SignerService, label: str, tamper: str
) -> None:
    for i in range(3):
        _sign(rig, anchored, i)
    anchored.close()  # its anchor writes the head before it stops
    _owner(rig.sessions, tamper)
    restarted = _twin(rig, hsm, label)
    try:
        with pytest.raises(LedgerUnverified):
            _sign(rig, restarted, 7)
        assert rig.audit_rows("refused")[-1].payload_json.count("LedgerUnverified") == 1
    finally:
        restarted.close()
    with rig.sessions() as s:
        assert s.scalar(select(func.max(SigningRecord.ledger_seq))) in (2, 3)  # nothing added


def test_the_anchor_is_what_catches_a_cut_tail(rig: SignerRig, hsm: Hsm, label: str) -> None:
    """Without a head outside the database, a ledger cut at its tail still looks whole."""
    for i in range(2):
        _sign(rig, rig.service, i)
    _owner(rig.sessions, "DELETE FROM {signer_signing_records} WHERE ledger_seq = 2")
    fresh = Ledger()
    with rig.sessions() as s:
        fresh.load(s)
    assert fresh.head[0] == 1


def test_a_running_signer_answers_from_what_it_verified(rig: SignerRig, anchored: SignerService) -> None:
    """The record of intent-0 removed under a running signer: asked again, it does not sign."""
    _sign(rig, anchored, 0)
    _owner(rig.sessions, "DELETE FROM {signer_signing_records} WHERE ledger_seq = 1")
    with pytest.raises(LedgerUnverified, match="missing or altered"):
        _sign(rig, anchored, 0, nonce=5)
    with rig.sessions() as s:
        assert s.scalar(select(func.count()).select_from(SigningRecord)) == 0


def test_records_made_before_the_chain_are_chained_by_the_migration(db_url: str, rig: SignerRig) -> None:
    """A database whose records predate the ledger upgrades into a chain that verifies."""
    for i in range(3):
        _sign(rig, rig.service, i)
    rig.service.close()
    with rig.sessions() as s:
        rows = [dict(r._mapping) for r in s.execute(select(*SigningRecord.__table__.columns))]
    command.downgrade(alembic_config(db_url), "signer_schema")
    old = [c for c in rows[0] if c not in ("ledger_seq", "prev_hash", "record_hash")]
    with rig.sessions.begin() as s:
        s.execute(text(sql(s, "DELETE FROM {signer_signing_records}")))
        for row in rows:
            values = {c: row[c] for c in old}
            columns = ", ".join(values)
            params = ", ".join(f":{c}" for c in values)
            s.execute(
                text(sql(s, f"INSERT INTO {{signer_signing_records}} ({columns}) VALUES ({params})")), values
            )
    upgrade(db_url)
    ledger = Ledger()
    with rig.sessions() as s:
        ledger.load(s)
    assert ledger.head[0] == 3


class _CountingStore:
    """A token data store that counts writes (the HSM's own is tested in tests/signer/test_hsm)."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.writes = 0

    def load_data(self, label: str) -> bytes | None:
        return self.values.get(label)

    def store_data(self, label: str, value: bytes) -> None:
        self.writes += 1
        self.values[label] = value


def test_the_anchor_coalesces_heads_and_writes_the_last_on_close() -> None:
    """A token write holds the HSM the signatures need: heads in between are skipped, never the last."""
    store = _CountingStore()
    anchor = HeadAnchor(store, label="h", min_interval=60.0)
    for seq in range(1, 201):
        anchor.advance(seq, seq.to_bytes(32, "big"))
    anchor.close()
    assert store.writes <= 2  # the first head at once, then nothing until the interval or close
    assert json.loads(store.values["h"]) == {"seq": 200, "hash": (200).to_bytes(32, "big").hex()}
    assert anchor.anchored == (200, (200).to_bytes(32, "big"))
