"""The HSM layer against a real SoftHSM2 token."""

from __future__ import annotations

import secrets

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from eth_account import Account
from pkcs11 import Attribute, Mechanism, ObjectClass
from pkcs11.exceptions import AttributeSensitive

from services.families import secp256k1
from services.families.ethereum.family import address_of as ethereum_address
from services.signer.errors import HsmKeyNotFound, HsmUnavailable, InvalidPublicKey
from services.signer.hsm import Hsm, unwrap_ec_point
from services.signer.softhsm import TokenConfig
from services.signer.types import KeyAlgorithm


@pytest.fixture(scope="module")
def eth_key(hsm: Hsm) -> tuple[bytes, bytes]:
    key_id = secrets.token_bytes(16)
    return key_id, hsm.generate_keypair(KeyAlgorithm.SECP256K1, f"t-eth-{key_id.hex()}", key_id)


@pytest.fixture(scope="module")
def ed_key(hsm: Hsm) -> tuple[bytes, bytes]:
    key_id = secrets.token_bytes(16)
    return key_id, hsm.generate_keypair(KeyAlgorithm.ED25519, f"t-ed-{key_id.hex()}", key_id)


@pytest.mark.parametrize("which", ["eth_key", "ed_key"])
def test_private_key_value_cannot_be_read(hsm: Hsm, which: str, request: pytest.FixtureRequest) -> None:
    key_id, _ = request.getfixturevalue(which)
    with hsm.session() as s:
        private = s.get_key(object_class=ObjectClass.PRIVATE_KEY, id=key_id)
        assert private[Attribute.SENSITIVE] is True
        assert private[Attribute.EXTRACTABLE] is False
        with pytest.raises(AttributeSensitive):
            private[Attribute.VALUE]


def test_ethereum_signatures_recover_to_the_address_and_are_low_s(
    hsm: Hsm, eth_key: tuple[bytes, bytes]
) -> None:
    key_id, public = eth_key
    address = ethereum_address(public)
    high_s_from_hsm = 0
    for _ in range(200):
        digest = secrets.token_bytes(32)
        raw = hsm.sign_raw(key_id, digest, Mechanism.ECDSA)
        high_s_from_hsm += int.from_bytes(raw[32:], "big") > secp256k1.N // 2
        sig = hsm.sign_secp256k1(key_id, digest)
        r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
        assert len(sig) == 64 and s <= secp256k1.N // 2
        v = secp256k1.recovery_id(digest, sig, public)
        assert Account._recover_hash(digest, vrs=(v, r, s)) == address
    # SoftHSM returns high-S about half the time: the normalisation is really exercised.
    assert high_s_from_hsm > 50


def test_low_s_normalisation_keeps_the_signature_valid(hsm: Hsm, eth_key: tuple[bytes, bytes]) -> None:
    key_id, public = eth_key
    digest = secrets.token_bytes(32)
    while True:
        raw = hsm.sign_raw(key_id, digest, Mechanism.ECDSA)
        r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
        if s > secp256k1.N // 2:
            break
    low = secp256k1.low_s(raw)
    r2, s2 = int.from_bytes(low[:32], "big"), int.from_bytes(low[32:], "big")
    assert s2 == secp256k1.N - s and r2 == r
    v = secp256k1.recovery_id(digest, low, public)
    assert Account._recover_hash(digest, vrs=(v, r2, s2)) == ethereum_address(public)


def test_ed25519_signatures_verify_with_cryptography(hsm: Hsm, ed_key: tuple[bytes, bytes]) -> None:
    key_id, public = ed_key
    message = b"checkpoint 42 " + secrets.token_bytes(16)
    signature = hsm.sign_ed25519(key_id, message)
    Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    with pytest.raises(InvalidSignature):
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message + b"x")


def test_public_key_lookup_and_labels(hsm: Hsm, eth_key: tuple[bytes, bytes]) -> None:
    key_id, public = eth_key
    assert hsm.public_key(key_id) == (KeyAlgorithm.SECP256K1, public)
    assert hsm.find_key_ids(f"t-eth-{key_id.hex()}") == [key_id]
    with pytest.raises(HsmKeyNotFound):
        hsm.public_key(secrets.token_bytes(16))


def test_wrong_algorithm_is_refused(
    hsm: Hsm, eth_key: tuple[bytes, bytes], ed_key: tuple[bytes, bytes]
) -> None:
    with pytest.raises(InvalidPublicKey):
        hsm.sign_ed25519(eth_key[0], b"m")
    with pytest.raises(InvalidPublicKey):
        hsm.sign_secp256k1(ed_key[0], b"\x00" * 32)


def test_ec_point_raw_and_der_wrapped() -> None:
    point = b"\x04" + bytes(range(64))
    assert unwrap_ec_point(b"\x04\x41" + point, 65) == point
    assert unwrap_ec_point(point, 65) == point
    ed = bytes(range(32))
    assert unwrap_ec_point(b"\x04\x20" + ed, 32) == ed
    assert unwrap_ec_point(ed, 32) == ed
    with pytest.raises(InvalidPublicKey):
        unwrap_ec_point(b"\x03" + point[1:], 65)


def test_session_refused_in_a_forked_child(
    hsm: Hsm, eth_key: tuple[bytes, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("services.signer.hsm.os.getpid", lambda: 1)
    with pytest.raises(HsmUnavailable, match="spawn"):
        hsm.sign_secp256k1(eth_key[0], b"\x00" * 32)


def test_a_second_session_in_the_same_process_shares_the_login(
    hsm: Hsm, eth_key: tuple[bytes, bytes], softhsm_token: TokenConfig
) -> None:
    """PKCS#11 logins are per process: a second Hsm on a logged-in token opens (no UserAlreadyLoggedIn)."""
    key_id, _ = eth_key
    second = Hsm(softhsm_token.hsm_settings()).open()
    try:
        digest = secrets.token_bytes(32)
        assert second.sign_secp256k1(key_id, digest) != b""
    finally:
        second.close()
    hsm.sign_secp256k1(key_id, secrets.token_bytes(32))  # the first session is unaffected


def test_data_objects_keep_the_newest_value(hsm: Hsm) -> None:
    label = f"t-data-{secrets.token_hex(4)}"
    assert hsm.load_data(label) is None
    hsm.store_data(label, b"first")
    hsm.store_data(label, b"second")
    assert hsm.load_data(label) == b"second"
    with hsm.session() as s:  # replaced, not accumulated
        assert len(list(s.get_objects({Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: label}))) == 1
        assert all(o[Attribute.PRIVATE] for o in s.get_objects({Attribute.LABEL: label}))
