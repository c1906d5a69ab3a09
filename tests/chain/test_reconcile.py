"""Reconciliation on anvil with a SoftHSM vault key: what custos signed is clean, anything else is an alert.

The signer is the real SignerService (SoftHSM, approvals checked, records in the
database: SQLite and PostgreSQL) served over gRPC; the chain service builds and
broadcasts on anvil and reads the records back through ``ListSigningRecords`` as
``svc:chain``. The attack is anvil's own: ``anvil_impersonateAccount`` lets the
node send from the vault's address without the HSM, as a holder of the token's
PIN could.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from sqlalchemy import select

from services.audit.models import AuditRecordRow
from services.audit.writer import AuditWriter
from services.chain.devnet import Devnet
from services.chain.reconcile import AlertKind, Reconciler, Status, VaultReconciliation, reconcilable
from services.chain.service import ChainService
from services.chain.servicer import ChainServicer
from services.chain.signer_view import SignerView
from services.families.ethereum.deposit import ETHER
from services.families.ethereum.transactions import parse_signed
from services.pb.custos.chain.v1 import chain_pb2, chain_pb2_grpc
from services.pb.custos.signer.v1 import signer_pb2, signer_pb2_grpc
from services.runtime.errors import Unavailable
from services.runtime.ports import free_port
from services.runtime.server import RunningServer, ServiceBinding, start_server
from services.runtime.settings import ServiceSettings, TLSSettings
from services.signer.client import SignerClient
from services.signer.service import SignOutput
from services.signer.servicer import SignerServicer
from tests.chain.conftest import wait_final
from tests.signer.conftest import CHAIN, SignerRig
from tests.signer.conftest import rig as rig  # the signer and its vault key, on SQLite and PostgreSQL

HEADER = "x-custos-test-identity"
VALIDATOR = bytes.fromhex("a1" * 48)
ELSEWHERE = "0x000000000000000000000000000000000000dEaD"
ACTION = "chain.reconcile"


def _as(role: str) -> tuple[tuple[str, str]]:
    return ((HEADER, f"{role}-test;{role}"),)


@dataclass
class Rig:
    signer: SignerRig
    chain: ChainService
    reconciler: Reconciler
    devnet: Devnet
    metrics: InMemoryMetricReader
    chain_server: RunningServer
    address: str

    async def custos_unstake(self, *, broadcast: bool = True) -> SignOutput:
        """An unstake through custos: built by the chain service, signed by the signer, sent."""
        intent_id = f"intent-{secrets.token_hex(4)}"
        spec = self.signer.unstake_spec(VALIDATOR, amount_gwei=1)
        built = await self.chain.build_transaction(intent_id, spec, self.address)
        request = self.signer.request(spec, built.unsigned_tx, intent_id=intent_id, step="unstake")
        signed = await self.signer.service.sign(request, actor="svc:worker")
        if broadcast:
            await self.send(signed)
        return signed

    async def fee_bump(self, first: SignOutput, intent_id: str) -> SignOutput:
        tx = parse_signed(first.signed_tx).tx
        bumped = dataclasses.replace(
            tx,
            max_fee_per_gas=tx.max_fee_per_gas + 10**9,
            max_priority_fee_per_gas=tx.max_priority_fee_per_gas + 1,
        )
        spec = self.signer.unstake_spec(VALIDATOR, amount_gwei=1)
        request = self.signer.request(spec, bumped.encode(), intent_id=intent_id, step="unstake")
        return await self.signer.service.sign(request, actor="svc:worker")

    async def send(self, signed: SignOutput) -> None:
        await self.chain.broadcast(CHAIN, signed.signed_tx)
        await wait_final(self.chain, CHAIN, signed.tx_hash)

    def send_outside_custos(self) -> str:
        """What a holder of the HSM PIN could do: a transaction from the vault that custos never saw."""
        rpc = self.devnet.rpc
        rpc.call_sync("anvil_impersonateAccount", [self.address])
        try:
            tx_hash = str(
                rpc.call_sync(
                    "eth_sendTransaction", [{"from": self.address, "to": ELSEWHERE, "value": "0x1"}]
                )
            )
        finally:
            rpc.call_sync("anvil_stopImpersonatingAccount", [self.address])
        for _ in range(100):
            if rpc.call_sync("eth_getTransactionReceipt", [tx_hash]) is not None:
                return tx_hash.lower()
            self.devnet.mine()
        raise AssertionError(f"{tx_hash} was never mined")

    async def reconcile_vault(self) -> VaultReconciliation:
        (found,) = await self.reconciler.reconcile(vault_id=self.signer.vault.vault_id)
        return found

    def audit(self, outcome: str | None = None) -> list[AuditRecordRow]:
        with self.signer.sessions() as s:
            query = select(AuditRecordRow).where(AuditRecordRow.action == ACTION)
            if outcome:
                query = query.where(AuditRecordRow.outcome == outcome)
            return list(s.scalars(query.order_by(AuditRecordRow.sequence)))

    def alerts_counted(self) -> int:
        data = self.metrics.get_metrics_data()
        total = 0
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == "custos.reconcile.alerts":
                        total += sum(
                            int(p.value) for p in m.data.data_points if isinstance(p, NumberDataPoint)
                        )
        return total

    async def call(self, rpc: str, request: Any, role: str) -> Any:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.chain_server.port}") as channel:
            return await getattr(chain_pb2_grpc.ChainServiceStub(channel), rpc)(request, metadata=_as(role))


async def _serve(binding: ServiceBinding) -> RunningServer:
    settings = ServiceSettings(tls=TLSSettings(plaintext=True, trusted_identity_header=HEADER))
    return await start_server(settings, [binding], listen="127.0.0.1:0")


@pytest.fixture
async def recon(rig: SignerRig, devnet: Devnet) -> AsyncIterator[Rig]:
    signer_server = await _serve(
        ServiceBinding(
            signer_pb2.DESCRIPTOR.services_by_name["SignerService"],
            signer_pb2_grpc.add_SignerServiceServicer_to_server,
            SignerServicer(rig.service, rig.sessions),
        )
    )
    client = SignerClient(
        grpc.aio.insecure_channel(f"127.0.0.1:{signer_server.port}"), metadata=_as("svc:chain")
    )
    chain = ChainService([devnet.chain_config()], rig.sessions)
    reader = InMemoryMetricReader()
    reconciler = Reconciler(
        reconcilable([chain.adapter(CHAIN)]),
        SignerView(client),
        rig.sessions,
        AuditWriter(rig.sessions, actor="svc:chain"),
        meter=MeterProvider(metric_readers=[reader]).get_meter("test"),
    )
    chain_server = await _serve(
        ServiceBinding(
            chain_pb2.DESCRIPTOR.services_by_name["ChainService"],
            chain_pb2_grpc.add_ChainServiceServicer_to_server,
            ChainServicer(chain, reconciler),
        )
    )
    devnet.fund(rig.vault_address, 100 * ETHER)
    yield Rig(rig, chain, reconciler, devnet, reader, chain_server, rig.vault_address)
    await chain_server.stop(0)
    await client.close()
    await signer_server.stop(0)


async def test_a_custos_signed_history_reconciles_clean(recon: Rig) -> None:
    fresh = await recon.reconcile_vault()
    assert (fresh.status, fresh.confirmed_nonce, fresh.highest_signed_nonce) == (Status.CLEAN, 0, None)

    await recon.custos_unstake()
    first = await recon.custos_unstake(broadcast=False)
    # A fee bump: two records at nonce 1, and only the replacement is sent and mined.
    bumped = await recon.fee_bump(first, intent_id=_intent_of(recon, first))
    assert bumped.replacement
    await recon.send(bumped)
    await recon.custos_unstake()

    found = await recon.reconcile_vault()
    assert found.status is Status.CLEAN, found
    assert (found.confirmed_nonce, found.highest_signed_nonce, found.settled_below) == (3, 2, 3)
    assert (found.address, found.alerts, found.pending_nonces) == (recon.address, (), 0)
    assert recon.audit() == [] and recon.alerts_counted() == 0


async def test_a_signed_transaction_still_pending_is_no_alert(recon: Rig) -> None:
    await recon.custos_unstake()
    await recon.custos_unstake(broadcast=False)  # signed, not (yet) on chain
    found = await recon.reconcile_vault()
    assert (found.status, found.confirmed_nonce, found.highest_signed_nonce) == (Status.CLEAN, 1, 1)
    assert found.pending_nonces == 1 and recon.audit() == []


async def test_a_transaction_sent_outside_custos_is_an_alert_in_the_audit_trail(
    recon: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    await recon.custos_unstake()
    stolen = recon.send_outside_custos()  # nonce 1, signed by no one custos knows

    with caplog.at_level(logging.ERROR, logger="services.chain.reconcile"):
        found = await recon.reconcile_vault()
    assert found.status is Status.ALERT
    (alert,) = found.alerts
    assert (alert.kind, alert.nonce, alert.address, alert.chain) == (
        AlertKind.UNSIGNED_NONCE,
        1,
        recon.address,
        CHAIN,
    )
    assert alert.seen is not None and alert.seen.tx_hash == stolen and alert.seen.value == 1
    assert alert.seen.to_address == ELSEWHERE and alert.signed_tx_hashes == ()

    (record,) = recon.audit()
    assert (record.actor, record.subject, record.outcome) == ("svc:chain", f"vault:{alert.vault_id}", "alert")
    payload = _payload(record)
    # (the audit trail's canonical JSON writes integers as strings)
    assert (payload["chain"], payload["address"], payload["nonce"]) == (CHAIN, recon.address, "1")
    assert payload["transaction_seen"]["tx_hash"] == stolen and payload["kind"] == "UNSIGNED_NONCE"
    assert any("nonce 1" in r.getMessage() and stolen in r.getMessage() for r in caplog.records)
    assert recon.alerts_counted() == 1

    # Seen again: still open, but a repeat is no new record.
    again = await recon.reconcile_vault()
    assert again.status is Status.ALERT and [a.alert_id for a in again.alerts] == [alert.alert_id]
    assert len(recon.audit()) == 1 and recon.alerts_counted() == 1
    # custos goes on with the next nonce; the alert stays open.
    await recon.custos_unstake()
    later = await recon.reconcile_vault()
    assert (later.status, later.confirmed_nonce, later.settled_below) == (Status.ALERT, 3, 3)


async def test_a_nonce_custos_signed_but_someone_else_used_is_an_alert(recon: Rig) -> None:
    mine = await recon.custos_unstake(broadcast=False)  # signed for nonce 0, held back
    stolen = recon.send_outside_custos()  # takes nonce 0 first
    found = await recon.reconcile_vault()
    (alert,) = found.alerts
    assert (alert.kind, alert.nonce) == (AlertKind.FOREIGN_TRANSACTION, 0)
    assert alert.signed_tx_hashes == (mine.tx_hash.lower(),)
    assert alert.seen is not None and alert.seen.tx_hash == stolen
    (record,) = recon.audit("alert")
    assert _payload(record)["signed_tx_hashes"] == [mine.tx_hash.lower()]


async def test_an_alert_closes_only_when_an_operator_acknowledges_it(recon: Rig) -> None:
    recon.send_outside_custos()
    (alert,) = (await recon.reconcile_vault()).alerts
    reconciled = await recon.call(
        "ReconcileVaults", chain_pb2.ReconcileVaultsRequest(vault_id=alert.vault_id), "compliance"
    )
    (vault,) = reconciled.vaults
    assert vault.status == chain_pb2.RECONCILE_STATUS_ALERT and vault.alerts[0].alert_id == alert.alert_id
    assert vault.alerts[0].nonce == 0 and vault.alerts[0].seen.tx_hash == alert.seen.tx_hash  # type: ignore[union-attr]

    ack = chain_pb2.AcknowledgeReconcileAlertRequest(alert_id=alert.alert_id, reason="INC-42: PIN rotated")
    for role, code in (
        ("compliance", grpc.StatusCode.PERMISSION_DENIED),
        ("initiator", grpc.StatusCode.PERMISSION_DENIED),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await recon.call("AcknowledgeReconcileAlert", ack, role)
        assert e.value.code() == code
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await recon.call(
            "AcknowledgeReconcileAlert",
            chain_pb2.AcknowledgeReconcileAlertRequest(alert_id=alert.alert_id),
            "operator",
        )
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    done = await recon.call("AcknowledgeReconcileAlert", ack, "operator")
    assert done.alert.acknowledged_by == "operator-test" and done.alert.HasField("acknowledged_at")
    cleared = recon.audit("cleared")
    assert [(r.actor, r.subject) for r in cleared] == [("operator-test", f"vault:{alert.vault_id}")]
    assert _payload(cleared[0])["reason"] == "INC-42: PIN rotated"

    for request, code in (
        (ack, grpc.StatusCode.FAILED_PRECONDITION),
        (
            chain_pb2.AcknowledgeReconcileAlertRequest(alert_id="alert_nope", reason="x"),
            grpc.StatusCode.NOT_FOUND,
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await recon.call("AcknowledgeReconcileAlert", request, "operator")
        assert e.value.code() == code
    assert len(recon.audit("refused")) == 3  # no reason, twice acknowledged, unknown

    # Closed: the same nonce never alerts again; a new foreign transaction does.
    assert (await recon.reconcile_vault()).status is Status.CLEAN and len(recon.audit("alert")) == 1
    recon.send_outside_custos()
    (fresh,) = (await recon.reconcile_vault()).alerts
    assert fresh.nonce == 1 and fresh.alert_id != alert.alert_id and len(recon.audit("alert")) == 2


async def test_reconcile_vaults_is_for_operators_and_compliance(recon: Rig) -> None:
    for role in ("initiator", "approver", "svc:worker", "svc:signer"):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await recon.call("ReconcileVaults", chain_pb2.ReconcileVaultsRequest(), role)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    got = await recon.call("ReconcileVaults", chain_pb2.ReconcileVaultsRequest(chain=CHAIN), "operator")
    assert recon.address in {v.address for v in got.vaults}
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await recon.call("ReconcileVaults", chain_pb2.ReconcileVaultsRequest(chain="nope"), "operator")
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


async def test_the_loop_raises_the_alert_and_outlives_outages(
    recon: Rig, devnet: Devnet, caplog: pytest.LogCaptureFixture
) -> None:
    dead_node = devnet.chain_config(rpc_url=f"http://127.0.0.1:{free_port()}", rpc_timeout_seconds=0.5)
    down = Reconciler(
        reconcilable([ChainService([dead_node], recon.signer.sessions).adapter(CHAIN)]),
        recon.reconciler._signer,
        recon.signer.sessions,
        AuditWriter(recon.signer.sessions, actor="svc:chain"),
    )
    (unavailable,) = await down.reconcile(vault_id=recon.signer.vault.vault_id)
    assert unavailable.status is Status.UNAVAILABLE and "unreachable" in unavailable.error

    dead_signer = SignerClient(grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}"), deadline=0.5)
    no_signer = Reconciler(
        reconcilable([recon.chain.adapter(CHAIN)]),
        SignerView(dead_signer),
        recon.signer.sessions,
        AuditWriter(recon.signer.sessions, actor="svc:chain"),
    )
    with pytest.raises(Unavailable):
        await no_signer.reconcile()

    stolen = recon.send_outside_custos()
    with caplog.at_level(logging.WARNING, logger="services.chain.reconcile"):
        loops = [asyncio.create_task(r.run_forever(0.05)) for r in (down, no_signer, recon.reconciler)]
        async with asyncio.timeout(20):
            while True:
                if recon.audit("alert"):
                    break
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        assert not any(loop.done() for loop in loops)  # outages are retried, never the end of a loop
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
    await dead_signer.close()
    assert _payload(recon.audit("alert")[0])["transaction_seen"]["tx_hash"] == stolen
    messages = [r.getMessage() for r in caplog.records]
    assert any("node unavailable" in m for m in messages)
    assert any("reconciliation pass failed" in m for m in messages)
    assert any("reconcile ALERT" in m and stolen in m for m in messages)


def _intent_of(recon: Rig, signed: SignOutput) -> str:
    from services.signer.models import SigningRecord

    with recon.signer.sessions() as s:
        record = s.get(SigningRecord, signed.signing_record_id)
        assert record is not None
        return record.intent_id


def _payload(record: AuditRecordRow) -> dict[str, Any]:
    import json

    value = json.loads(record.payload_json)
    assert isinstance(value, dict)
    return value


async def test_the_chain_service_runs_the_loop_every_n_seconds_and_stops_it(
    sqlite_url: str, devnet: Devnet, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.chain.main import ChainSettings, build
    from services.runtime.settings import Endpoints

    assert ChainSettings(database_url=sqlite_url).reconcile_seconds == 30
    monkeypatch.setenv("CUSTOS_RECONCILE_SECONDS", "0.05")
    settings = ChainSettings(
        database_url=sqlite_url,
        chains=[devnet.chain_config()],
        tls=TLSSettings(plaintext=True),
        endpoints=Endpoints(signer=f"127.0.0.1:{free_port()}"),  # no signer there
    )
    assert settings.reconcile_seconds == 0.05
    with caplog.at_level(logging.WARNING, logger="services.chain.reconcile"):
        component = await build(settings)
        await asyncio.sleep(0.5)
        await component.close()
    failed = [r for r in caplog.records if "reconciliation pass failed" in r.getMessage()]
    assert len(failed) >= 2, "the loop retries after a signer outage"
