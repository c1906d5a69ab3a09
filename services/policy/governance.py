"""Governed changes: the approver registry and the active policy change only through the admin quorum.

Who may approve what is itself the most valuable fact in custos, so it is never a
database row that someone trusts. It is the result of replaying a hash-linked log of
**governed changes**, each signed by admins whose keys are pinned outside the
database (:class:`TrustRoot`, from a file in each verifier's own configuration):

* a change request names one change (register an approver, add or revoke a key, set
  an approver's groups, activate a policy version), who proposes it, an id used once
  and an expiry; admins sign its digest (:meth:`ChangeRequest.digest`) with the same
  approval format people use for intents (:class:`~services.runtime.intent.Approval`
  with ``policy_version`` = :data:`GOVERNANCE_VERSION`);
* a change applies when the proposer (a pinned admin) signed it and ``quorum`` other
  pinned admins approved it: one admin alone can never change who approves. Revoking
  a key only takes power away, so the proposing admin's signature suffices;
* an applied change becomes an :class:`Entry` of the log, linked to the previous
  entry's hash. :class:`GovernedState` replays entries, verifying every link and every
  signature against the trust root: the policy service before it appends, the signer
  before it trusts a single approver key or policy version.

Pure: the standard library, ``cryptography`` (through the evidence check) and the
shared intent domain; the signer embeds it as its own independent check.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from services.policy.domain import ApproverInfo, ApproverKeyInfo, SignatureScheme, key_id_for
from services.policy.errors import ApproverInvalid, ChangeInvalid, GovernanceInvalid, TrustRootInvalid
from services.policy.evidence import normalise_public_key, verify_signature
from services.runtime.intent import Approval, Decision, canonical_json

#: What admins' approvals of governed changes carry as their policy version: no policy
#: version governs the registry (the trust root does), and it keeps these approvals
#: apart from any intent's.
GOVERNANCE_VERSION = "custos.governance"
CHANGE_DOMAIN = "custos.governance.change.v1"
ENTRY_DOMAIN = "custos.governance.entry.v1"
TRUST_FORMAT = "custos.trust/v1"
#: The longest a change request may stay open for approvals.
MAX_CHANGE_LIFETIME = timedelta(days=7)
GENESIS = bytes(32)

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$")


def _check_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise ChangeInvalid(f"{what} must be 1-128 letters, digits or ._:@/- (a letter or digit first)")
    return value


# --- the changes ----------------------------------------------------------------------------


class ChangeKind(StrEnum):
    REGISTER_APPROVER = "approver.register"
    ADD_APPROVER_KEY = "approver.add_key"
    SET_APPROVER_GROUPS = "approver.set_groups"
    REVOKE_APPROVER_KEY = "approver.revoke_key"
    ACTIVATE_POLICY = "policy.activate"


@dataclass(frozen=True)
class RegisterApprover:
    """A new approver with their first key. ``public_key`` is canonical DER SPKI."""

    approver_id: str
    display_name: str
    groups: tuple[str, ...]
    scheme: SignatureScheme
    public_key: bytes


@dataclass(frozen=True)
class AddApproverKey:
    """Another key for an approver (rotation: the old one stays valid until revoked)."""

    approver_id: str
    scheme: SignatureScheme
    public_key: bytes


@dataclass(frozen=True)
class SetApproverGroups:
    """Replaces an approver's groups (empty: they approve nothing any more)."""

    approver_id: str
    groups: tuple[str, ...]


@dataclass(frozen=True)
class RevokeApproverKey:
    """Voids a key and every approval made with it, at once."""

    approver_id: str
    key_id: str
    reason: str


@dataclass(frozen=True)
class ActivatePolicy:
    """Makes ``version`` the active policy; ``parent_version`` must be active when it applies."""

    version: str
    parent_version: str


Change = RegisterApprover | AddApproverKey | SetApproverGroups | RevokeApproverKey | ActivatePolicy

KIND_OF: dict[type, ChangeKind] = {
    RegisterApprover: ChangeKind.REGISTER_APPROVER,
    AddApproverKey: ChangeKind.ADD_APPROVER_KEY,
    SetApproverGroups: ChangeKind.SET_APPROVER_GROUPS,
    RevokeApproverKey: ChangeKind.REVOKE_APPROVER_KEY,
    ActivatePolicy: ChangeKind.ACTIVATE_POLICY,
}
_TYPE_OF = {kind: cls for cls, kind in KIND_OF.items()}


def kind_of(change: Change) -> ChangeKind:
    return KIND_OF[type(change)]


def _groups(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted({_check_id(g, "group") for g in values}))


def normalise(change: Change) -> Change:
    """``change`` in its one canonical spelling (sorted groups); ChangeInvalid when malformed."""
    if isinstance(change, RegisterApprover):
        _check_id(change.approver_id, "approver_id")
        if len(change.display_name) > 256 or not change.display_name.isprintable():
            raise ChangeInvalid("display_name must be at most 256 printable characters")
        return replace(change, groups=_groups(change.groups), scheme=SignatureScheme(change.scheme))
    if isinstance(change, AddApproverKey):
        _check_id(change.approver_id, "approver_id")
        return replace(change, scheme=SignatureScheme(change.scheme))
    if isinstance(change, SetApproverGroups):
        _check_id(change.approver_id, "approver_id")
        return replace(change, groups=_groups(change.groups))
    if isinstance(change, RevokeApproverKey):
        _check_id(change.approver_id, "approver_id")
        _check_id(change.key_id, "key_id")
        if len(change.reason) > 500 or not change.reason.isprintable():
            raise ChangeInvalid("reason must be at most 500 printable characters")
        return change
    if not re.fullmatch(r"[0-9a-f]{64}", change.version):
        raise ChangeInvalid("version must be a policy version hash (64 lowercase hex digits)")
    if change.parent_version and not re.fullmatch(r"[0-9a-f]{64}", change.parent_version):
        raise ChangeInvalid("parent_version must be empty or a policy version hash")
    return change


def change_to_plain(change: Change) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": kind_of(change).value}
    for name in change.__dataclass_fields__:
        value = getattr(change, name)
        body[name] = list(value) if isinstance(value, tuple) else value
    return body


def change_from_plain(data: Mapping[str, Any]) -> Change:
    try:
        cls = _TYPE_OF[ChangeKind(data["kind"])]
        values: dict[str, Any] = {}
        for f in fields(cls):
            name, raw = f.name, data[f.name]
            if f.type in ("bytes",):
                values[name] = bytes.fromhex(raw)
            elif f.type in ("tuple[str, ...]",):
                values[name] = tuple(str(v) for v in raw)
            elif f.type in ("SignatureScheme",):
                values[name] = SignatureScheme(raw)
            else:
                values[name] = str(raw)
        change: Change = cls(**values)
    except (KeyError, ValueError, TypeError) as e:
        raise ChangeInvalid(f"malformed change ({type(e).__name__}: {str(e)[:80]})") from None
    return normalise(change)


@dataclass(frozen=True)
class ChangeRequest:
    """What admins sign: one change, its proposer, an id used once, an expiry."""

    change_id: str
    proposer: str
    expires_at: datetime
    change: Change

    def to_plain(self) -> dict[str, Any]:
        return {
            "change_id": self.change_id,
            "proposer": self.proposer,
            "expires_at": self.expires_at,
            "change": change_to_plain(self.change),
        }

    def canonical(self) -> bytes:
        return canonical_json({"domain": CHANGE_DOMAIN, **self.to_plain()})

    def digest(self) -> bytes:
        """SHA-256 of the canonical request: what the proposer and the approving admins sign."""
        return hashlib.sha256(self.canonical()).digest()


def request_from_plain(data: Mapping[str, Any]) -> ChangeRequest:
    try:
        expires = datetime.strptime(str(data["expires_at"]), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        return ChangeRequest(
            change_id=_check_id(str(data["change_id"]), "change_id"),
            proposer=_check_id(str(data["proposer"]), "proposer"),
            expires_at=expires,
            change=change_from_plain(data["change"]),
        )
    except (KeyError, ValueError, TypeError) as e:
        raise ChangeInvalid(f"malformed change request ({type(e).__name__})") from None


def describe(request: ChangeRequest) -> str:
    """One line a person reads: what the change does."""
    c = request.change
    if isinstance(c, RegisterApprover):
        return f"register approver {c.approver_id} in {', '.join(c.groups) or 'no group'}"
    if isinstance(c, AddApproverKey):
        return f"add key {key_id_for(c.public_key)} to {c.approver_id}"
    if isinstance(c, SetApproverGroups):
        return f"set the groups of {c.approver_id} to {', '.join(c.groups) or 'none'}"
    if isinstance(c, RevokeApproverKey):
        return f"revoke key {c.key_id} of {c.approver_id}"
    return f"activate policy {c.version[:16]}"


def new_request(change: Change, *, change_id: str, proposer: str, expires_at: datetime) -> ChangeRequest:
    """A validated request (ids checked, change normalised, expiry in whole milliseconds)."""
    if expires_at.tzinfo is None:
        raise ChangeInvalid("expires_at must be timezone-aware")
    expires = expires_at.astimezone(UTC)
    expires = expires.replace(microsecond=expires.microsecond // 1000 * 1000)
    return ChangeRequest(
        change_id=_check_id(change_id, "change_id"),
        proposer=_check_id(proposer, "proposer"),
        expires_at=expires,
        change=normalise(change),
    )


class ChangeState(StrEnum):
    #: Open for the admins' signatures.
    PROPOSED = "PROPOSED"
    #: In the governance log.
    APPLIED = "APPLIED"
    #: A pinned admin signed a rejection.
    REJECTED = "REJECTED"
    #: The request's expiry passed before the quorum was met.
    EXPIRED = "EXPIRED"


# --- the trust root ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AdminKey:
    """A pinned admin key. ``until_entry``: its signatures count only on entries up to that
    sequence (a retired admin, kept so the entries they signed still verify)."""

    admin_id: str
    scheme: SignatureScheme
    public_key: bytes
    until_entry: int | None = None

    @property
    def key_id(self) -> str:
        return key_id_for(self.public_key)

    def info(self) -> ApproverKeyInfo:
        return ApproverKeyInfo(self.key_id, self.scheme, self.public_key, datetime.min.replace(tzinfo=UTC))


@dataclass(frozen=True)
class TrustRoot:
    """The admins whose signatures govern the registry and the policy, pinned in configuration.

    ``quorum``: approvals needed from admins other than the proposer (at least one, so
    that no admin alone can change anything but a revocation).
    """

    admins: tuple[AdminKey, ...]
    quorum: int

    def fingerprint(self) -> str:
        """A short, stable name of this trust root, for people to compare between services."""
        body = canonical_json(
            {
                "format": TRUST_FORMAT,
                "quorum": self.quorum,
                "admins": [
                    {"id": a.admin_id, "scheme": a.scheme.value, "key": a.public_key, "until": a.until_entry}
                    for a in sorted(self.admins, key=lambda a: (a.admin_id, a.key_id))
                ],
            }
        )
        return "sha256:" + hashlib.sha256(body).hexdigest()[:32]

    def keys_of(self, admin_id: str, *, at_entry: int | None = None) -> list[AdminKey]:
        """The pinned keys of ``admin_id`` valid for an entry at sequence ``at_entry``."""
        return [
            a
            for a in self.admins
            if a.admin_id == admin_id
            and (at_entry is None or a.until_entry is None or at_entry <= a.until_entry)
        ]

    @property
    def admin_ids(self) -> frozenset[str]:
        return frozenset(a.admin_id for a in self.admins if a.until_entry is None)


def parse_trust_root(text: str, *, source: str = "trust root") -> TrustRoot:
    """Parses a trust file::

    format: custos.trust/v1
    quorum: 1                 # approvals besides the proposer's
    admins:
      - id: dave
        scheme: ED25519       # or ECDSA_P256
        public_key: MCowBQYDK2VwAyEA...   # base64 DER SubjectPublicKeyInfo
      - {id: old-admin, scheme: ED25519, public_key: ..., until_entry: 41}
    """
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise TrustRootInvalid(f"{source}: not YAML ({type(e).__name__})") from None
    if not isinstance(doc, dict) or doc.get("format") != TRUST_FORMAT:
        raise TrustRootInvalid(f"{source}: format must be {TRUST_FORMAT}")
    unknown = set(doc) - {"format", "quorum", "admins", "description"}
    if unknown:
        raise TrustRootInvalid(f"{source}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    quorum = doc.get("quorum")
    if not isinstance(quorum, int) or isinstance(quorum, bool) or quorum < 1:
        raise TrustRootInvalid(
            f"{source}: quorum must be an integer of at least 1 (approvals besides the proposer's)"
        )
    raw_admins = doc.get("admins")
    if not isinstance(raw_admins, list) or not raw_admins:
        raise TrustRootInvalid(f"{source}: admins must be a non-empty list")
    admins: list[AdminKey] = []
    for i, a in enumerate(raw_admins):
        where = f"{source}: admins[{i}]"
        if not isinstance(a, dict) or set(a) - {"id", "scheme", "public_key", "until_entry"}:
            raise TrustRootInvalid(f"{where} must have id, scheme, public_key (and optionally until_entry)")
        try:
            admin_id = _check_id(str(a.get("id", "")), "id")
            scheme = SignatureScheme(str(a.get("scheme")))
            der = normalise_public_key(scheme, base64.b64decode(str(a.get("public_key", "")), validate=True))
        except (ChangeInvalid, ApproverInvalid) as e:
            raise TrustRootInvalid(f"{where}: {e.message}") from None
        except ValueError:
            raise TrustRootInvalid(f"{where}: scheme must be ED25519 or ECDSA_P256, key base64 DER") from None
        until = a.get("until_entry")
        if until is not None and (not isinstance(until, int) or until < 0):
            raise TrustRootInvalid(f"{where}: until_entry must be a non-negative integer")
        admins.append(AdminKey(admin_id, scheme, der, until))
    if len({a.key_id for a in admins}) != len(admins):
        raise TrustRootInvalid(f"{source}: a key is pinned twice")
    current = {a.admin_id for a in admins if a.until_entry is None}
    if len(current) < quorum + 1:
        raise TrustRootInvalid(
            f"{source}: {len(current)} current admin(s) cannot meet a quorum of {quorum} besides the proposer"
        )
    return TrustRoot(tuple(admins), quorum)


def read_trust_file(path: Path) -> TrustRoot:
    """The trust root in the file at ``path`` (TrustRootInvalid when unreadable or malformed)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise TrustRootInvalid(f"cannot read the trust file {path}: {type(e).__name__}") from None
    return parse_trust_root(text, source=str(path))


def trust_root_yaml(admins: Sequence[AdminKey], quorum: int) -> str:
    """The trust file for ``admins`` (what the dev stack and operators write)."""
    return yaml.safe_dump(
        {
            "format": TRUST_FORMAT,
            "quorum": quorum,
            "admins": [
                {
                    "id": a.admin_id,
                    "scheme": a.scheme.value,
                    "public_key": base64.b64encode(a.public_key).decode(),
                    **({"until_entry": a.until_entry} if a.until_entry is not None else {}),
                }
                for a in admins
            ],
        },
        sort_keys=False,
    )


# --- judging the admins' signatures -----------------------------------------------------------


@dataclass(frozen=True)
class Judgement:
    """What the admins' signatures on a change request amount to."""

    #: The proposer signed and enough other admins approved.
    met: bool
    #: A pinned admin signed a rejection.
    rejected: bool
    #: Admins whose approvals count, the proposer first.
    signers: tuple[str, ...]
    #: Approvals still needed besides the proposer's (0 when met).
    missing: int
    #: Why each signature that does not count does not (admin id: reason).
    refused: tuple[str, ...] = ()


def required_approvals(change: Change, trust: TrustRoot) -> int:
    """Approvals needed from admins other than the proposer."""
    return 0 if isinstance(change, RevokeApproverKey) else trust.quorum


def _why_not(
    request: ChangeRequest,
    digest: bytes,
    a: Approval,
    trust: TrustRoot,
    *,
    now: datetime | None,
    at_entry: int | None,
) -> str | None:
    keys = [k for k in trust.keys_of(a.approver_id, at_entry=at_entry) if k.key_id == a.key_id]
    if not keys:
        return "not a pinned admin key"
    if a.policy_version != GOVERNANCE_VERSION or a.intent_digest != digest:
        return "signed for another change"
    if not verify_signature(keys[0].info(), a.message(), a.signature):
        return "invalid signature"
    if a.decision is Decision.APPROVE:
        if a.expires_at > request.expires_at:
            return "approval outlives the change request"
        if now is not None and a.expires_at <= now:
            return "approval expired"
    return None


def judge_change(
    request: ChangeRequest,
    approvals: Sequence[Approval],
    trust: TrustRoot,
    *,
    now: datetime | None,
    at_entry: int | None = None,
) -> Judgement:
    """Judges admins' signatures on ``request``.

    Args:
        now: The time of a live check (expired approvals do not count); None when
            replaying an entry already applied (its approvals were checked then).
        at_entry: The sequence the change is or would be applied at (retired admins).
    """
    digest = request.digest()
    approvers: list[str] = []
    refused: list[str] = []
    rejected = False
    for a in approvals:
        why = _why_not(request, digest, a, trust, now=now, at_entry=at_entry)
        if why is not None:
            refused.append(f"{a.approver_id}: {why}")
        elif a.decision is Decision.REJECT:
            rejected = True
        elif a.approver_id not in approvers:
            approvers.append(a.approver_id)
    proposer_signed = request.proposer in approvers
    others = [x for x in approvers if x != request.proposer]
    needed = required_approvals(request.change, trust)
    missing = max(0, needed - len(others)) + (0 if proposer_signed else 1)
    signers = ([request.proposer] if proposer_signed else []) + others
    return Judgement(
        met=missing == 0 and not rejected,
        rejected=rejected,
        signers=tuple(signers),
        missing=missing,
        refused=tuple(refused),
    )


# --- the log ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One applied change: the request, the approvals that made it, and its link to the previous entry."""

    seq: int
    prev_hash: bytes
    request: ChangeRequest
    approvals: tuple[Approval, ...]
    applied_at: datetime

    def to_plain(self) -> dict[str, Any]:
        return {
            "domain": ENTRY_DOMAIN,
            "seq": self.seq,
            "prev_hash": self.prev_hash,
            "request": self.request.to_plain(),
            "approvals": [approval_to_plain(a) for a in self.approvals],
            "applied_at": self.applied_at,
        }

    def canonical(self) -> bytes:
        return canonical_json(self.to_plain())

    def hash(self) -> bytes:
        return hashlib.sha256(self.canonical()).digest()


def approval_to_plain(a: Approval) -> dict[str, Any]:
    return {
        "approver_id": a.approver_id,
        "key_id": a.key_id,
        "decision": a.decision.value,
        "intent_digest": a.intent_digest,
        "policy_version": a.policy_version,
        "expires_at": a.expires_at,
        "signature": a.signature,
    }


def _time(text: Any) -> datetime:
    return datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def approval_from_plain(data: Mapping[str, Any]) -> Approval:
    return Approval(
        approver_id=str(data["approver_id"]),
        key_id=str(data["key_id"]),
        decision=Decision(data["decision"]),
        intent_digest=bytes.fromhex(str(data["intent_digest"])),
        policy_version=str(data["policy_version"]),
        expires_at=_time(data["expires_at"]),
        signature=bytes.fromhex(str(data["signature"])),
    )


def entry_from_plain(data: Mapping[str, Any]) -> Entry:
    """The entry stored as ``data`` (its canonical JSON, parsed); GovernanceInvalid when malformed."""
    try:
        if data["domain"] != ENTRY_DOMAIN:
            raise ValueError("domain")
        return Entry(
            seq=int(data["seq"]),
            prev_hash=bytes.fromhex(str(data["prev_hash"])),
            request=request_from_plain(data["request"]),
            approvals=tuple(approval_from_plain(a) for a in data["approvals"]),
            applied_at=_time(data["applied_at"]),
        )
    except (KeyError, ValueError, TypeError, ChangeInvalid) as e:
        raise GovernanceInvalid(f"a governance log entry is malformed ({type(e).__name__})") from None


@dataclass
class _Approver:
    display_name: str
    groups: frozenset[str]
    created_at: datetime
    keys: dict[str, ApproverKeyInfo] = field(default_factory=dict)


@dataclass(frozen=True)
class GovernedView:
    """What a verified governance log establishes, at its head."""

    head_seq: int
    head_hash: bytes
    #: The active policy version ("" before the first activation).
    active_policy: str
    approvers: Mapping[str, ApproverInfo]
    #: Group -> approver ids.
    directory: Mapping[str, frozenset[str]]

    def registry(self, now: datetime) -> dict[str, ApproverInfo]:
        """Approver id -> approver, as the evidence check reads it at ``now``.

        A revoked key voids its approvals at once, whatever time the log recorded for
        the revocation: it shows as revoked at ``now`` at the latest.
        """
        out = {}
        for approver_id, a in self.approvers.items():
            if any(k.revoked_at is not None and k.revoked_at > now for k in a.keys):
                keys = tuple(
                    k if k.revoked_at is None else replace(k, revoked_at=min(k.revoked_at, now))
                    for k in a.keys
                )
                a = replace(a, keys=keys)
            out[approver_id] = a
        return out


class GovernedState:
    """The registry and the active policy that the verified log establishes.

    Built empty (the genesis) and advanced one verified entry at a time with
    :meth:`apply`; readers take immutable views (:meth:`registry`, :meth:`directory`).
    Not thread-safe: its owner serialises ``apply``.
    """

    def __init__(self) -> None:
        self.head_seq = 0
        self.head_hash = GENESIS
        self.head_time: datetime | None = None
        self.active_policy = ""
        self._approvers: dict[str, _Approver] = {}
        self._key_owner: dict[str, str] = {}
        self._change_ids: set[str] = set()

    # --- reading -------------------------------------------------------------------------

    def view(self) -> GovernedView:
        """An immutable copy of what this state establishes (safe to share between threads)."""
        approvers = {
            approver_id: ApproverInfo(
                approver_id, a.display_name, a.groups, tuple(a.keys.values()), a.created_at
            )
            for approver_id, a in self._approvers.items()
        }
        directory: dict[str, set[str]] = {}
        for approver_id, a in self._approvers.items():
            for g in a.groups:
                directory.setdefault(g, set()).add(approver_id)
        return GovernedView(
            head_seq=self.head_seq,
            head_hash=self.head_hash,
            active_policy=self.active_policy,
            approvers=approvers,
            directory={g: frozenset(m) for g, m in directory.items()},
        )

    def has_change(self, change_id: str) -> bool:
        return change_id in self._change_ids

    # --- changing ------------------------------------------------------------------------

    def check(self, change: Change) -> None:
        """Raises ChangeInvalid unless ``change`` applies to this state."""
        if isinstance(change, RegisterApprover):
            if change.approver_id in self._approvers:
                raise ChangeInvalid(f"approver {change.approver_id!r} is already registered")
            self._check_new_key(change.scheme, change.public_key)
        elif isinstance(change, AddApproverKey):
            self._approver(change.approver_id)
            self._check_new_key(change.scheme, change.public_key)
        elif isinstance(change, SetApproverGroups):
            self._approver(change.approver_id)
        elif isinstance(change, RevokeApproverKey):
            key = self._approver(change.approver_id).keys.get(change.key_id)
            if key is None:
                raise ChangeInvalid(f"approver {change.approver_id!r} has no key {change.key_id!r}")
            if key.revoked_at is not None:
                raise ChangeInvalid(f"key {change.key_id!r} is already revoked")
        elif change.parent_version != self.active_policy:
            raise ChangeInvalid(
                f"version {change.version[:12]} was proposed against "
                f"{change.parent_version[:12] or 'no policy'}, but {self.active_policy[:12] or 'none'} "
                "is active: propose it again"
            )
        elif change.version == self.active_policy:
            raise ChangeInvalid(f"version {change.version[:12]} is already active")

    def _approver(self, approver_id: str) -> _Approver:
        found = self._approvers.get(approver_id)
        if found is None:
            raise ChangeInvalid(f"no approver {approver_id!r}")
        return found

    def _check_new_key(self, scheme: SignatureScheme, der: bytes) -> None:
        key_id = key_id_for(der)
        if key_id in self._key_owner:
            raise ChangeInvalid("this public key is already registered")

    def verify(self, entry: Entry, trust: TrustRoot) -> None:
        """Raises GovernanceInvalid unless ``entry`` is the valid next entry of this state."""
        if entry.seq != self.head_seq + 1 or entry.prev_hash != self.head_hash:
            raise GovernanceInvalid(
                f"governance entry {entry.seq} does not extend entry {self.head_seq}: the log was altered"
            )
        if entry.request.change_id in self._change_ids:
            raise GovernanceInvalid(
                f"governance entry {entry.seq} re-applies change {entry.request.change_id}"
            )
        if self.head_time is not None and entry.applied_at < self.head_time:
            raise GovernanceInvalid(f"governance entry {entry.seq} is dated before the entry it follows")
        if entry.applied_at > entry.request.expires_at:
            raise GovernanceInvalid(f"governance entry {entry.seq} was applied after its request expired")
        judged = judge_change(entry.request, entry.approvals, trust, now=None, at_entry=entry.seq)
        if not judged.met or judged.refused or len(judged.signers) != len(entry.approvals):
            raise GovernanceInvalid(
                f"governance entry {entry.seq} ({kind_of(entry.request.change)}) is not signed by the admin "
                "quorum of the trust root",
                details={"refused": list(judged.refused)[:8], "missing": judged.missing},
            )
        try:
            self.check(entry.request.change)
        except ChangeInvalid as e:
            raise GovernanceInvalid(f"governance entry {entry.seq} cannot apply: {e.message}") from None

    def apply(self, entry: Entry, trust: TrustRoot) -> None:
        """Verifies ``entry`` (:meth:`verify`) and applies it."""
        self.verify(entry, trust)
        change, at = entry.request.change, entry.applied_at
        if isinstance(change, RegisterApprover):
            self._approvers[change.approver_id] = _Approver(change.display_name, frozenset(change.groups), at)
            self._add_key(change.approver_id, change.scheme, change.public_key, at)
        elif isinstance(change, AddApproverKey):
            self._add_key(change.approver_id, change.scheme, change.public_key, at)
        elif isinstance(change, SetApproverGroups):
            self._approvers[change.approver_id].groups = frozenset(change.groups)
        elif isinstance(change, RevokeApproverKey):
            keys = self._approvers[change.approver_id].keys
            keys[change.key_id] = replace(keys[change.key_id], revoked_at=at)
        else:
            self.active_policy = change.version
        self._change_ids.add(entry.request.change_id)
        self.head_seq, self.head_hash, self.head_time = entry.seq, entry.hash(), at

    def _add_key(self, approver_id: str, scheme: SignatureScheme, der: bytes, at: datetime) -> None:
        key_id = key_id_for(der)
        self._approvers[approver_id].keys[key_id] = ApproverKeyInfo(key_id, scheme, der, at)
        self._key_owner[key_id] = approver_id

    def next_entry(
        self, request: ChangeRequest, approvals: Sequence[Approval], trust: TrustRoot, applied_at: datetime
    ) -> Entry:
        """The entry that would apply ``request`` now, carrying exactly the approvals that count.

        Raises GovernanceInvalid when they do not meet the quorum (or the change does not
        apply); the state itself is not changed.
        """
        seq, digest = self.head_seq + 1, request.digest()
        counted: dict[str, Approval] = {}
        for a in approvals:
            valid = _why_not(request, digest, a, trust, now=applied_at, at_entry=seq) is None
            if valid and a.decision is Decision.APPROVE:
                counted.setdefault(a.approver_id, a)
        at = applied_at if self.head_time is None else max(applied_at, self.head_time)
        entry = Entry(seq, self.head_hash, request, tuple(counted.values()), at)
        self.verify(entry, trust)
        return entry
