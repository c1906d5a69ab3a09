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
from collections.abc import Collection, Iterator

import pytest
from alembic import command
from eth_keys import KeyAPI
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from services.runtime.migrate import alembic_config, upgrade
from services.signer.anchor import DataStore
from services.signer.errors import ConflictingSignature, HsmUnavailable, LedgerUnverified, NonceReused
from services.signer.hsm import Hsm
from services.signer.ledger import GENESIS, Ledger, record_hash, replace_record
from services.signer.models import SigningRecord
from services.signer.service import SignerService, SignOutput
from services.signer.types import KeyAlgorithm
from tests.fixtures.database import sql
from tests.signer.conftest import SignerRig

VALIDATOR = bytes.fromhex("a1" * 48)
GWEI = 10**9


def _sign(rig: SignerRig, service: SignerService, i: int, *, nonce: int | None = None) -> SignOutput:
    spec = rig.unstake_spec(VALIDATOR, (i + 1) * GWEI)
    tx = rig.unstake_tx(VALIDATOR, (i + 1) * GWEI, nonce=i if nonce is None else nonce)
    return service.sign_blocking(rig.request(spec, tx, intent_id=f"intent-{i}"), "w")


def _twin(rig: SignerRig, hsm: Hsm, label: str, store: DataStore | None = None) -> SignerService:
    """Another signer process on the same database and token (same wiring as the rig's)."""
    return SignerService(
        hsm=hsm,
        sessions=rig.sessions,
        policy=rig.policy,
        audit=rig.audit,
        chains=[c.config for c in rig.service._chains.values()],
        ledger_store=store or hsm,
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
        "DELETE FROM {signer_signing_records} WHERE ledger_seq >= 2",  # the tail: only the token knows
    ],
    ids=["altered", "removed", "cut"],
)
def test_a_signer_started_on_an_altered_ledger_signs_nothing(
    rig: SignerRig, hsm: Hsm, anchored: SignerService, label: str, tamper: str
) -> None:
    for i in range(3):
        _sign(rig, anchored, i)
    # no close(): the signer may crash right after answering, its last record is anchored already
    _owner(rig.sessions, tamper)
    restarted = _twin(rig, hsm, label)
    try:
        with pytest.raises(LedgerUnverified):
            _sign(rig, restarted, 7)
        assert rig.audit_rows("refused")[-1].payload_json.count("LedgerUnverified") == 1
    finally:
        restarted.close()
    with rig.sessions() as s:
        assert s.scalar(select(func.max(SigningRecord.ledger_seq))) in (1, 2, 3)  # nothing added


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


def _anchored_head(hsm: Hsm, label: str) -> int:
    raw = hsm.load_data(label)
    assert raw is not None
    return int(json.loads(raw)["seq"])


def test_a_signature_leaves_only_once_its_record_is_anchored(
    rig: SignerRig, hsm: Hsm, anchored: SignerService, label: str
) -> None:
    for i in range(3):
        _sign(rig, anchored, i)
        assert _anchored_head(hsm, label) == i + 1  # read as it answers, not after a close


class _FailingStoreFake:
    """The token's data store, failing its writes while ``failing`` (an HSM that stops answering)."""

    def __init__(self, hsm: Hsm) -> None:
        self._hsm = hsm
        self.failing = False

    def load_all_data(self, label: str) -> list[bytes]:
        return self._hsm.load_all_data(label)

    def replace_data(self, label: str, value: bytes, replaces: Collection[bytes]) -> None:
        if self.failing:
            raise HsmUnavailable("the token did not answer")
        self._hsm.replace_data(label, value, replaces)


def test_a_batch_whose_head_cannot_reach_the_token_is_not_committed(
    rig: SignerRig, hsm: Hsm, label: str
) -> None:
    """The head goes to the token before the database: when the token does not take it, the
    transaction rolls back and the caller is refused; asked again once it answers, it signs."""
    store = _FailingStoreFake(hsm)
    service = _twin(rig, hsm, label, store)
    try:
        spec = rig.unstake_spec(VALIDATOR, GWEI)
        request = rig.request(spec, rig.unstake_tx(VALIDATOR, GWEI, nonce=0), intent_id="intent-0")
        store.failing = True
        with pytest.raises(HsmUnavailable):
            service.sign_blocking(request, "w")
        assert hsm.load_data(label) is None
        assert _count(rig) == 0  # nothing of the batch in the database
        assert rig.audit_rows("refused")[-1].payload_json.count("HsmUnavailable") == 1
        store.failing = False
        assert not service.sign_blocking(request, "w").replayed
        assert _anchored_head(hsm, label) == 1 and _count(rig) == 1
    finally:
        service.close()


class _StopsAfterTokenWriteFake:
    """The token's data store of a signer process that stops right after writing its head, before
    its commit: the write happens, then the process is gone (its transaction never commits)."""

    def __init__(self, hsm: Hsm) -> None:
        self._hsm = hsm

    def load_all_data(self, label: str) -> list[bytes]:
        return self._hsm.load_all_data(label)

    def replace_data(self, label: str, value: bytes, replaces: Collection[bytes]) -> None:
        self._hsm.replace_data(label, value, replaces)
        raise HsmUnavailable("the signer process stopped here")


def _count(rig: SignerRig) -> int:
    with rig.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(SigningRecord)) or 0)


@pytest.mark.parametrize("how", ["stopped-before-commit", "committed-then-cut"])
def test_a_batch_on_the_token_but_not_in_the_database_binds_its_steps(
    rig: SignerRig, hsm: Hsm, label: str, how: str
) -> None:
    """The token names a batch the database lacks: the signer stopped between the two writes, or
    the database writer read its signatures and removed it (it cannot tell which). Restarted, the
    signer signs that step again only as the same transaction, at the same nonce: a second spend of
    the approvals at another nonce is refused."""
    _sign(rig, rig.service, 0)  # seq 1, anchored by nobody: the rig's own signer has no token head
    if how == "stopped-before-commit":
        stopped = _twin(rig, hsm, label, _StopsAfterTokenWriteFake(hsm))
        with pytest.raises(HsmUnavailable):
            _sign(rig, stopped, 1)
        stopped.close()
    else:
        first = _twin(rig, hsm, label)
        _sign(rig, first, 1)
        first.close()
        _owner(rig.sessions, "DELETE FROM {signer_signing_records} WHERE ledger_seq = 2")
    assert _count(rig) == 1 and _anchored_head(hsm, label) == 2
    restarted = _twin(rig, hsm, label)
    try:
        with pytest.raises(ConflictingSignature, match="not in the database"):
            _sign(rig, restarted, 1, nonce=7)  # intent-1's approvals at another nonce
        again = _sign(rig, restarted, 1)  # the same transaction: one nonce, one spend
        assert not again.replayed
        assert _count(rig) == 2
    finally:
        restarted.close()
    again_restarted = _twin(rig, hsm, label)  # the stored record resolves the lost one for good
    try:
        assert _sign(rig, again_restarted, 1).replayed
        _sign(rig, again_restarted, 3)
    finally:
        again_restarted.close()


def test_a_second_signer_reading_a_rewritten_record_signs_nothing(
    rig: SignerRig, hsm: Hsm, anchored: SignerService, label: str
) -> None:
    """Process A signs intent-0; the database writer rewrites that record as another intent's
    (recomputing its hash, which is no secret) before process B reads it. B's checks see a chain
    that links and a genuine signature, and no signature for intent-0: at its commit the token's
    head, written by A before its own commit, does not match, and nothing of B's leaves."""
    other = _twin(rig, hsm, label)
    try:
        _sign(rig, anchored, 0)
        with rig.sessions() as s:
            record = s.scalars(select(SigningRecord)).one()
            s.expunge(record)
        moved = replace_record(record, intent_id="intent-void")
        moved.record_hash = record_hash(moved)
        with rig.sessions.begin() as s:
            s.execute(
                text(sql(s, "UPDATE {signer_signing_records} SET intent_id = :i, record_hash = :h")),
                {"i": moved.intent_id, "h": moved.record_hash},
            )
        with pytest.raises(LedgerUnverified, match="where no head the HSM holds ends"):
            _sign(rig, other, 0, nonce=1)
        assert _count(rig) == 1
    finally:
        other.close()


@pytest.mark.parametrize(
    ("how", "refusal"),
    [("own-signature", "is not the signer's"), ("copied-signature", "repeats a signature")],
)
def test_a_record_appended_by_the_database_writer_is_refused(
    rig: SignerRig, anchored: SignerService, how: str, refusal: str
) -> None:
    """The chain's hash is no secret: whoever writes the database can append a well-linked record
    (an earlier "first signature" of an intent with amount 0, so its real one would count as a
    fee bump outside velocity). It is not the HSM's signature over a new digest: nothing signs."""
    _sign(rig, anchored, 0)
    with rig.sessions() as s:
        real = s.scalars(select(SigningRecord)).one()
    forged = replace_record(
        real,
        record_id="sig_forged",
        intent_id="intent-9",
        nonce=9,
        amount="0",
        ledger_seq=2,
        prev_hash=bytes(real.record_hash),
    )
    if how == "own-signature":  # a digest of their own, signed with a key of their own
        forged.signing_digest = secrets.token_bytes(32)
        forged.signature = (
            KeyAPI()
            .PrivateKey(secrets.token_bytes(32))
            .sign_msg_hash(bytes(forged.signing_digest))
            .to_bytes()
        )
    forged.record_hash = record_hash(forged)
    with rig.sessions.begin() as s:
        s.add(forged)
    with pytest.raises(LedgerUnverified, match=refusal):
        _sign(rig, anchored, 1)
    assert rig.audit_rows("refused")[-1].payload_json.count("LedgerUnverified") == 1


@pytest.mark.parametrize("tampered", [False, True])
def test_a_record_of_an_ed25519_key_is_checked_over_its_whole_message(rig: SignerRig, tampered: bool) -> None:
    """Ed25519 signs the whole message (Solana's): the record keeps it as its signing digest, and
    the ledger's check verifies the HSM key's signature over it, as it does a secp256k1 digest."""
    hsm: Hsm = rig.service._hsm
    hsm_id = secrets.token_bytes(16)
    hsm.generate_keypair(KeyAlgorithm.ED25519, "t-ledger-ed25519", hsm_id)
    message = b"a whole serialized message " + secrets.token_bytes(64)
    record = SigningRecord(
        key_id="key_" + hsm_id.hex(),
        signing_digest=message + (b"!" if tampered else b""),
        signature=hsm.sign_ed25519(hsm_id, message),
    )
    why = rig.service._made_here(record)
    assert (why is None) is not tampered
