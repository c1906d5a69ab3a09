"""The evidence check accepts exactly the approval sets that meet the quorum."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from services.policy.domain import ApprovalGroup, ApproverInfo, ApproverKeyInfo, Requirement, key_id_for
from services.policy.evidence import PrivateKey, check_approvals, public_key_der, scheme_of, sign_approval
from services.runtime.intent import Approval, Decision, IntentBinding, intent_digest
from tests.policy.helpers import WED_10_UTC, stake

NOW = WED_10_UTC
VERSION = "ab" * 32
BINDING = IntentBinding("int-1", "alice", datetime(2026, 11, 29, 12, 0, tzinfo=UTC))
DIGEST = intent_digest(stake(), VERSION, BINDING)
OTHER_DIGEST = intent_digest(stake(33), VERSION, BINDING)
PEOPLE = ["o1", "o2", "o3", "r1", "init"]
KEYS: dict[str, PrivateKey] = {
    p: (ed25519.Ed25519PrivateKey.generate() if i % 2 == 0 else ec.generate_private_key(ec.SECP256R1()))
    for i, p in enumerate(PEOPLE)
}
REVOKED_KEY = ed25519.Ed25519PrivateKey.generate()  # o1's old key, revoked


def _registry() -> dict[str, ApproverInfo]:
    out = {}
    for p, k in KEYS.items():
        keys = [
            ApproverKeyInfo(
                key_id_for(public_key_der(k)), scheme_of(k), public_key_der(k), NOW - timedelta(days=9)
            )
        ]
        if p == "o1":
            keys.append(
                ApproverKeyInfo(
                    key_id_for(public_key_der(REVOKED_KEY)),
                    scheme_of(REVOKED_KEY),
                    public_key_der(REVOKED_KEY),
                    NOW - timedelta(days=9),
                    revoked_at=NOW - timedelta(hours=1),
                )
            )
        out[p] = ApproverInfo(p, p, frozenset(), tuple(keys), NOW - timedelta(days=9))
    return out


REGISTRY = _registry()
REQ = Requirement(
    (
        ApprovalGroup("ops", 2, frozenset({"o1", "o2", "o3", "init"})),
        ApprovalGroup("risk", 1, frozenset({"r1", "o3"})),
    ),
    3600,
    VERSION,
    "r",
)


def approve(
    who: str,
    *,
    decision: Decision = Decision.APPROVE,
    digest: bytes = DIGEST,
    version: str = VERSION,
    expires: timedelta = timedelta(hours=1),
    key: PrivateKey | None = None,
) -> Approval:
    return sign_approval(
        key or KEYS[who],
        approver_id=who,
        intent_digest=digest,
        policy_version=version,
        decision=decision,
        expires_at=NOW + expires,
    )


def forged(who: str) -> Approval:
    a = approve(who)
    return Approval(
        a.approver_id,
        a.key_id,
        a.decision,
        a.intent_digest,
        a.policy_version,
        a.expires_at,
        bytes(64) if len(a.signature) == 64 else a.signature[:-1] + bytes([a.signature[-1] ^ 1]),
    )


def check(
    approvals: list[Approval], initiator: str = "init"
) -> tuple[bool, bool, tuple[str, ...], list[str]]:
    r = check_approvals(
        intent_digest=DIGEST,
        approvals=approvals,
        requirement=REQ,
        registry=REGISTRY,
        initiator=initiator,
        now=NOW,
    )
    return r.met, r.rejected, r.missing, [v.reason for v in r.verdicts]


TABLE = [
    ("quorum met", [approve("o1"), approve("o2"), approve("r1")], True, False),
    ("o3 counts once: ops or risk, not both", [approve("o1"), approve("o3")], False, False),
    ("o3 fills risk when ops is full", [approve("o1"), approve("o2"), approve("o3")], True, False),
    ("duplicate approver", [approve("o1"), approve("o1"), approve("r1")], False, False),
    ("initiator never counts", [approve("o1"), approve("init"), approve("r1")], False, False),
    ("forged signature", [approve("o1"), forged("o2"), approve("r1")], False, False),
    ("other intent", [approve("o1"), approve("o2", digest=OTHER_DIGEST), approve("r1")], False, False),
    ("other version", [approve("o1"), approve("o2", version="cd" * 32), approve("r1")], False, False),
    ("expired", [approve("o1"), approve("o2", expires=timedelta(seconds=-1)), approve("r1")], False, False),
    ("revoked key", [approve("o1", key=REVOKED_KEY), approve("o2"), approve("r1")], False, False),
    (
        "any reject wins",
        [approve("o1"), approve("o2"), approve("r1"), approve("o3", decision=Decision.REJECT)],
        False,
        True,
    ),
    (
        "expired reject still rejects",
        [
            approve("o1"),
            approve("o2"),
            approve("r1"),
            approve("o3", decision=Decision.REJECT, expires=-timedelta(1)),
        ],
        False,
        True,
    ),
    (
        "reject by the initiator is not authorised",
        [approve("o1"), approve("o2"), approve("r1"), approve("init", decision=Decision.REJECT)],
        True,
        False,
    ),
    (
        "forged reject does nothing",
        [
            approve("o1"),
            approve("o2"),
            approve("r1"),
            Approval(
                "o3",
                approve("o3").key_id,
                Decision.REJECT,
                DIGEST,
                VERSION,
                NOW + timedelta(hours=1),
                b"x" * 64,
            ),
        ],
        True,
        False,
    ),
    ("no approvals", [], False, False),
]


@pytest.mark.parametrize(("case", "approvals", "met", "rejected"), TABLE, ids=[t[0] for t in TABLE])
def test_evidence_table(case: str, approvals: list[Approval], met: bool, rejected: bool) -> None:
    got_met, got_rejected, missing, reasons = check(approvals)
    assert (got_met, got_rejected) == (met, rejected), reasons
    assert len(reasons) == len(approvals)
    assert bool(missing) is (not met and not rejected)


def test_verdicts_explain_each_approval() -> None:
    _, _, _, reasons = check(
        [approve("o1"), approve("o1"), approve("init"), forged("o2"), approve("o1", key=REVOKED_KEY)]
    )
    assert reasons == [
        "counted",
        "duplicate approver",
        "the initiator cannot approve their own intent",
        "invalid signature",
        "key revoked",
    ]


def test_unknown_approver_and_wrong_key() -> None:
    stranger = ed25519.Ed25519PrivateKey.generate()
    _, _, _, reasons = check([approve("zz", key=stranger), approve("o2", key=KEYS["o1"])])
    assert reasons == ["unknown approver", "key is not registered to this approver"]


# --- property: exactly the sets that meet the quorum -----------------------------------------

KINDS = ("good", "forged", "duplicate", "expired", "revoked", "other-intent", "initiator")


def _make(kind: str, who: str) -> list[Approval]:
    if kind == "good":
        return [approve(who)]
    if kind == "forged":
        return [forged(who)]
    if kind == "duplicate":
        return [approve(who), approve(who)]
    if kind == "expired":
        return [approve(who, expires=-timedelta(seconds=1))]
    if kind == "revoked":
        return [approve("o1", key=REVOKED_KEY)]
    if kind == "other-intent":
        return [approve(who, digest=OTHER_DIGEST)]
    return [approve("init")]


def _meets(valid: set[str]) -> bool:
    """Reference: brute force over assignments of distinct approvers to group slots."""
    slots = [g for g in REQ.groups for _ in range(g.threshold)]
    return any(
        all(p in g.members for p, g in zip(perm, slots, strict=True))
        for perm in itertools.permutations(sorted(valid), len(slots))
    )


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(KINDS), st.sampled_from(["o1", "o2", "o3", "r1"])), max_size=7),
    st.randoms(),
)
def test_accepts_exactly_the_sets_that_meet_the_quorum(items: list[tuple[str, str]], rnd: object) -> None:
    approvals: list[Approval] = []
    valid: set[str] = set()
    for kind, who in items:
        approvals.extend(_make(kind, who))
        if kind in ("good", "duplicate"):
            valid.add(who)
    rnd.shuffle(approvals)  # type: ignore[attr-defined]
    met, rejected, _, _ = check(approvals)
    assert not rejected
    assert met is _meets(valid)


def test_the_digest_names_one_intent() -> None:
    """Two intents with the same spec, by the same initiator, get different digests: an approval of
    one cannot count for the other (the review spent one intent's approvals on made-up intent ids)."""
    twin = IntentBinding("int-2", BINDING.initiator, BINDING.submitted_at)
    later = IntentBinding(BINDING.intent_id, BINDING.initiator, BINDING.submitted_at + timedelta(seconds=1))
    other_initiator = IntentBinding(BINDING.intent_id, "bob", BINDING.submitted_at)
    digests = {intent_digest(stake(), VERSION, b) for b in (BINDING, twin, later, other_initiator)}
    assert len(digests) == 4
    approvals = [approve("o1"), approve("o2"), approve("r1")]
    r = check_approvals(
        intent_digest=intent_digest(stake(), VERSION, twin),
        approvals=approvals,
        requirement=REQ,
        registry=REGISTRY,
        initiator="init",
        now=NOW,
    )
    assert not r.met and {v.reason for v in r.verdicts} == {"signed for another intent"}


def test_an_approval_cannot_outlive_the_intents_window() -> None:
    """An approver-chosen expiry ten years away does not count (the window ends at the deadline)."""
    deadline = NOW + timedelta(hours=24)
    long = [approve("o1"), approve("o2", expires=timedelta(days=3650)), approve("r1")]
    r = check_approvals(
        intent_digest=DIGEST,
        approvals=long,
        requirement=REQ,
        registry=REGISTRY,
        initiator="init",
        now=NOW,
        deadline=deadline,
    )
    assert not r.met and "approval expires after the intent's approval window" in [
        v.reason for v in r.verdicts
    ]
    within = [approve("o1"), approve("o2", expires=timedelta(hours=24)), approve("r1")]
    assert check_approvals(
        intent_digest=DIGEST,
        approvals=within,
        requirement=REQ,
        registry=REGISTRY,
        initiator="init",
        now=NOW,
        deadline=deadline,
    ).met
