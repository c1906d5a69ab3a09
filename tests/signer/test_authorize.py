"""Sign decides on its own: the active policy evaluated now, its own velocity ledger, the approval
window, every value bounded. Each test plays a way the security review got a signature, and checks
that no signature, no signing record, and one typed, audited refusal come out of it."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import delete, func, select, text, update

from services.signer.errors import (
    ApprovalsInsufficient,
    BadSignRequest,
    KeyBindingInvalid,
    PolicyRefuses,
    TransactionMismatch,
    VelocityExceeded,
)
from services.signer.models import SignerKey, SigningRecord
from services.signer.types import KeyAlgorithm, KeyPurpose
from tests.fixtures.database import sql
from tests.signer.conftest import SUBMITTED, SignerRig, policy_document

VALIDATOR = bytes.fromhex("a1" * 48)
ETH = 10**18
GWEI = 10**9


def _records(rig: SignerRig) -> int:
    with rig.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(SigningRecord)) or 0)


def _use(rig: SignerRig, policy_text_limits: str) -> None:
    """Makes the admin quorum's active policy one with these limits (approvals then name it)."""
    rig.policy.policy = policy_document(extra_limits=policy_text_limits)


def _request(rig: SignerRig, amount_gwei: int, intent_id: str, nonce: int) -> object:
    spec = rig.unstake_spec(VALIDATOR, amount_gwei)
    version = rig.policy.policy.version
    approvals = tuple(
        rig.approvers.approve(w, spec, intent_id=intent_id, version=version) for w in ("alice", "bob")
    )
    request = rig.request(
        spec, rig.unstake_tx(VALIDATOR, amount_gwei, nonce=nonce), approvals, intent_id=intent_id
    )
    return replace(request, policy_version=version)


def test_the_signer_enforces_the_policys_limits_itself(rig: SignerRig) -> None:
    """An intent the active policy denies (an amount cap) gets no signature, whatever approvals it has."""
    _use(rig, 'limits: {amount: {max: "1000000000000000000"}}')
    with pytest.raises(PolicyRefuses, match="above the cap"):
        rig.service.sign_blocking(_request(rig, 32 * GWEI, "big", 0), "w")  # type: ignore[arg-type]
    assert _records(rig) == 0
    refusal = rig.audit_rows("refused")[-1]
    assert "PolicyRefuses" in refusal.payload_json


def test_velocity_counts_what_the_signer_signed_not_a_ledger_others_write(rig: SignerRig) -> None:
    """Approvals of an intent the velocity limit DENIED, spent straight at the signer: refused."""
    _use(rig, 'limits: {velocity: {window: 24h, max: "50000000000000000000"}}')  # 50 ETH a day
    rig.service.sign_blocking(_request(rig, 32 * GWEI, "first", 0), "w")  # type: ignore[arg-type]
    with pytest.raises(PolicyRefuses, match="velocity"):
        rig.service.sign_blocking(_request(rig, 32 * GWEI, "second", 1), "w")  # type: ignore[arg-type]
    assert _records(rig) == 1
    # the policy service's velocity ledger is not what the signer counts: resetting it changes nothing
    with rig.sessions.begin() as s:
        s.execute(text(sql(s, "DELETE FROM {policy_velocity}")))
    with pytest.raises(PolicyRefuses, match="velocity"):
        rig.service.sign_blocking(_request(rig, 32 * GWEI, "third", 2), "w")  # type: ignore[arg-type]


@pytest.mark.parametrize("rig", [4], indirect=True, ids=["4-threads"])
def test_racing_signs_cannot_both_take_the_last_room(rig: SignerRig) -> None:
    """Eight intents of 32 ETH at once under a 50 ETH window: exactly one is signed."""
    _use(rig, 'limits: {velocity: {window: 24h, max: "50000000000000000000"}}')
    requests = [_request(rig, 32 * GWEI, f"race-{i}", i) for i in range(8)]

    async def burst() -> list[object]:
        return await asyncio.gather(
            *(rig.service.sign(r, actor="w") for r in requests),  # type: ignore[arg-type]
            return_exceptions=True,
        )

    outcomes = asyncio.run(burst())
    signed = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(signed) == 1, outcomes
    assert all(
        isinstance(o, (PolicyRefuses, VelocityExceeded)) for o in outcomes if isinstance(o, BaseException)
    )
    assert _records(rig) == 1


def test_an_approval_claiming_to_count_beyond_the_window_is_refused(rig: SignerRig) -> None:
    spec = rig.unstake_spec(VALIDATOR)
    approvals = (
        rig.approvers.approve("alice", spec),
        rig.approvers.approve("bob", spec, expires=timedelta(days=3650)),  # ten years
    )
    with pytest.raises(ApprovalsInsufficient) as caught:
        rig.service.sign_blocking(rig.request(spec, rig.unstake_tx(VALIDATOR), approvals), "w")
    assert "approval window" in str(caught.value.details["not_counted"])
    assert _records(rig) == 0


def test_a_submission_time_in_the_future_is_refused(rig: SignerRig) -> None:
    spec = rig.unstake_spec(VALIDATOR)
    future = SUBMITTED + timedelta(days=1)
    approvals = tuple(rig.approvers.approve(w, spec, submitted_at=future) for w in ("alice", "bob"))
    request = replace(rig.request(spec, rig.unstake_tx(VALIDATOR), approvals), submitted_at=future)
    with pytest.raises(BadSignRequest, match="future"):
        rig.service.sign_blocking(request, "w")
    assert _records(rig) == 0


def test_an_exit_sends_no_more_than_the_request_fee_cap(rig: SignerRig) -> None:
    """An UNSTAKE with 100 ETH as its value: nobody approved sending that to the system contract."""
    spec = rig.unstake_spec(VALIDATOR)
    with pytest.raises(TransactionMismatch, match="request fee"):
        rig.service.sign_blocking(rig.request(spec, rig.unstake_tx(VALIDATOR, value=100 * ETH)), "w")
    assert _records(rig) == 0


def test_the_signing_audit_entry_names_the_approvals_it_accepted(rig: SignerRig) -> None:
    spec = rig.unstake_spec(VALIDATOR)
    rig.service.sign_blocking(rig.request(spec, rig.unstake_tx(VALIDATOR)), "w")
    payload = json.loads(rig.audit_rows("signed")[-1].payload_json)
    assert [a["approver_id"] for a in payload["approvals"]] == ["alice", "bob"]
    assert all(a["key_id"] and a["signature_ref"] for a in payload["approvals"])
    assert payload["policy_version"] == rig.policy.policy.version and payload["rule_id"] == "r1"


def test_a_vault_row_pointed_at_another_vaults_hsm_key_signs_nothing(rig: SignerRig) -> None:
    """Whoever can write the database repoints vault B's row at vault A's key: the token says no."""
    other = rig.service.create_key_blocking("op", "vault-b", KeyAlgorithm.SECP256K1, KeyPurpose.VAULT)
    with rig.sessions.begin() as s:
        s.execute(delete(SignerKey).where(SignerKey.key_id == other.key_id))
        s.execute(update(SignerKey).where(SignerKey.key_id == rig.vault.key_id).values(vault_id="vault-b"))
    spec = replace(rig.unstake_spec(VALIDATOR), vault_id="vault-b")
    with pytest.raises(KeyBindingInvalid):
        rig.service.sign_blocking(rig.request(spec, rig.unstake_tx(VALIDATOR)), "w")
    assert _records(rig) == 0


def test_one_approval_set_cannot_be_spent_on_a_second_step_name(rig: SignerRig) -> None:
    """The worker signs the approved exit once, then asks again under a step name of its own at the
    next nonce: that would be a second exit request for one approval. Only the action's steps sign."""
    spec = rig.unstake_spec(VALIDATOR)
    rig.service.sign_blocking(rig.request(spec, rig.unstake_tx(VALIDATOR, nonce=0)), "w")
    with pytest.raises(BadSignRequest, match="is not a step of a UNSTAKE"):
        rig.service.sign_blocking(
            rig.request(spec, rig.unstake_tx(VALIDATOR, nonce=1), step="unstake-again"), "w"
        )
    assert _records(rig) == 1


def test_the_ledger_counts_a_vault_per_chain_wei_and_uatom_never_summed() -> None:
    """One vault signed on an Ethereum and a Cosmos chain: each chain's velocity sees its own amounts."""
    from types import SimpleNamespace

    from services.signer.ledger import Ledger

    def record(seq: int, chain: str, amount: int) -> SigningRecord:
        return SigningRecord(
            ledger_seq=seq,
            record_id=f"sig_{seq}",
            intent_id=f"intent-{seq}",
            step="stake",
            attempt=0,
            key_id="k",
            chain=chain,
            nonce=seq,
            payload_digest=bytes([seq]) * 32,
            signing_digest=bytes([seq]) * 32,
            record_hash=bytes([seq]) * 32,
            vault_id="vault-1",
            action="STAKE",
            amount=str(amount),
            created_at=SUBMITTED,
            replaces_id=None,
        )

    ledger = Ledger()
    ledger.committed(
        {"ledger_pending": [record(1, "ethereum-devnet", 32 * ETH), record(2, "cosmoshub", 900_000)]}
    )
    since = SUBMITTED - timedelta(days=1)
    assert [a.amount for a in ledger.signed_amounts("vault-1", "ethereum-devnet", since)] == [32 * ETH]
    assert [a.amount for a in ledger.signed_amounts("vault-1", "cosmoshub", since)] == [900_000]
    batch = SimpleNamespace(info={"ledger_pending": [record(3, "cosmoshub", 50_000)]})
    assert ledger.pending_amounts(batch, "vault-1", "ethereum-devnet") == []  # type: ignore[arg-type]
    assert [a.amount for a in ledger.pending_amounts(batch, "vault-1", "cosmoshub")] == [50_000]  # type: ignore[arg-type]
