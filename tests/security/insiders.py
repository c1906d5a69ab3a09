"""What each insider holds, as code: the tools the attacks in this directory are played with.

* :class:`WorkerHost`: the worker's certificate (``svc:worker``: it may call the signer's
  ``Sign``, the chain service, the policy service's velocity RPCs), the database URL with
  full write access (plain SQL), and the Temporal address. It sees every approval as it
  reaches a workflow, so it holds the approvals of any intent it runs.
* A policy-admin is a certificate and an admin key file: the tests use the stack's
  ``PolicyClient`` as ``dave`` with ``dave``'s key only.
* A Temporal client is :meth:`SecurityStack.temporal`: start, terminate and update
  workflows straight at the frontend.

"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from services.chain.client import ChainClient
from services.chain.ethereum.adapter import EthereumAdapter, PlannedCall
from services.families.ethereum import contracts as c
from services.families.ethereum.deposit import deposit_of
from services.families.ethereum.transactions import UnsignedTransaction
from services.pb.custos.chain.v1 import chain_pb2
from services.pb.custos.signer.v1 import signer_pb2
from services.runtime.convert import approval_to_pb, datetime_to_ts, spec_to_pb
from services.runtime.errors import CustosError
from services.runtime.grpc_errors import RemoteError
from services.runtime.intent import Approval, IntentSpec, RestakeTarget, StakeTarget, UnstakeTarget
from services.signer.client import SignerClient
from tests.security.stack import Evidence, Real, SecurityStack
from workflows.approvals import approval_from_data
from workflows.staking.types import ApprovalData, IntentInput

GWEI = 10**9


class WorkerHost:
    """The holder of the worker host: its certificate, the database URL, the Temporal address."""

    def __init__(self, stack: SecurityStack) -> None:
        self.stack = stack
        self._adapter = EthereumAdapter(stack.devnet.chain_config())

    # --- the signer, called directly ------------------------------------------------------

    async def sign(
        self,
        real: Real,
        *,
        tx: bytes,
        approvals: list[Approval] | None = None,
        intent_id: str | None = None,
        step: str | None = None,
        spec: IntentSpec | None = None,
        initiator: str | None = None,
        policy_version: str | None = None,
        submitted_at: datetime | None = None,
        at: str | None = None,
    ) -> Any:
        """``Sign`` as ``svc:worker`` with ``real``'s fields, each one replaceable (``at``: the
        address of another signer process of the installation)."""
        request = signer_pb2.SignRequest(
            intent_id=intent_id or real.id,
            step=step or real.step,
            spec=spec_to_pb(spec or real.spec),
            initiator=initiator or real.intent.initiator,
            policy_version=policy_version or real.intent.policy_version,
            approvals=[approval_to_pb(a) for a in (real.approvals if approvals is None else approvals)],
            unsigned_tx=tx,
            submitted_at=datetime_to_ts(submitted_at or real.submitted_at),
        )
        client = self.stack.signer_at(at, "worker") if at else self.stack.client(SignerClient, "worker")
        async with client as signer:
            return await signer.call("Sign", request)

    async def refused(self, real: Real, **kwargs: Any) -> RemoteError:
        """:meth:`sign`, which must be refused: returns the typed error the caller got."""
        with pytest.raises(CustosError) as caught:
            await self.sign(real, **kwargs)
        assert isinstance(caught.value, RemoteError), caught.value
        return caught.value

    # --- transactions, built as the chain service would (or not) ---------------------------

    async def next_nonce(self) -> int:
        return await self.stack.vault_nonce()

    def tx(
        self,
        spec: IntentSpec,
        *,
        nonce: int,
        value: int | None = None,
        max_fee: int = 3 * GWEI,
        tip: int = GWEI,
    ) -> bytes:
        """The unsigned EIP-1559 transaction carrying ``spec`` at ``nonce`` (``value`` overridden)."""
        call = self._call(spec)
        if value is None:
            value = call.value if not call.pays_request_fee else 1  # anvil's request fee is 1 wei
        return UnsignedTransaction(
            chain_id=self._adapter.config.evm_chain_id,
            nonce=nonce,
            max_priority_fee_per_gas=tip,
            max_fee_per_gas=max_fee,
            gas=200_000,
            to=call.to,
            value=value,
            data=call.data,
        ).encode()

    def _call(self, spec: IntentSpec) -> PlannedCall:
        """The contract call ``spec`` turns into, without the chain service's checks (an
        attacker builds whatever bytes they like: a deposit whose credentials are theirs)."""
        t = spec.target
        d = deposit_of(t) if isinstance(t, StakeTarget) else None
        if d is not None:
            data = c.deposit_calldata(
                c.DepositCall(d.pubkey, d.withdrawal_credentials, d.signature, d.deposit_data_root)
            )
            to = bytes.fromhex(self._adapter.config.deposit_contract[2:])
            return PlannedCall(to=to, data=data, value=spec.amount, pays_request_fee=False)
        if isinstance(t, UnstakeTarget):
            data = c.withdrawal_request_calldata(bytes.fromhex(t.validator[2:]), spec.amount // GWEI)
            to = bytes.fromhex(c.WITHDRAWAL_REQUEST_CONTRACT[2:])
        else:
            assert isinstance(t, RestakeTarget)
            pubkeys = bytes.fromhex(t.source_validator[2:]), bytes.fromhex(t.target_validator[2:])
            data = c.consolidation_request_calldata(*pubkeys)
            to = bytes.fromhex(c.CONSOLIDATION_REQUEST_CONTRACT[2:])
        return PlannedCall(to=to, data=data, value=0, pays_request_fee=True)

    async def broadcast(self, signed_tx: bytes) -> str:
        """Sends a signature the attack obtained, through the chain service (``svc:worker`` may)."""
        async with self.stack.client(ChainClient, "worker") as chain:
            resp = await chain.call(
                "BroadcastTransaction",
                chain_pb2.BroadcastTransactionRequest(chain=self._adapter.config.name, signed_tx=signed_tx),
            )
        return str(resp.tx_hash)

    # --- Temporal ------------------------------------------------------------------------------

    async def approvals_in_history(self, intent_id: str) -> list[Approval]:
        """The approvals a workflow accepted, read from its history at the Temporal frontend."""
        client = await self.stack.temporal()
        history = await client.get_workflow_handle(intent_id).fetch_history()
        out = []
        for event in history.events:
            if not event.HasField("workflow_execution_update_accepted_event_attributes"):
                continue
            request = event.workflow_execution_update_accepted_event_attributes.accepted_request
            if request.input.name != "approve":
                continue
            (data,) = await client.data_converter.decode(request.input.args.payloads, [ApprovalData])
            out.append(approval_from_data(data))
        return out

    async def workflow_input(self, intent_id: str) -> IntentInput:
        """The input a workflow was started with, read from its history."""
        client = await self.stack.temporal()
        history = await client.get_workflow_handle(intent_id).fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes
        (inp,) = await client.data_converter.decode(started.input.payloads, [IntentInput])
        assert isinstance(inp, IntentInput)
        return inp


def approval_data(a: Approval) -> ApprovalData:
    """An approval as a workflow's ``approve`` update carries it."""
    return ApprovalData(
        a.approver_id,
        a.key_id,
        a.decision.value,
        a.intent_digest.hex(),
        a.policy_version,
        a.expires_at,
        a.signature.hex(),
    )


async def assert_refused(
    stack: SecurityStack,
    before: Evidence,
    error: RemoteError,
    *,
    status: str,
    error_type: str,
    subject: str,
    action: str = "signer.sign",
) -> dict[str, Any]:
    """The attack was refused with a typed error, audited, and moved nothing.

    Returns the audit record of the refusal (the last one written for ``subject``).
    """
    assert (error.status.name, error.remote_type) == (status, error_type), error
    after = await stack.evidence()
    assert after.records == before.records, "a signing record was written"
    assert after.nonce == before.nonce, "a transaction from the vault reached anvil"
    refusals = [
        r for r in stack.audit_since(before, action) if r["outcome"] == "refused" and r["subject"] == subject
    ]
    assert refusals, f"no {action} refusal audited for {subject}"
    return refusals[-1]


async def signer_judges_again(stack: SecurityStack, u: Real, worker_host: WorkerHost) -> None:
    """After the database was put back: the signer answers again, with its ordinary refusal
    (one approval of the two ``u`` needs)."""
    before = await stack.evidence()
    error = await worker_host.refused(
        u, approvals=u.approvals[:1], tx=worker_host.tx(u.spec, nonce=before.nonce)
    )
    await assert_refused(
        stack,
        before,
        error,
        status="PERMISSION_DENIED",
        error_type="ApprovalsInsufficient",
        subject=f"intent:{u.id}",
    )
