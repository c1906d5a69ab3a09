"""Domain scalars and small value types of the signer."""

from __future__ import annotations

from enum import StrEnum
from typing import NewType

from services.families.base import KeyAlgorithm

KeyId = NewType("KeyId", str)
KeyLabel = NewType("KeyLabel", str)
IntentId = NewType("IntentId", str)
Step = NewType("Step", str)


class KeyPurpose(StrEnum):
    VAULT = "VAULT"
    AUDIT_CHECKPOINT = "AUDIT_CHECKPOINT"


__all__ = ["IntentId", "KeyAlgorithm", "KeyId", "KeyLabel", "KeyPurpose", "Step"]
