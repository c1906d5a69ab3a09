"""Sign: every check on, the real HSM, the real database (SQLite and PostgreSQL), the real audit trail."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import replace
from datetime import timedelta

import pytest
from eth_account import Account
from eth_utils import keccak
from sqlalchemy import func, select

from services.families import secp256k1
from services.families.ethereum import contracts
from services.runtime.intent import Decision
from services.signer.errors import (
    ApprovalsInsufficient,
    AuditUnavailable,
    ConflictingSignature,
    FeeAboveCap,
    KeyNotFound,
    NonceReused,
    PolicyNotActive,
    TransactionMismatch,
)
from services.signer.models import SigningRecord
from tests.signer.conftest import CHAIN, SignerRig, make_registry, policy_document

VALIDATOR = bytes.fromhex("a1" * 48)
OTHER_VALIDATOR = bytes.fromhex("b2" * 48)


def _records(rig: SignerRig) -> int:
    with rig.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(SigningRecord)) or 0)


def test_sign_returns_a_signed_transaction_from_the_vault(rig: SignerRig) -> None:
    spec = rig.unstake_spec(VALIDATOR)
    tx = rig.unstake_tx(VALIDATOR)
    out = rig.service.sign_blocking(rig.request(spec, tx), "svc-worker")
    assert len(out.signature) == 64  # the HSM's r || s, low-S
    assert secp256k1.verify(keccak(tx), out.signature, rig.vault.public_key)
    assert Account.recover_transaction(out.signed_tx) == rig.vault_address
    assert not out.replayed and not out.replacement
    signed = rig.audit_rows("signed")
    assert len(signed) == 1 and out.signing_record_id in signed[0].payload_json


def test_same_request_again_returns_the_same_signature(rig: SignerRig) -> None:
    spec, tx = rig.unstake_spec(VALIDATOR), rig.unstake_tx(VALIDATOR)
    first = rig.service.sign_blocking(rig.request(spec, tx), "w")
    again = rig.service.sign_blocking(rig.request(spec, tx), "w")
    assert again.signature == first.signature and again.replayed
    assert again.signing_record_id == first.signing_record_id
    assert _records(rig) == 1


@pytest.mark.parametrize("rig", [0, 1, 4], indirect=True, ids=["on-loop", "1-thread", "4-threads"])
def test_64_concurrent_identical_sign_calls_make_one_signature(rig: SignerRig) -> None:
    spec, tx = rig.unstake_spec(VALIDATOR), rig.unstake_tx(VALIDATOR)
    request = rig.request(spec, tx)

    async def burst() -> list[bytes]:
        outs = await asyncio.gather(*(rig.service.sign(request, actor="w") for _ in range(64)))
        assert sum(not o.replayed for o in outs) == 1
        return [o.signature for o in outs]

    signatures = asyncio.run(burst())
    assert len(set(signatures)) == 1
    assert _records(rig) == 1
    assert len(rig.audit_rows("signed")) == 1


# --- refusals: each one typed, audited, and nothing signed ---------------------------------


def _refused(rig: SignerRig, request: object, error: type[Exception]) -> Exception:
    before = len(rig.audit_rows("refused"))
    with pytest.raises(error) as caught:
        rig.service.sign_blocking(request, "w")  # type: ignore[arg-type]
    assert len(rig.audit_rows("refused")) == before + 1
    assert rig.audit_rows("refused")[-1].payload_json.count(error.__name__) == 1
    return caught.value


def test_refuses_without_approvals(rig: SignerRig) -> None:
    spec = rig.unstake_spec(VALIDATOR)
    e = _refused(rig, rig.request(spec, rig.unstake_tx(VALIDATOR), ()), ApprovalsInsufficient)
    assert "no approvals" in str(e)
    assert _records(rig) == 0


def test_refuses_too_few_approvals(rig: SignerRig) -> None:
    spec = rig.unstake_spec(VALIDATOR)
    _refused(
        rig,
        rig.request(spec, rig.unstake_tx(VALIDATOR), (rig.approvers.approve("alice", spec),)),
        ApprovalsInsufficient,
    )


def test_refuses_a_forged_signature(rig: SignerRig) -> None:
    spec = rig.unstake_spec(VALIDATOR)
    good = rig.approvers.approve("bob", spec)
    forged = replace(good, signature=bytes([good.signature[0] ^ 1]) + good.signature[1:])
    e = _refused(
        rig,
        rig.request(spec, rig.unstake_tx(VALIDATOR), (rig.approvers.approve("alice", spec), forged)),
        ApprovalsInsufficient,
    )
    assert "invalid signature" in str(e.details["not_counted"])  # type: ignore[attr-defined]


def test_refuses_an_approval_for_another_intent(rig: SignerRig) -> None:
    spec = rig.unstake_spec(VALIDATOR)
    other = rig.unstake_spec(OTHER_VALIDATOR)
    approvals = (rig.approvers.approve("alice", spec), rig.approvers.approve("bob", other))
    e = _refused(rig, rig.request(spec, rig.unstake_tx(VALIDATOR), approvals), ApprovalsInsufficient)
    assert "another intent" in str(e.details["not_counted"])  # type: ignore[attr-defined]


def test_refuses_an_expired_approval(rig: SignerRig) -> None:
    spec = rig.unstake_spec(VALIDATOR)
    approvals = (
        rig.approvers.approve("alice", spec),
        rig.approvers.approve("bob", spec, expires=timedelta(seconds=-1)),
    )
    _refused(rig, rig.request(spec, rig.unstake_tx(VALIDATOR), approvals), ApprovalsInsufficient)


def test_refuses_a_revoked_approver_key(rig: SignerRig) -> None:
    spec = rig.unstake_spec(VALIDATOR)
    rig.policy.registry = make_registry(rig.approvers, revoked=frozenset({"bob"}))
    e = _refused(rig, rig.request(spec, rig.unstake_tx(VALIDATOR)), ApprovalsInsufficient)
    assert "revoked" in str(e.details["not_counted"])  # type: ignore[attr-defined]


def test_refuses_the_initiators_own_approval(rig: SignerRig) -> None:
    spec = rig.unstake_spec(VALIDATOR)
    approvals = (rig.approvers.approve("alice", spec), rig.approvers.approve("ivan", spec))
    e = _refused(rig, rig.request(spec, rig.unstake_tx(VALIDATOR), approvals), ApprovalsInsufficient)
    assert "initiator" in str(e.details["not_counted"])  # type: ignore[attr-defined]


def test_refuses_when_an_approver_rejected(rig: SignerRig) -> None:
    spec = rig.unstake_spec(VALIDATOR)
    approvals = (
        rig.approvers.approve("alice", spec),
        rig.approvers.approve("bob", spec),
        rig.approvers.approve("carol", spec, decision=Decision.REJECT),
    )
    _refused(rig, rig.request(spec, rig.unstake_tx(VALIDATOR), approvals), ApprovalsInsufficient)


def test_refuses_approvals_under_a_version_that_is_not_the_active_one(rig: SignerRig) -> None:
    """Approvals under a version only proposed (or superseded) never count, however valid."""
    spec = rig.unstake_spec(VALIDATOR)
    proposed = policy_document(fee_cap=10**17).version
    approvals = tuple(rig.approvers.approve(w, spec, version=proposed) for w in ("alice", "bob"))
    request = replace(rig.request(spec, rig.unstake_tx(VALIDATOR), approvals), policy_version=proposed)
    e = _refused(rig, request, PolicyNotActive)
    assert proposed[:16] in str(e) and _records(rig) == 0


def test_refuses_a_transaction_to_another_contract(rig: SignerRig) -> None:
    spec = rig.unstake_spec(VALIDATOR)
    tx = rig.unstake_tx(VALIDATOR, to=contracts.CONSOLIDATION_REQUEST_CONTRACT)
    _refused(rig, rig.request(spec, tx), TransactionMismatch)


def test_refuses_a_transaction_with_another_amount(rig: SignerRig) -> None:
    spec = rig.unstake_spec(VALIDATOR, amount_gwei=32 * 10**9)
    e = _refused(
        rig, rig.request(spec, rig.unstake_tx(VALIDATOR, amount_gwei=31 * 10**9)), TransactionMismatch
    )
    assert "amount" in str(e)


def test_refuses_a_transaction_for_another_validator(rig: SignerRig) -> None:
    spec = rig.unstake_spec(VALIDATOR)
    e = _refused(rig, rig.request(spec, rig.unstake_tx(OTHER_VALIDATOR)), TransactionMismatch)
    assert "validator" in str(e)


def test_refuses_a_transaction_for_another_chain_id(rig: SignerRig) -> None:
    spec = rig.unstake_spec(VALIDATOR)
    _refused(rig, rig.request(spec, rig.unstake_tx(VALIDATOR, chain_id=1)), TransactionMismatch)


def test_refuses_fees_above_the_policy_cap(rig: SignerRig) -> None:
    spec = rig.unstake_spec(VALIDATOR)
    tx = rig.unstake_tx(VALIDATOR, max_fee=400 * 10**9)  # 400 gwei * 200k gas = 0.08 ETH
    rig.policy.policy = policy_document(fee_cap=10**16)
    approvals = tuple(
        rig.approvers.approve(w, spec, version=rig.policy.policy.version) for w in ("alice", "bob")
    )
    request = replace(rig.request(spec, tx, approvals), policy_version=rig.policy.policy.version)
    _refused(rig, request, FeeAboveCap)


def test_refuses_an_unknown_vault(rig: SignerRig) -> None:
    spec = replace(rig.unstake_spec(VALIDATOR), vault_id="no-such-vault")
    _refused(rig, rig.request(spec, rig.unstake_tx(VALIDATOR)), KeyNotFound)


def test_refuses_a_second_payload_for_the_same_step(rig: SignerRig) -> None:
    spec = rig.unstake_spec(VALIDATOR)
    first = rig.service.sign_blocking(rig.request(spec, rig.unstake_tx(VALIDATOR, nonce=0)), "w")
    _refused(rig, rig.request(spec, rig.unstake_tx(VALIDATOR, nonce=1)), ConflictingSignature)
    # A fee bump that changes anything else (here the gas tip only) is no replacement either.
    _refused(rig, rig.request(spec, rig.unstake_tx(VALIDATOR, nonce=0, tip=2 * 10**9)), ConflictingSignature)
    assert _records(rig) == 1
    assert (
        rig.service.sign_blocking(rig.request(spec, rig.unstake_tx(VALIDATOR)), "w").signature
        == first.signature
    )


def test_refuses_a_reused_nonce(rig: SignerRig) -> None:
    spec = rig.unstake_spec(VALIDATOR)
    rig.service.sign_blocking(rig.request(spec, rig.unstake_tx(VALIDATOR, nonce=5)), "w")
    other = rig.unstake_spec(OTHER_VALIDATOR)
    _refused(
        rig, rig.request(other, rig.unstake_tx(OTHER_VALIDATOR, nonce=5), intent_id="intent-2"), NonceReused
    )
    assert _records(rig) == 1


def test_fee_bump_is_a_recorded_replacement(rig: SignerRig) -> None:
    spec = rig.unstake_spec(VALIDATOR)
    first = rig.service.sign_blocking(rig.request(spec, rig.unstake_tx(VALIDATOR, nonce=3)), "w")
    bumped_tx = rig.unstake_tx(VALIDATOR, nonce=3, max_fee=3 * 10**9, tip=2 * 10**9)
    bumped = rig.service.sign_blocking(rig.request(spec, bumped_tx), "w")
    assert bumped.replacement and not bumped.replayed and bumped.signature != first.signature
    with rig.sessions() as s:
        record = s.get(SigningRecord, bumped.signing_record_id)
        assert record is not None and record.replaces_id == first.signing_record_id and record.attempt == 1
    assert len(rig.audit_rows("replaced")) == 1
    # The original payload is now the superseded one: asking for it again is a conflict.
    _refused(rig, rig.request(spec, rig.unstake_tx(VALIDATOR, nonce=3)), ConflictingSignature)


def test_no_signature_without_its_audit_entry(rig: SignerRig) -> None:
    spec = rig.unstake_spec(VALIDATOR)
    rig.audit.fail = True
    with pytest.raises(AuditUnavailable):
        rig.service.sign_blocking(rig.request(spec, rig.unstake_tx(VALIDATOR)), "w")
    assert _records(rig) == 0
    rig.audit.fail = False
    out = rig.service.sign_blocking(rig.request(spec, rig.unstake_tx(VALIDATOR)), "w")
    assert not out.replayed


def test_unique_constraints_hold_without_the_service(rig: SignerRig) -> None:
    """The database itself refuses a second original signature for a step or a nonce."""
    from sqlalchemy.exc import IntegrityError

    base = dict(
        key_id=rig.vault.key_id,
        chain=CHAIN,
        intent_digest=b"\0" * 32,
        payload_digest=b"\1" * 32,
        signing_digest=b"\2" * 32,
        signature=b"s",
        signed_tx=b"t",
        tx_hash="0x",
        replacement=False,
        prev_hash=bytes(32),
        record_hash=bytes(32),
    )
    with rig.sessions() as s, s.begin():
        s.add(SigningRecord(record_id="a", intent_id="i", step="x", attempt=0, nonce=1, ledger_seq=1, **base))
    for seq, clash in enumerate(
        (dict(intent_id="i", step="x", nonce=2), dict(intent_id="j", step="x", nonce=1)), 2
    ):
        with pytest.raises(IntegrityError), rig.sessions() as s, s.begin():
            s.add(SigningRecord(record_id=secrets.token_hex(4), attempt=0, ledger_seq=seq, **clash, **base))
    with (
        pytest.raises(IntegrityError),
        rig.sessions() as s,
        s.begin(),
    ):  # a replacement must name its original
        s.add(SigningRecord(record_id="c", intent_id="i", step="x", attempt=1, nonce=1, ledger_seq=9, **base))
