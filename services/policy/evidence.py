"""The approval evidence check: does a set of signed approvals meet a requirement?

The staking workflow (update validators), the policy service (``CheckApprovals``,
policy activation) and the signer (before every HSM signature) all call
:func:`check_approvals`, so it must be deterministic and light: it imports only
the standard library, ``cryptography`` and the shared intent domain.

Rules, in the order they are applied to each approval:

* the approver is registered and the key is one of theirs, not revoked at ``now``
  (revocation voids approvals already given);
* the signature is valid over :meth:`Approval.message` (Ed25519, or ECDSA P-256
  with SHA-256 and a DER signature);
* it names this intent's digest and the requirement's policy version;
* the approver is not the initiator and is a member of at least one group;
* an approval (not a reject) has not expired at ``now``, and does not claim to count
  beyond the intent's approval window (``deadline``): an approver cannot make an
  approval outlive the window the policy gives the intent;
* one approver counts once, and toward one group only: the requirement is met when
  distinct approvers can be assigned to groups so that every group reaches its
  threshold. Any valid reject from an authorised approver rejects the intent,
  whatever else was given (a refusal does not go stale, so expiry does not void it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_public_key,
)

from services.policy.domain import (
    ApproverInfo,
    ApproverKeyInfo,
    Requirement,
    SignatureScheme,
    key_id_for,
)
from services.policy.errors import ApproverInvalid
from services.runtime.intent import Approval, Decision

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey

COUNTED = "counted"
REJECTS = "valid reject"


@dataclass(frozen=True)
class Verdict:
    """Why one approval did or did not count."""

    approver_id: str
    key_id: str
    counted: bool
    reason: str


@dataclass(frozen=True)
class EvidenceResult:
    met: bool
    rejected: bool
    verdicts: tuple[Verdict, ...]
    # Groups still short of their threshold (empty when met).
    missing: tuple[str, ...]
    # Approver ids that count toward the requirement.
    counted: frozenset[str]


@lru_cache(maxsize=4096)
def _loaded(der: bytes) -> PublicKeyTypes:
    """The parsed public key of DER bytes (a pure function: parsed once, not per approval)."""
    return load_der_public_key(der)


def verify_signature(key: ApproverKeyInfo, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` by ``key`` over ``message`` is valid; never raises."""
    try:
        public = _loaded(key.public_key)
        if key.scheme is SignatureScheme.ED25519:
            if not isinstance(public, ed25519.Ed25519PublicKey):
                return False
            public.verify(signature, message)
            return True
        if key.scheme is SignatureScheme.ECDSA_P256:
            if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(
                public.curve, ec.SECP256R1
            ):
                return False
            public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
            return True
    except (InvalidSignature, ValueError, TypeError):
        return False
    return False


def _judge(
    approval: Approval,
    *,
    intent_digest: bytes,
    requirement: Requirement,
    registry: Mapping[str, ApproverInfo],
    initiator: str,
    now: datetime,
    eligible: frozenset[str],
    deadline: datetime | None,
) -> str | None:
    """Returns None when the approval is valid evidence, else why it is not."""
    approver = registry.get(approval.approver_id)
    if approver is None:
        return "unknown approver"
    key = approver.key(approval.key_id)
    if key is None:
        return "key is not registered to this approver"
    if key.revoked_at is not None and key.revoked_at <= now:
        return "key revoked"
    if not verify_signature(key, approval.message(), approval.signature):
        return "invalid signature"
    if approval.intent_digest != intent_digest:
        return "signed for another intent"
    if approval.policy_version != requirement.policy_version:
        return "signed under another policy version"
    if approval.approver_id == initiator:
        return "the initiator cannot approve their own intent"
    if approval.approver_id not in eligible:
        return "approver is not a member of any required group"
    if approval.decision is Decision.APPROVE and approval.expires_at <= now:
        return "approval expired"
    if approval.decision is Decision.APPROVE and deadline is not None and approval.expires_at > deadline:
        return "approval expires after the intent's approval window"
    return None


def assign_groups(requirement: Requirement, approvers: Sequence[str]) -> dict[str, list[str]]:
    """Assigns distinct approvers to group slots (max bipartite matching).

    Returns group name -> assigned approvers. Deterministic: approvers are tried in
    the given order and groups in requirement order.
    """
    slots: list[str] = [g.name for g in requirement.groups for _ in range(g.threshold)]
    members = {g.name: g.members for g in requirement.groups}
    slot_of: dict[int, str] = {}  # slot index -> approver

    def augment(approver: str, seen: set[int]) -> bool:
        for i, group in enumerate(slots):
            if i in seen or approver not in members[group]:
                continue
            seen.add(i)
            holder = slot_of.get(i)
            if holder is None or augment(holder, seen):
                slot_of[i] = approver
                return True
        return False

    for a in approvers:
        if len(slot_of) == len(slots):
            break
        augment(a, set())
    out: dict[str, list[str]] = {g.name: [] for g in requirement.groups}
    for i, a in sorted(slot_of.items()):
        out[slots[i]].append(a)
    return out


def check_approvals(
    *,
    intent_digest: bytes,
    approvals: Sequence[Approval],
    requirement: Requirement,
    registry: Mapping[str, ApproverInfo],
    initiator: str,
    now: datetime,
    deadline: datetime | None = None,
) -> EvidenceResult:
    """Judges ``approvals`` of the intent with ``intent_digest`` against ``requirement``.

    Args:
        intent_digest: :func:`services.runtime.intent.intent_digest` of the intent
            under ``requirement.policy_version``.
        approvals: As received; order only decides which of an approver's
            duplicates is reported as counted.
        requirement: The requirement of the policy version the approvals name.
        registry: Approver id -> registry entry (groups, keys, revocations).
        initiator: Never counts, whatever they sign.
        now: The time of the check (timezone-aware).
        deadline: The end of the intent's approval window (its submission time plus
            the requirement's ``expiry_seconds``): an approval set to expire later
            does not count. None for checks that have no window (tests of the rules).
    """
    eligible = frozenset().union(*(g.members for g in requirement.groups)) - {initiator}
    verdicts: list[Verdict | None] = [None] * len(approvals)
    valid_approvers: list[str] = []
    first_index: dict[str, int] = {}
    rejected = False
    for i, a in enumerate(approvals):
        why = _judge(
            a,
            intent_digest=intent_digest,
            requirement=requirement,
            registry=registry,
            initiator=initiator,
            now=now,
            eligible=eligible,
            deadline=deadline,
        )
        if why is not None:
            verdicts[i] = Verdict(a.approver_id, a.key_id, False, why)
        elif a.decision is Decision.REJECT:
            rejected = True
            verdicts[i] = Verdict(a.approver_id, a.key_id, True, REJECTS)
        elif a.approver_id in first_index:
            verdicts[i] = Verdict(a.approver_id, a.key_id, False, "duplicate approver")
        else:
            first_index[a.approver_id] = i
            valid_approvers.append(a.approver_id)

    assignment = assign_groups(requirement, valid_approvers)
    assigned = {a for group in assignment.values() for a in group}
    for approver_id, i in first_index.items():
        a = approvals[i]
        if approver_id in assigned:
            verdicts[i] = Verdict(a.approver_id, a.key_id, True, COUNTED)
        else:
            verdicts[i] = Verdict(
                a.approver_id, a.key_id, False, "not needed: the groups they belong to are full"
            )
    missing = tuple(g.name for g in requirement.groups if len(assignment[g.name]) < g.threshold)
    final = tuple(v for v in verdicts if v is not None)
    return EvidenceResult(
        met=not rejected and not missing,
        rejected=rejected,
        verdicts=final,
        missing=missing,
        counted=frozenset(assigned) if not rejected else frozenset(),
    )


def normalise_public_key(scheme: SignatureScheme, public_key: bytes) -> bytes:
    """Checks that ``public_key`` is DER SPKI of ``scheme``; returns its canonical DER."""
    try:
        key = load_der_public_key(public_key)
    except (ValueError, TypeError):
        raise ApproverInvalid("public_key must be a DER SubjectPublicKeyInfo") from None
    if scheme is SignatureScheme.ED25519 and isinstance(key, ed25519.Ed25519PublicKey):
        pass
    elif (
        scheme is SignatureScheme.ECDSA_P256
        and isinstance(key, ec.EllipticCurvePublicKey)
        and isinstance(key.curve, ec.SECP256R1)
    ):
        pass
    else:
        raise ApproverInvalid(f"public_key is not an {scheme} key")
    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def public_key_der(private_key: PrivateKey) -> bytes:
    """The DER SubjectPublicKeyInfo an approver registers for ``private_key``."""
    return private_key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def scheme_of(private_key: PrivateKey) -> SignatureScheme:
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return SignatureScheme.ED25519
    if isinstance(private_key.curve, ec.SECP256R1):
        return SignatureScheme.ECDSA_P256
    raise ValueError(f"unsupported curve {private_key.curve.name}: use Ed25519 or P-256")


def sign_approval(
    private_key: PrivateKey,
    *,
    approver_id: str,
    intent_digest: bytes,
    policy_version: str,
    decision: Decision,
    expires_at: datetime,
    key_id: str | None = None,
) -> Approval:
    """Signs an approval as an approver's CLI does (the private key stays with the approver).

    ``key_id`` defaults to :func:`key_id_for` of the key's public half, which is
    what the registry assigns on registration.
    """
    scheme = scheme_of(private_key)
    kid = key_id or key_id_for(public_key_der(private_key))
    unsigned = Approval(
        approver_id=approver_id,
        key_id=kid,
        decision=decision,
        intent_digest=intent_digest,
        policy_version=policy_version,
        expires_at=expires_at,
        signature=b"",
    )
    message = unsigned.message()
    if scheme is SignatureScheme.ED25519:
        assert isinstance(private_key, ed25519.Ed25519PrivateKey)
        signature = private_key.sign(message)
    else:
        assert isinstance(private_key, ec.EllipticCurvePrivateKey)
        signature = private_key.sign(message, ec.ECDSA(hashes.SHA256()))
    return Approval(
        approver_id=approver_id,
        key_id=kid,
        decision=decision,
        intent_digest=intent_digest,
        policy_version=policy_version,
        expires_at=expires_at,
        signature=signature,
    )
