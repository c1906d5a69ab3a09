"""The key that signs checkpoints: an Ed25519 key, in the HSM in production.

:class:`CheckpointSigner` is all the trail needs. ``HsmCheckpointSigner``
(in ``services.audit.hsm_signer``) adapts the signer's HSM key;
:class:`SoftwareCheckpointSigner` keeps a key in process memory and exists for
development stacks without an HSM: its checkpoints verify the same way, but its
key can be read by anyone who can read the process.
"""

from __future__ import annotations

import hashlib
from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


@runtime_checkable
class CheckpointSigner(Protocol):
    """An Ed25519 key that signs checkpoint messages."""

    @property
    def key_id(self) -> str: ...

    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""
        ...

    def sign(self, message: bytes) -> bytes:
        """A 64-byte Ed25519 signature over ``message``."""
        ...


def key_fingerprint(public_key: bytes) -> str:
    """A short, stable name for a public key, for people to compare out of band."""
    return "sha256:" + hashlib.sha256(public_key).hexdigest()[:32]


class SoftwareCheckpointSigner:
    """An Ed25519 key in process memory. Development only: production uses the HSM."""

    def __init__(self, key_id: str, private_key: Ed25519PrivateKey | None = None) -> None:
        self._key = private_key or Ed25519PrivateKey.generate()
        self._key_id = key_id
        self._public = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def key_id(self) -> str:
        return self._key_id

    def public_key(self) -> bytes:
        return self._public

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)
