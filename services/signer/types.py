"""Domain scalars and small value types of the signer."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import NewType

KeyId = NewType("KeyId", str)
KeyLabel = NewType("KeyLabel", str)
IntentId = NewType("IntentId", str)
Step = NewType("Step", str)


class KeyAlgorithm(StrEnum):
    SECP256K1 = "SECP256K1"
    ED25519 = "ED25519"


class KeyPurpose(StrEnum):
    VAULT = "VAULT"
    AUDIT_CHECKPOINT = "AUDIT_CHECKPOINT"


@dataclass(frozen=True)
class EcdsaSignature:
    """A secp256k1 signature in the form Ethereum uses: low-S, recovery id ``v`` in {0, 1}."""

    r: int
    s: int
    v: int

    def to_bytes(self) -> bytes:
        """65 bytes ``r || s || v``."""
        return self.r.to_bytes(32, "big") + self.s.to_bytes(32, "big") + bytes([self.v])

    @classmethod
    def from_bytes(cls, raw: bytes) -> EcdsaSignature:
        if len(raw) != 65:
            raise ValueError("an ECDSA signature with recovery id is 65 bytes")
        return cls(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:64], "big"), raw[64])
