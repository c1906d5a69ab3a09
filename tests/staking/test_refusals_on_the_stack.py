"""Failures that must not hold a vault back, and a revoked key refused at the door, on the real parts.

Everything runs in this process (tests/telemetry/stack.py): a Temporal dev server, SoftHSM, anvil,
the policy, signer, chain and staking services over mTLS, and the worker.

* A STAKE from a vault that does not hold its value is refused at submission. One whose vault is
  drained after submission fails at gas estimation; once the vault is funded, the next STAKE
  confirms at once (its build used to reserve nonce 1 behind the failed build's nonce 0, and wait
  there until a later build took nonce 0 over, 10 minutes on).
* A STAKE the signer refuses (an approval's key revoked after it was given) fails; the vault's next
  STAKE takes its nonce and confirms at once.
* An approval signed with a key revoked after the intent was submitted is refused by ApproveIntent
  (FAILED_PRECONDITION, audited as ``approve.refused``) instead of counting in the workflow, whose
  registry is the one pinned at submission, and the intent goes on to confirm.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import select
from temporalio.testing import WorkflowEnvironment

from services.audit.models import AuditRecordRow
from services.chain.devnet import Devnet
from services.families.config import HOODI_GENESIS_FORK_VERSION
from services.families.ethereum.deposit import generate_deposit_data, stake_target
from services.pb.custos.signer.v1 import signer_pb2
from services.pb.custos.staking.v1 import staking_pb2
from services.policy.domain import SignatureScheme
from services.policy.evidence import key_id_for, public_key_der, sign_approval
from services.policy.governance import AddApproverKey, RevokeApproverKey
from services.runtime.convert import approval_to_pb
from services.runtime.db import make_engine, make_session_factory
from services.runtime.errors import FailedPrecondition
from services.runtime.intent import Action, Decision, IntentSpec
from services.runtime.migrate import upgrade
from services.signer.client import SignerClient
from services.signer.softhsm import TokenConfig
from services.staking.client import StakingClient
from tests.telemetry.stack import CHAIN, ETH, InProcessStack, in_process_stack

ENDINGS = {"CONFIRMED", "FAILED", "EXPIRED", "DENIED", "REJECTED", "CANCELLED"}
#: Promptly: a transaction waiting behind a nonce gap stays in BROADCAST far longer than this.
PROMPT = 30.0


@pytest.fixture
async def stack(
    dev_server_env: WorkflowEnvironment,
    softhsm_token: TokenConfig,
    devnet: Devnet,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[InProcessStack]:
    monkeypatch.delenv("CUSTOS_CONFIG", raising=False)  # set by the dev-stack tests of this process
    url = f"sqlite:///{tmp_path / 'custos.db'}"
    upgrade(url)
    async with in_process_stack(
        tmp_path,
        database_url=url,
        temporal_address=dev_server_env.client.service_client.config.target_host,
        token=softhsm_token,
        devnet=devnet,
    ) as s:
        await s.setup()
        yield s


# --- the registry, as the admins change it (governed changes: dave proposes, erin approves) --------


async def add_key(stack: InProcessStack, approver: str) -> ed25519.Ed25519PrivateKey:
    """A second key for ``approver``, registered now."""
    key = ed25519.Ed25519PrivateKey.generate()
    await stack.govern(AddApproverKey(approver, SignatureScheme.ED25519, public_key_der(key)))
    return key


async def revoke(stack: InProcessStack, approver: str, key: ed25519.Ed25519PrivateKey) -> None:
    """A revocation: one admin's signature, applied at once."""
    await stack.govern(RevokeApproverKey(approver, key_id_for(public_key_der(key)), "key lost"))


# --- intents ----------------------------------------------------------------------------------------


async def approve(
    stack: InProcessStack, intent: Any, who: str, key: ed25519.Ed25519PrivateKey | None = None
) -> Any:
    """``who`` approves with ``key`` (their first key by default)."""
    approval = sign_approval(
        key or stack.keys[who],
        approver_id=who,
        intent_digest=intent.digest,
        policy_version=intent.policy_version,
        decision=Decision.APPROVE,
        expires_at=datetime.now(UTC) + timedelta(hours=1),
    )
    async with stack.client(StakingClient, who) as staking:
        return await staking.call(
            "ApproveIntent",
            staking_pb2.ApproveIntentRequest(intent_id=intent.intent_id, approval=approval_to_pb(approval)),
        )


async def stake(stack: InProcessStack, spec: IntentSpec | None = None) -> tuple[Any, str]:
    """Submits a 32 ETH STAKE, approves it 2 of 2, and waits for its ending: (intent, state)."""
    intent = await stack.submit(spec or stack.stake_spec())
    intent = (await stack.wait_for(intent.intent_id, {"AWAITING_APPROVALS"})).intent
    for who in ("olivia", "oscar"):
        await approve(stack, intent, who)
    final = (await stack.wait_for(intent.intent_id, ENDINGS, timeout=PROMPT)).intent
    return final, staking_pb2.IntentState.Name(final.state).removeprefix("INTENT_STATE_")


async def unfunded_vault(stack: InProcessStack, vault_id: str) -> str:
    async with stack.client(SignerClient, "ops") as signer:
        key = await signer.call(
            "CreateKey",
            signer_pb2.CreateKeyRequest(
                vault_id=vault_id,
                algorithm=signer_pb2.KEY_ALGORITHM_SECP256K1,
                purpose=signer_pb2.KEY_PURPOSE_VAULT,
            ),
        )
    return str(next(a.address for a in key.key.addresses if a.chain == CHAIN))


def stake_from(vault_id: str, address: str) -> IntentSpec:
    gen = generate_deposit_data(
        withdrawal_address=bytes.fromhex(address[2:]),
        amount_wei=32 * ETH,
        genesis_fork_version=bytes.fromhex(HOODI_GENESIS_FORK_VERSION[2:]),
    )
    return IntentSpec(Action.STAKE, CHAIN, vault_id, 32 * ETH, stake_target(gen.data))


async def nonce_of(stack: InProcessStack, tx_hash: str) -> int:
    return int((await stack.devnet.rpc.call("eth_getTransactionByHash", tx_hash))["nonce"], 16)


# --- the cases --------------------------------------------------------------------------------------


async def test_a_stake_from_an_unfunded_vault_is_refused_at_submission(stack: InProcessStack) -> None:
    """Nobody is asked to approve what the vault cannot pay: refused, saying what it holds."""
    address = await unfunded_vault(stack, "vault-2")
    with pytest.raises(FailedPrecondition, match=r"holds 0 ETH .* needs 32 ETH plus fees: fund the vault"):
        await stack.submit(stake_from("vault-2", address))


async def test_a_stake_whose_vault_is_drained_before_the_build_fails_and_the_next_one_confirms(
    stack: InProcessStack,
) -> None:
    address = await unfunded_vault(stack, "vault-2")
    await stack.devnet.rpc.call("anvil_setBalance", address, hex(40 * ETH))
    intent = await stack.submit(stake_from("vault-2", address))
    intent = (await stack.wait_for(intent.intent_id, {"AWAITING_APPROVALS"})).intent
    await stack.devnet.rpc.call("anvil_setBalance", address, hex(ETH))  # drained while it waits
    for who in ("olivia", "oscar"):
        await approve(stack, intent, who)
    failed = (await stack.wait_for(intent.intent_id, ENDINGS, timeout=PROMPT)).intent
    assert failed.state == staking_pb2.INTENT_STATE_FAILED and "gas estimation failed" in failed.reason, (
        failed.reason
    )

    await stack.devnet.rpc.call("anvil_setBalance", address, hex(100 * ETH))
    confirmed, state = await stake(stack, stake_from("vault-2", address))
    assert state == "CONFIRMED", confirmed.reason
    assert await nonce_of(stack, confirmed.tx_hash) == 0


async def test_a_signer_refusal_leaves_no_gap_for_the_next_intent(stack: InProcessStack) -> None:
    spare = await add_key(stack, "olivia")
    intent = await stack.submit(stack.stake_spec())
    intent = (await stack.wait_for(intent.intent_id, {"AWAITING_APPROVALS"})).intent
    await approve(stack, intent, "olivia", spare)
    # revoked once given: the workflow counts it (its registry is the submission's), the signer does not
    await revoke(stack, "olivia", spare)
    await approve(stack, intent, "oscar")
    failed = (await stack.wait_for(intent.intent_id, ENDINGS, timeout=PROMPT)).intent
    assert failed.state == staking_pb2.INTENT_STATE_FAILED and "signer refused" in failed.reason, (
        failed.reason
    )

    confirmed, state = await stake(stack)
    assert state == "CONFIRMED", confirmed.reason
    assert await nonce_of(stack, confirmed.tx_hash) == 0  # the refused intent's nonce, taken over


async def test_approve_intent_refuses_a_key_revoked_after_submission_and_the_intent_goes_on(
    stack: InProcessStack, tmp_path: Path
) -> None:
    spare = await add_key(stack, "oscar")
    intent = await stack.submit(stack.stake_spec())
    intent = (await stack.wait_for(intent.intent_id, {"AWAITING_APPROVALS"})).intent
    await revoke(stack, "oscar", spare)

    with pytest.raises(FailedPrecondition, match="revoked"):
        await approve(stack, intent, "oscar", spare)
    stranger = ed25519.Ed25519PrivateKey.generate()  # never registered to oscar
    with pytest.raises(FailedPrecondition, match="not registered"):
        await approve(stack, intent, "oscar", stranger)
    assert (await stack.wait_for(intent.intent_id, {"AWAITING_APPROVALS"})).intent.approvals == []

    engine = make_engine(f"sqlite:///{tmp_path / 'custos.db'}")
    try:
        with make_session_factory(engine)() as s:
            refused = list(
                s.scalars(
                    select(AuditRecordRow).where(
                        AuditRecordRow.subject == f"intent:{intent.intent_id}",
                        AuditRecordRow.action == "approve.refused",
                    )
                )
            )
    finally:
        engine.dispose()
    assert [(r.actor, r.outcome) for r in refused] == [("oscar", "refused")] * 2
    assert key_id_for(public_key_der(spare)) in refused[0].payload_json
    assert "revoked" in refused[0].payload_json

    for who in ("olivia", "oscar"):  # oscar's first key is still good
        await approve(stack, intent, who)
    final = (await stack.wait_for(intent.intent_id, ENDINGS, timeout=PROMPT)).intent
    assert final.state == staking_pb2.INTENT_STATE_CONFIRMED, final.reason
