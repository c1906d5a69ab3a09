"""The chain and its verification, without a database."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.audit.chain import verify_records
from services.audit.errors import PayloadInvalid, SecretInPayload
from services.audit.records import (
    GENESIS_HASH,
    AuditRecord,
    encode_payload,
    hash_of,
    new_record,
    signature_ref,
)
from services.audit.signing import SoftwareCheckpointSigner
from services.families.ethereum.deposit import DepositData
from tests.audit._chains import T0, chain, chain_of, checkpoint


def rechain(records: list[AuditRecord], start: int) -> list[AuditRecord]:
    """What someone with write access does: re-hash everything from index ``start``."""
    out = records[:start]
    prev = out[-1].hash if out else GENESIS_HASH
    for r in records[start:]:
        fixed = new_record(
            sequence=r.sequence,
            prev_hash=prev,
            time=r.time,
            actor=r.actor,
            action=r.action,
            subject=r.subject,
            outcome=r.outcome,
            payload_json=r.payload_json,
        )
        out.append(fixed)
        prev = fixed.hash
    return out


def test_an_untouched_chain_verifies() -> None:
    signer = SoftwareCheckpointSigner("k1")
    records = chain(30)
    result = verify_records(records, [checkpoint(signer, records[29])], {"k1": signer.public_key()})
    assert result.ok and result.records_checked == 30 and result.signed_through == 30
    assert records[0].prev_hash == GENESIS_HASH and result.head_hash == records[-1].hash


@pytest.mark.parametrize("field", ["actor", "action", "subject", "outcome", "time", "payload_json"])
def test_a_changed_field_names_its_record(field: str) -> None:
    records = chain(10)
    value: object = {"time": records[4].time + timedelta(seconds=1), "payload_json": '{"amount":"1"}'}.get(
        field, "x"
    )
    records[4] = dataclasses.replace(records[4], **{field: value})  # type: ignore[arg-type]
    result = verify_records(records, [], {})
    assert not result.ok and result.first_bad_sequence == 5, result


def test_deleted_inserted_and_reordered_records_are_named() -> None:
    records = chain(10)
    assert verify_records(records[:3] + records[4:], [], {}).first_bad_sequence == 4
    assert verify_records(records[1:], [], {}).first_bad_sequence == 1
    swapped = [*records[:2], records[6], *records[3:6], records[2], *records[7:]]
    assert verify_records(swapped, [], {}).first_bad_sequence == 3
    forged = new_record(
        sequence=4,
        prev_hash=records[2].hash,
        time=T0,
        actor="mallory",
        action="sign.granted",
        subject="intent:x",
        outcome="ok",
        payload_json="{}",
    )
    shifted = [dataclasses.replace(r, sequence=r.sequence + 1) for r in records[3:]]
    result = verify_records([*records[:3], forged, *shifted], [], {})
    assert result.first_bad_sequence == 4 and "inserted" in result.reason


def test_a_rehashed_record_is_named_by_the_link_after_it() -> None:
    records = chain(10)
    records[5] = rechain([*records[:5], dataclasses.replace(records[5], actor="mallory")], 5)[5]
    assert hash_of(records[5]) == records[5].hash
    result = verify_records(records, [], {})
    assert result.first_bad_sequence == 6 and "re-hashed" in result.reason


def test_a_rehashed_tail_is_caught_by_the_signed_checkpoint() -> None:
    signer = SoftwareCheckpointSigner("k1")
    records = chain(30)
    cps = chain_of(signer, records, [10, 20, 30])
    tampered = [*records[:14], dataclasses.replace(records[14], outcome="refused"), *records[15:]]
    tampered = rechain(tampered, 14)
    assert verify_records(tampered, [], {}).ok  # hashing alone cannot see it
    result = verify_records(tampered, cps, {"k1": signer.public_key()})
    assert not result.ok and result.first_bad_sequence == 11 and "rewritten" in result.reason


def test_truncation_is_detected() -> None:
    signer = SoftwareCheckpointSigner("k1")
    records = chain(20)
    cps = [checkpoint(signer, records[19])]
    keys = {"k1": signer.public_key()}
    result = verify_records(records[:15], cps, keys)
    assert result.first_bad_sequence == 16 and "truncated" in result.reason
    result = verify_records(records[:15], [], {}, declared_count=20)
    assert result.first_bad_sequence == 16
    assert verify_records(records[:15], [], {}, head_sequence=20).first_bad_sequence == 16


def test_checkpoint_signatures_and_keys_are_checked() -> None:
    signer, other = SoftwareCheckpointSigner("k1"), SoftwareCheckpointSigner("k1")
    records = chain(5)
    good = checkpoint(signer, records[4])
    bad_sig = dataclasses.replace(good, signature=bytes(64))
    assert not verify_records(records, [bad_sig], {"k1": signer.public_key()}).ok
    assert "unknown key" in verify_records(records, [good], {}).reason
    assert not verify_records(records, [good], {"k1": other.public_key()}).ok
    later = dataclasses.replace(good, time=good.time + timedelta(seconds=1))  # signature covers time
    assert "invalid signature" in verify_records(records, [later], {"k1": signer.public_key()}).reason


def test_a_partial_range_is_anchored_by_the_checkpoint_before_it() -> None:
    signer = SoftwareCheckpointSigner("k1")
    records = chain(10)
    keys = {"k1": signer.public_key()}
    assert verify_records(records[5:], [checkpoint(signer, records[4])], keys, first_sequence=6).ok
    wrong_anchor = checkpoint(signer, dataclasses.replace(records[4], hash=bytes(32)))
    assert verify_records(records[5:], [wrong_anchor], keys, first_sequence=6).first_bad_sequence == 6


@pytest.mark.parametrize(
    "payload",
    [
        {"pin": "1234"},
        {"user_pin": "1234"},
        {"Password": "x"},
        {"hsm": {"soPin": "x"}},
        {"client_secret": "x"},
        {"privateKey": "00"},
        {"keys": [{"private_key": "00"}]},
        {"seed": "abandon"},
        {"approvals": [{"approver_id": "a", "signature": bytes(64)}]},
        {"deposit_data": DepositData(bytes(48), bytes(32), bytes(96), bytes(32))},
    ],
)
def test_secrets_are_refused_not_dropped(payload: dict[str, object]) -> None:
    with pytest.raises(SecretInPayload) as e:
        encode_payload(payload)
    assert "1234" not in str(e.value) and "abandon" not in str(e.value)


def test_safe_payloads_are_recorded_canonically() -> None:
    text = encode_payload({"b": 2, "a": b"\x01", "signature": signature_ref(bytes(64)), "pinned": True})
    assert text == ('{"a":"01","b":"2","pinned":true,"signature":"' + signature_ref(bytes(64)) + '"}')
    with pytest.raises(PayloadInvalid):
        encode_payload({"blob": "x" * 70_000})
    with pytest.raises(PayloadInvalid):
        encode_payload({"x": object()})


def test_checkpoint_signature_verifies_with_a_standard_library() -> None:
    key = Ed25519PrivateKey.generate()
    signer = SoftwareCheckpointSigner("k", key)
    cp = checkpoint(signer, chain(1)[0])
    key.public_key().verify(cp.signature, cp.message())  # raises if not


def test_every_position_is_named_exactly_even_on_a_checkpoint() -> None:
    signer = SoftwareCheckpointSigner("k1")
    keys = {"k1": signer.public_key()}
    n = 20
    records = chain(n)
    cps = chain_of(signer, records, [7, 14, 20])

    def first_bad(rs: list[AuditRecord]) -> int | None:
        return verify_records(rs, cps, keys, head_sequence=n).first_bad_sequence

    for k in range(1, n + 1):
        i = k - 1
        changed = [*records[:i], dataclasses.replace(records[i], outcome="refused"), *records[i + 1 :]]
        assert first_bad(changed) == k
        assert first_bad(records[:i] + records[i + 1 :]) == k
        renumbered = records[:i] + [dataclasses.replace(r, sequence=r.sequence - 1) for r in records[i + 1 :]]
        assert first_bad(renumbered) == k
        prev = records[i - 1].hash if i else GENESIS_HASH
        forged = new_record(
            sequence=k,
            prev_hash=prev,
            time=T0,
            actor="mallory",
            action="x",
            subject="",
            outcome="ok",
            payload_json="{}",
        )
        shifted = [dataclasses.replace(r, sequence=r.sequence + 1) for r in records[i:]]
        assert verify_records([*records[:i], forged, *shifted], cps, keys).first_bad_sequence == k
        for j in range(k + 1, n + 1):
            swapped = list(records)
            swapped[i], swapped[j - 1] = (
                dataclasses.replace(records[j - 1], sequence=k),
                dataclasses.replace(records[i], sequence=j),
            )
            assert first_bad(swapped) == k, (k, j)
