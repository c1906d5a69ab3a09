"""CreateKey / GetKey / ListKeys through the servicer, and the SoftHSM token set-up."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pkcs11 import Attribute, ObjectClass

from services.pb.custos.signer.v1 import signer_pb2 as pb
from services.runtime.auth import Principal, reset_principal, set_principal
from services.signer.errors import KeyExists, KeyNotFound
from services.signer.servicer import SignerServicer
from services.signer.softhsm import TokenConfig, ensure_token, token_labels
from tests.signer.conftest import CHAIN, SignerRig


def _call(coro_fn, *args):  # type: ignore[no-untyped-def]
    async def run():  # type: ignore[no-untyped-def]
        token = set_principal(Principal("operator-1", frozenset({"operator"})))
        try:
            return await coro_fn(*args, None)
        finally:
            reset_principal(token)

    return asyncio.run(run())


def test_create_get_list_keys(rig: SignerRig) -> None:
    servicer = SignerServicer(rig.service, rig.sessions)
    created = _call(
        servicer.CreateKey,
        pb.CreateKeyRequest(
            vault_id="sol-vault-1", algorithm=pb.KEY_ALGORITHM_ED25519, purpose=pb.KEY_PURPOSE_VAULT
        ),
    )
    key = created.key
    assert len(key.public_key) == 32 and key.label == "sol-vault-1.ed25519.vault"
    # no configured chain signs with Ed25519 here (no Solana chain in this rig): no address
    assert [a.chain for a in key.addresses] == []
    by_vault = _call(servicer.GetKey, pb.GetKeyRequest(vault_id=rig.vault.vault_id)).key
    assert by_vault.key_id == rig.vault.key_id and len(by_vault.public_key) == 65
    addresses = {a.chain: a.address for a in by_vault.addresses}
    assert addresses[CHAIN].startswith("0x") and addresses["cosmoshub"].startswith("cosmos1")
    assert _call(servicer.GetKey, pb.GetKeyRequest(key_id=key.key_id)).key == key
    page = _call(servicer.ListKeys, pb.ListKeysRequest(page_size=1))
    assert len(page.keys) == 1 and page.next_page_token
    rest = _call(servicer.ListKeys, pb.ListKeysRequest(page_size=10, page_token=page.next_page_token))
    assert {k.key_id for k in [*page.keys, *rest.keys]} == {key.key_id, rig.vault.key_id}
    assert not rest.next_page_token
    with pytest.raises(KeyNotFound):
        _call(servicer.GetKey, pb.GetKeyRequest(key_id="key_nope"))

    # A vault with a key per algorithm: asked for a chain, GetKey answers the key that signs there.
    for algorithm in (pb.KEY_ALGORITHM_ED25519, pb.KEY_ALGORITHM_SECP256K1):
        _call(
            servicer.CreateKey,
            pb.CreateKeyRequest(vault_id="two-keys", algorithm=algorithm, purpose=pb.KEY_PURPOSE_VAULT),
        )
    on_chain = _call(servicer.GetKey, pb.GetKeyRequest(vault_id="two-keys", chain=CHAIN)).key
    assert len(on_chain.public_key) == 65 and [a.chain for a in on_chain.addresses] == [CHAIN, "cosmoshub"]
    with pytest.raises(KeyNotFound, match="does not sign on chain 'nochain'"):
        _call(servicer.GetKey, pb.GetKeyRequest(vault_id="two-keys", chain="nochain"))
    with pytest.raises(KeyNotFound, match="that signs on"):
        _call(servicer.GetKey, pb.GetKeyRequest(vault_id="sol-vault-1", chain=CHAIN))


def test_key_is_generated_in_the_hsm_sensitive(rig: SignerRig) -> None:
    with rig.service._hsm.session() as s:
        from sqlalchemy import select

        from services.signer.models import SignerKey

        with rig.sessions() as db:
            hsm_id = db.scalars(select(SignerKey.hsm_id).where(SignerKey.key_id == rig.vault.key_id)).one()
        private = s.get_key(object_class=ObjectClass.PRIVATE_KEY, id=hsm_id)
        assert private[Attribute.SENSITIVE] and not private[Attribute.EXTRACTABLE]
        assert private[Attribute.LABEL] == rig.vault.label


def test_a_vault_gets_one_key_per_algorithm(rig: SignerRig) -> None:
    from services.signer.types import KeyAlgorithm, KeyPurpose

    with pytest.raises(KeyExists):
        rig.service.create_key_blocking("op", rig.vault.vault_id, KeyAlgorithm.SECP256K1, KeyPurpose.VAULT)


def test_roles() -> None:
    assert SignerServicer.ROLES["Sign"] == frozenset({"svc:worker"})
    assert SignerServicer.ROLES["CreateKey"] == frozenset({"operator"})
    assert SignerServicer.ROLES["ListKeys"] == frozenset({"operator", "svc:chain"})
    # a vault's address: initiators generate deposit data paying out to it
    assert SignerServicer.ROLES["GetKey"] == frozenset({"initiator", "svc:staking", "svc:worker"})
    assert "initiator" not in SignerServicer.ROLES["CreateKey"] | SignerServicer.ROLES["Sign"]


def test_ensure_token_is_idempotent_and_pin_is_never_shown(tmp_path: Path) -> None:
    pin = "pin-" + os.urandom(6).hex()
    first = ensure_token(tmp_path, "stack-a", pin, "so-" + os.urandom(6).hex())
    second = ensure_token(tmp_path, "stack-a", pin, "so-" + os.urandom(6).hex())
    ensure_token(tmp_path, "stack-b", pin, "so-" + os.urandom(6).hex())
    assert first == second
    assert sorted(token_labels(first.conf_path)) == ["stack-a", "stack-b"]
    assert str(first.token_dir) in first.conf_path.read_text()
    assert first.token_dir.is_relative_to(tmp_path)
    for text in (repr(first), str(first), repr(first.hsm_settings()), str(first.env())):
        assert pin not in text


def _login(cfg: TokenConfig, pin: str) -> subprocess.CompletedProcess[str]:
    code = (
        "from pydantic import SecretStr\n"
        "from services.runtime.settings import HsmSettings\n"
        "from services.signer.hsm import Hsm\n"
        "from services.signer.errors import SignerError\n"
        f"s = HsmSettings(module={str(cfg.module)!r}, token_label={cfg.label!r}, pin=SecretStr({pin!r}))\n"
        "try:\n    Hsm(s).open(); print('OK')\n"
        "except SignerError as e:\n    print(type(e).__name__, e)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **cfg.env()},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[2],
    )


def test_wrong_pin_is_a_typed_error_without_the_pin(tmp_path: Path) -> None:
    pin = "right-" + os.urandom(4).hex()
    cfg = ensure_token(tmp_path, "pin-test", pin, "so-" + os.urandom(6).hex())
    assert _login(cfg, pin).stdout.strip() == "OK"
    wrong = "wrong-" + os.urandom(4).hex()
    out = _login(cfg, wrong)
    assert out.stdout.startswith("HsmLoginFailed") and wrong not in out.stdout + out.stderr


def test_setup_script_is_idempotent(tmp_path: Path) -> None:
    root = Path(__file__).parents[2]
    env = {
        **os.environ,
        "CUSTOS_HSM__PIN": "1234-abcd",
        "CUSTOS_HSM_SO_PIN": "5678-abcd",
        "PYTHON": sys.executable,
    }
    for _ in range(2):
        out = subprocess.run(
            [str(root / "softhsm" / "setup-token.sh"), str(tmp_path), "scripted"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert out.stdout.strip() == f"export SOFTHSM2_CONF={tmp_path / 'softhsm' / 'softhsm2.conf'}"
    assert token_labels(tmp_path / "softhsm" / "softhsm2.conf") == ["scripted"]
