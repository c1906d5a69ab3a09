"""The checkpoint chain, without a database: every way of breaking it is named."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import timedelta

import pytest

from services.audit.chain import CHAINED, LEGACY, Checkpoint, CheckpointChain, Link, verify_records
from services.audit.records import AuditRecord
from services.audit.signing import SoftwareCheckpointSigner
from tests.audit._chains import chain, chain_of, checkpoint

AT = [5, 10, 15, 20]


@pytest.fixture
def signer() -> SoftwareCheckpointSigner:
    return SoftwareCheckpointSigner("k1")


def first_bad(
    records: list[AuditRecord], cps: list[Checkpoint], signer: SoftwareCheckpointSigner
) -> int | None:
    return verify_records(records, cps, {"k1": signer.public_key()}, require_chain=True).first_bad_sequence


def test_an_intact_chain_verifies_and_each_link_names_the_one_before(
    signer: SoftwareCheckpointSigner,
) -> None:
    records = chain(20)
    cps = chain_of(signer, records, AT)
    assert first_bad(records, cps, signer) is None
    assert cps[0].previous == Link(0, bytes(32))
    assert all(b.previous == a.link() for a, b in itertools.pairwise(cps))


@pytest.mark.parametrize("dropped", AT[:-1])
def test_a_dropped_checkpoint_is_named(signer: SoftwareCheckpointSigner, dropped: int) -> None:
    records = chain(20)
    cps = [cp for cp in chain_of(signer, records, AT) if cp.sequence != dropped]
    assert first_bad(records, cps, signer) == dropped


def test_reordered_checkpoints_are_named(signer: SoftwareCheckpointSigner) -> None:
    records = chain(20)
    cps = chain_of(signer, records, AT)
    swapped = [cps[1], cps[0], *cps[2:]]
    assert first_bad(records, swapped, signer) == 5


def test_a_checkpoint_from_a_fork_is_named(signer: SoftwareCheckpointSigner) -> None:
    """Signed by the same key and chained to the same predecessor, but not what the chain continues from."""
    records = chain(20)
    cps = chain_of(signer, records, AT)
    other = dataclasses.replace(cps[1], time=cps[1].time + timedelta(seconds=1), signature=b"")
    other = dataclasses.replace(other, signature=signer.sign(other.message()))
    assert first_bad(records, [cps[0], other, *cps[2:]], signer) == 10
    inserted = checkpoint(signer, records[11], cps[1])  # at 12, after 10: 15 names 10, not 12
    result = verify_records(records, [*cps[:2], inserted, *cps[2:]], {"k1": signer.public_key()})
    assert result.first_bad_sequence == 12 and "not in the chain" in result.reason


def test_a_forged_link_or_key_is_named(signer: SoftwareCheckpointSigner) -> None:
    records = chain(20)
    cps = chain_of(signer, records, AT)
    relinked = dataclasses.replace(cps[2], prev_sequence=5, prev_digest=cps[0].digest())  # the link is signed
    assert first_bad(records, [*cps[:2], relinked, cps[3]], signer) == 15
    mallory = SoftwareCheckpointSigner("k1")
    forged = checkpoint(mallory, records[9], cps[0])
    assert first_bad(records, [cps[0], forged, *cps[2:]], signer) == 10


def test_records_without_a_chain_fail_only_when_one_is_required(signer: SoftwareCheckpointSigner) -> None:
    records = chain(12)
    keys = {"k1": signer.public_key()}
    result = verify_records(records, [], keys, require_chain=True)
    assert not result.ok and result.first_bad_sequence == 1 and "no checkpoint chain" in result.reason
    assert verify_records(records, [], keys).ok  # the hash chain alone, as the pure tests use it


def test_first_format_checkpoints_are_passed_over(signer: SoftwareCheckpointSigner) -> None:
    records = chain(20)
    old = dataclasses.replace(checkpoint(signer, records[7]), version=LEGACY, signature=b"")
    old = dataclasses.replace(old, signature=signer.sign(old.message()))
    assert old.message() != dataclasses.replace(old, version=CHAINED).message()
    keys = {"k1": signer.public_key()}
    assert verify_records(records, [old], keys, require_chain=True).first_bad_sequence == 1
    cps = chain_of(signer, records, AT)
    mixed = [*cps[:1], old, *cps[1:]]
    result = verify_records(records, mixed, keys, require_chain=True)
    assert result.ok and result.signed_through == 20


def test_the_chain_can_be_taken_up_at_a_known_checkpoint(signer: SoftwareCheckpointSigner) -> None:
    records = chain(20)
    cps = chain_of(signer, records, AT)
    taken = CheckpointChain({"k1": signer.public_key()}, start=cps[1].link())
    assert taken.add(cps[2]) and taken.add(cps[3]) and taken.last == cps[3].link()
    wrong = CheckpointChain({"k1": signer.public_key()}, start=cps[0].link())
    assert not wrong.add(cps[2]) and wrong.failure is not None and wrong.failure[0] == 10
