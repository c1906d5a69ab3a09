"""Keys by duty: the audit checkpoint key and the vault keys live on tokens of their own.

The audit service's HSM session cannot see or use a vault key, the signer's cannot see
the checkpoint key or the memory of the last checkpoint, one token's PIN does not open
the other, and the dev stack hands each service its own token and nothing else.
"""

from __future__ import annotations

import multiprocessing
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from services.audit.errors import AuditTokenShared
from services.audit.hsm_signer import DEFAULT_LABEL, HsmCheckpointSigner, HsmHeadStore
from services.audit.signing import SignedHead
from services.cli import devstack
from services.runtime.settings import HsmSettings
from services.signer.errors import HsmKeyNotFound, HsmLoginFailed, HsmTokenShared, SignerError
from services.signer.hsm import Hsm
from services.signer.main import SignerSettings, build
from services.signer.softhsm import TokenConfig
from services.signer.types import KeyAlgorithm


def test_the_audit_session_cannot_see_or_use_a_vault_key(hsm: Hsm, audit_hsm: Hsm) -> None:
    label, key_id = f"vault-{secrets.token_hex(4)}.secp256k1.signing", secrets.token_bytes(16)
    hsm.generate_keypair(KeyAlgorithm.SECP256K1, label, key_id)
    assert hsm.find_key_ids(label) == [key_id]
    assert audit_hsm.find_key_ids(label) == [] and label not in audit_hsm.private_key_labels()
    with pytest.raises(HsmKeyNotFound):
        audit_hsm.sign_secp256k1(key_id, bytes(32))
    with pytest.raises(HsmKeyNotFound):
        audit_hsm.public_key(key_id)


def test_the_signer_session_cannot_see_the_checkpoint_key_or_its_memory(
    hsm: Hsm, audit_hsm: Hsm, checkpoint_signer: HsmCheckpointSigner, head_store: HsmHeadStore
) -> None:
    head_store.store(SignedHead(7, bytes(32), bytes(32)))
    hsm_key_id = bytes.fromhex(checkpoint_signer.key_id.rsplit(":", 1)[1])
    assert audit_hsm.find_key_ids(DEFAULT_LABEL) == [hsm_key_id]
    assert hsm.find_key_ids(DEFAULT_LABEL) == [] and DEFAULT_LABEL not in hsm.private_key_labels()
    with pytest.raises(HsmKeyNotFound):
        hsm.sign_ed25519(hsm_key_id, b"checkpoint")
    assert hsm.load_data(head_store.label) is None and audit_hsm.load_data(head_store.label) is not None


def _open(settings: HsmSettings) -> str:
    """In a fresh process (PKCS#11 logins are per process and token): what opening the token gives."""
    try:
        Hsm(settings).open()
    except SignerError as e:
        return type(e).__name__
    return "opened"


def test_one_tokens_pin_does_not_open_the_other(softhsm_token: TokenConfig, audit_token: TokenConfig) -> None:
    assert softhsm_token.pin.get_secret_value() != audit_token.pin.get_secret_value()
    crossed = HsmSettings(token_label=audit_token.label, pin=softhsm_token.pin)
    own = HsmSettings(token_label=audit_token.label, pin=audit_token.pin)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.apply(_open, (crossed,)) == HsmLoginFailed.__name__
        assert pool.apply(_open, (own,)) == "opened"


def test_a_shared_token_is_refused_by_both_services(
    softhsm_tokens: dict[str, TokenConfig], tmp_path: Path
) -> None:
    shared = Hsm(softhsm_tokens["shared"].hsm_settings()).open()
    try:
        shared.generate_keypair(KeyAlgorithm.SECP256K1, "vault-9.secp256k1.signing", secrets.token_bytes(16))
        with pytest.raises(AuditTokenShared):
            HsmCheckpointSigner.ensure(shared)
        shared.generate_keypair(KeyAlgorithm.ED25519, DEFAULT_LABEL, secrets.token_bytes(16))
        settings = SignerSettings(
            hsm=softhsm_tokens["shared"].hsm_settings(), database_url=f"sqlite:///{tmp_path / 'x.db'}"
        )
        import asyncio

        with pytest.raises(HsmTokenShared):
            asyncio.run(build(settings))
    finally:
        shared.close()


_SLOTS = """
import importlib, sys
import pkcs11
settings = importlib.import_module(f"services.{sys.argv[1]}.main").SETTINGS()  # as the service loads them
hsm = getattr(settings, "hsm", None)
print([] if hsm is None else sorted(t.label for t in pkcs11.lib(str(hsm.module)).get_tokens() if t.label))
print(None if hsm is None else f"{hsm.token_label} {hsm.pin_file.name}")
"""


def test_the_dev_stack_gives_each_service_its_own_token_only(tmp_path: Path) -> None:
    stack = devstack.Stack.named(tmp_path, "duties")
    stack.root.mkdir(parents=True)
    devstack._prepare_hsm(stack)
    devstack._write_config(stack, {})
    assert "hsm" not in yaml.safe_load(stack.config.read_text())  # the shared file names no token
    seen = {}
    for service in ("signer", "audit", "policy"):
        env = stack.env(service)
        out = subprocess.run(
            [sys.executable, "-c", _SLOTS, service],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        seen[service] = out.stdout.split("\n")[:2] if out.returncode == 0 else out.stderr.strip()[-200:]
    assert seen["signer"] == ["['custos-vault']", "custos-vault signer-hsm-user.pin"], seen
    assert seen["audit"] == ["['custos-audit']", "custos-audit audit-hsm-user.pin"], seen
    assert seen["policy"] == ["[]", "None"], seen  # no token at all
    assert not any(k.startswith(("CUSTOS_HSM", "SOFTHSM2")) for k in stack.env("policy"))
    vault_pin, audit_pin = stack.pin_file("signer").read_text(), stack.pin_file("audit").read_text()
    assert vault_pin != audit_pin
    assert not any(str(stack.pin_file("signer")) in v for v in stack.env("audit").values())
    assert not any(str(stack.pin_file("audit")) in v for v in stack.env("signer").values())
