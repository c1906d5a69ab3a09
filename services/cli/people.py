"""People of a stack as the CLI acts for them: certificate, approver key file, typed clients."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from services.policy.evidence import PrivateKey, public_key_der, sign_approval
from services.runtime.client import BaseClient, open_channel
from services.runtime.errors import InvalidArgument
from services.runtime.intent import Approval, Decision
from services.runtime.settings import ServiceSettings, TLSSettings


def load_or_create_key(path: Path) -> PrivateKey:
    """An approver's Ed25519 key in a PEM file readable by its owner only (created once)."""
    if path.exists():
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except ValueError as e:
            raise InvalidArgument(f"{path} is not a PEM private key") from e
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise InvalidArgument(f"{path} is not an Ed25519 key")
        return key
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
        tls = TLSSettings(pki_dir=pki, ca_cert=pki / "ca.crt")
        channel = open_channel(
            self.settings.endpoints.of(cls.service),
            tls,
            cert=pki / f"{self.name}.crt",
            key=pki / f"{self.name}.key",
        )
        return cls(channel, deadline=self.settings.grpc_deadline_seconds)

    @property
    def key(self) -> PrivateKey:
        return load_or_create_key(self.key_dir / f"{self.name}.pem")

    def public_key(self) -> bytes:
        return public_key_der(self.key)

    def sign(self, digest: bytes, policy_version: str, decision: Decision, expires_at: datetime) -> Approval:
        return sign_approval(
            self.key,
            approver_id=self.name,
            intent_digest=digest,
            policy_version=policy_version,
            decision=decision,
            expires_at=expires_at,
        )
