"""People of a stack as the CLI acts for them: certificate, approver key file, typed clients.

An approver's key file may be encrypted (a PKCS#8 PEM under a passphrase). The passphrase
comes from ``--passphrase-file``, else ``CUSTOS_KEY_PASSPHRASE``, else a prompt on the
terminal: never from a command-line argument, which any user of the machine reads in ``ps``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from services.policy.evidence import PrivateKey, public_key_der
from services.runtime.client import BaseClient
from services.runtime.errors import InvalidArgument
from services.runtime.settings import ServiceSettings

PASSPHRASE_ENV = "CUSTOS_KEY_PASSPHRASE"  # noqa: S105 (the variable's name, not a secret)


def read_passphrase_file(path: Path) -> bytes:
    """The first line of a passphrase file (its trailing newline is not part of it)."""
    try:
        text = path.read_bytes()
    except OSError as e:
        raise InvalidArgument(f"cannot read passphrase file {path}: {e.strerror}") from None
    line = text.splitlines()[0] if text.strip() else b""
    if not line:
        raise InvalidArgument(f"passphrase file {path} is empty")
    return line


def passphrase_for(path: Path, passphrase_file: Path | None, *, confirm: bool = False) -> bytes:
    """The passphrase of key file ``path``: the file, else the environment, else the terminal."""
    if passphrase_file is not None:
        return read_passphrase_file(passphrase_file)
    env = os.environ.get(PASSPHRASE_ENV)
    if env:
        return env.encode()
    if not sys.stdin.isatty():
        raise InvalidArgument(
            f"{path} is protected by a passphrase: give --passphrase-file FILE or set {PASSPHRASE_ENV}"
        )
    text = click.prompt(f"passphrase of {path}", hide_input=True, confirmation_prompt=confirm, err=True)
    if not text:
        raise InvalidArgument("the passphrase is empty")
    return str(text).encode()


def load_key(path: Path, passphrase_file: Path | None = None) -> PrivateKey:
    """An approver's signing key from its PKCS#8 PEM file (Ed25519 or ECDSA P-256), encrypted or not."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InvalidArgument(f"cannot read approver key {path}: {e.strerror}") from None
    password = passphrase_for(path, passphrase_file) if b"ENCRYPTED PRIVATE KEY" in data else None
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except ValueError:
        if password is not None:
            raise InvalidArgument(f"wrong passphrase for {path} (or the file is damaged)") from None
        raise InvalidArgument(f"{path} is not a PEM private key") from None
    except TypeError:
        raise InvalidArgument(f"{path} is not a PEM private key") from None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise InvalidArgument(f"{path} is neither an Ed25519 nor an ECDSA P-256 key")


def write_new_key(path: Path, passphrase: bytes | None) -> PrivateKey:
    """A new Ed25519 approver key in ``path`` (owner-only), encrypted under ``passphrase`` if given,
    and its public key beside it (``path`` with suffix ``.pub``). Never overwrites a file."""
    new = ed25519.Ed25519PrivateKey.generate()
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InvalidArgument(f"{path} exists: a key file is never overwritten") from None
    with os.fdopen(fd, "wb") as f:
        f.write(new.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    public = new.public_key()
    path.with_suffix(".pub").write_bytes(
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return new


def load_or_create_key(path: Path) -> PrivateKey:
    """An approver's Ed25519 key in a PEM file readable by its owner only (created once, unencrypted:
    the dev stack's own people)."""
    if path.exists():
        return load_key(path)
    new = ed25519.Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            new.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return new


@dataclass
class Person:
    """Acts as ``name`` against a running stack (its certificate, its approver key)."""

    name: str
    settings: ServiceSettings
    key_dir: Path

    def client(self, cls: type[BaseClient]) -> Any:
        pki = self.settings.tls.pki_dir
        assert pki is not None
        return cls.connect(self.settings, cert=pki / f"{self.name}.crt", key=pki / f"{self.name}.key")

    @property
    def key_file(self) -> Path:
        return self.key_dir / f"{self.name}.pem"

    @property
    def key(self) -> PrivateKey:
        return load_or_create_key(self.key_file)

    def public_key(self) -> bytes:
        return public_key_der(self.key)
