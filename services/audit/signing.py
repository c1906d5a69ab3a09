"""The key that signs checkpoints and the memory of the last one signed, in the HSM in production.

:class:`CheckpointSigner` and :class:`HeadStore` are all the trail needs.
``HsmCheckpointSigner`` and ``HsmHeadStore`` (in ``services.audit.hsm_signer``) keep
both on the audit token. :class:`SoftwareCheckpointSigner` and
:class:`InMemoryHeadStore` live in process memory and exist for development and
tests without an HSM: their checkpoints verify the same way, but the key can be read
by anyone who can read the process, and the memory is gone at the next start.
"""

from __future__ import annotations

import hashlib
import struct
import threading
from dataclasses import dataclass
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


@dataclass(frozen=True)
class SignedHead:
    """The last checkpoint this installation signed: its sequence, that record's hash, its digest.

    Kept where the database cannot rewrite it, it is a floor: the trail must still hold
    that record with that hash and that checkpoint before anything more is signed.
    """

    sequence: int
    record_hash: bytes
    checkpoint_digest: bytes

    _FORMAT = struct.Struct(">BQ32s32s")
    _VERSION = 1

    def encode(self) -> bytes:
        return self._FORMAT.pack(self._VERSION, self.sequence, self.record_hash, self.checkpoint_digest)

    @classmethod
    def decode(cls, raw: bytes) -> SignedHead:
        """Raises ValueError for anything :meth:`encode` did not make."""
        if len(raw) != cls._FORMAT.size:
            raise ValueError(f"a signed head is {cls._FORMAT.size} bytes, not {len(raw)}")
        version, sequence, record_hash, digest = cls._FORMAT.unpack(raw)
        if version != cls._VERSION or sequence < 1:
            raise ValueError("not a signed head of this format")
        return cls(sequence, record_hash, digest)


@runtime_checkable
class HeadStore(Protocol):
    """Remembers the :class:`SignedHead` out of the database's reach (the audit HSM token)."""

    def load(self) -> SignedHead | None:
        """The head stored last, or None if this installation never signed a checkpoint."""
        ...

    def store(self, head: SignedHead) -> None: ...


class InMemoryHeadStore:
    """A :class:`HeadStore` in process memory. Development and tests only: it forgets at exit,
    so a trail rolled back across a restart goes unnoticed."""

    def __init__(self, head: SignedHead | None = None) -> None:
        self._head = head
        self._lock = threading.Lock()

    def load(self) -> SignedHead | None:
        with self._lock:
            return self._head

    def store(self, head: SignedHead) -> None:
        with self._lock:
            self._head = head
