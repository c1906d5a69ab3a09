"""Plain value types shared by the engine, the evidence check and the signer.

Standard library only (plus :mod:`services.runtime.intent`), so the signer and the
staking workflow can import them without pulling in the database or YAML.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import NewType

KeyId = NewType("KeyId", str)
ApproverId = NewType("ApproverId", str)


class SignatureScheme(StrEnum):
    ED25519 = "ED25519"
    ECDSA_P256 = "ECDSA_P256"


class Outcome(StrEnum):
    ALLOW = "ALLOW"
    DENY = "DENY"


def key_id_for(public_key_der: bytes) -> KeyId:
    """The id of an approver key: derived from the key, so the CLI can compute it offline."""
    return KeyId("k" + hashlib.sha256(public_key_der).hexdigest()[:32])


@dataclass(frozen=True)
class ApprovalGroup:
    """``threshold`` of ``members`` (approver ids) must approve."""

    name: str
    threshold: int
    members: frozenset[str]


@dataclass(frozen=True)
class Requirement:
    """What an intent needs before it may be signed: every group must be met.

    ``expiry_seconds`` counts from the evaluation; ``fee_cap`` (base units) bounds
    the network fee of the transaction when the rule sets one.
    """

    groups: tuple[ApprovalGroup, ...]
    expiry_seconds: int
    policy_version: str
    rule_id: str
    fee_cap: int | None = None


@dataclass(frozen=True)
class VelocityLimit:
    """At most ``max_amount`` per vault (and per action when ``action`` is set)
    within ``window_seconds`` before the moment of checking."""

    window_seconds: int
    max_amount: int
    action: str | None = None


@dataclass(frozen=True)
class ApproverKeyInfo:
    key_id: str
    scheme: SignatureScheme
    public_key: bytes  # DER SubjectPublicKeyInfo
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class ApproverInfo:
    """One approver as the registry knows it at the time of a check."""

    approver_id: str
    display_name: str
    groups: frozenset[str]
    keys: tuple[ApproverKeyInfo, ...]
    created_at: datetime

    def key(self, key_id: str) -> ApproverKeyInfo | None:
        for k in self.keys:
            if k.key_id == key_id:
                return k
        return None


# approver id -> approver: what the evidence check reads.
RegistrySnapshot = Mapping[str, ApproverInfo]
