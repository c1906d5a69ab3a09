"""People of a stack as the CLI acts for them: certificate, approver key file, typed clients."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from services.policy.evidence import PrivateKey, public_key_der
from services.runtime.client import BaseClient
from services.runtime.errors import InvalidArgument
from services.runtime.settings import ServiceSettings


def load_key(path: Path) -> PrivateKey:
    """An approver's signing key from its unencrypted PKCS#8 PEM file (Ed25519 or ECDSA P-256)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InvalidArgument(f"cannot read approver key {path}: {e.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise InvalidArgument(f"{path} is not an unencrypted PEM private key") from None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise InvalidArgument(f"{path} is neither an Ed25519 nor an ECDSA P-256 key")


def load_or_create_key(path: Path) -> PrivateKey:
    """An approver's Ed25519 key in a PEM file readable by its owner only (created once)."""
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
