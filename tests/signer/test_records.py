"""ListSigningRecords over real gRPC: who may read them, the filters, the paging, and what a record shows."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import grpc
import pytest

from services.pb.custos.signer.v1 import signer_pb2 as pb
from services.pb.custos.signer.v1 import signer_pb2_grpc
from services.runtime.server import RunningServer, ServiceBinding, start_server
from services.runtime.settings import ServiceSettings, TLSSettings
from services.signer.service import SignOutput
from services.signer.servicer import SignerServicer
from services.signer.types import KeyAlgorithm, KeyPurpose
from tests.signer.conftest import CHAIN, SignerRig

HEADER = "x-custos-test-identity"
VALIDATOR = bytes.fromhex("a1" * 48)


@pytest.fixture
async def running(rig: SignerRig) -> AsyncIterator[RunningServer]:
    settings = ServiceSettings(tls=TLSSettings(plaintext=True, trusted_identity_header=HEADER))
    binding = ServiceBinding(
        descriptor=pb.DESCRIPTOR.services_by_name["SignerService"],
        add_to_server=signer_pb2_grpc.add_SignerServiceServicer_to_server,
        servicer=SignerServicer(rig.service, rig.sessions),
    )
    server = await start_server(settings, [binding], listen="127.0.0.1:0")
    yield server
    await server.stop(0)


async def _list(
    server: RunningServer, request: pb.ListSigningRecordsRequest, role: str = "svc:chain"
) -> pb.ListSigningRecordsResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = signer_pb2_grpc.SignerServiceStub(channel)
        response: pb.ListSigningRecordsResponse = await stub.ListSigningRecords(
            request, metadata=((HEADER, f"{role}-test;{role}"),)
        )
        return response


def _sign(
    rig: SignerRig, nonce: int, *, intent_id: str, max_fee: int = 2 * 10**9, tip: int = 10**9
) -> SignOutput:
    spec = rig.unstake_spec(VALIDATOR)
    tx = rig.unstake_tx(VALIDATOR, nonce=nonce, max_fee=max_fee, tip=tip)
    return rig.service.sign_blocking(rig.request(spec, tx, intent_id=intent_id), "svc:worker")


def test_a_record_never_carries_the_signature() -> None:
    fields = set(pb.SigningRecord.DESCRIPTOR.fields_by_name)
    assert not fields & {"signature", "signed_tx", "payload_digest", "signing_digest", "intent_digest"}
    assert set(SignerServicer.ROLES["ListSigningRecords"]) == {"svc:chain", "operator", "compliance"}


async def test_records_in_nonce_order_with_their_replacement(rig: SignerRig, running: RunningServer) -> None:
    first = _sign(rig, 0, intent_id="i-0")
    _sign(rig, 1, intent_id="i-1")
    bumped = _sign(rig, 1, intent_id="i-1", max_fee=3 * 10**9, tip=2 * 10**9)
    _sign(rig, 2, intent_id="i-2")

    got = await _list(running, pb.ListSigningRecordsRequest(key_id=rig.vault.key_id, chain=CHAIN))
    assert [(r.nonce, r.attempt, r.replacement) for r in got.records] == [
        (0, 0, False),
        (1, 0, False),
        (1, 1, True),
        (2, 0, False),
    ]
    assert got.next_page_token == ""
    r0 = got.records[0]
    assert (r0.record_id, r0.tx_hash, r0.intent_id, r0.step) == (
        first.signing_record_id,
        first.tx_hash,
        "i-0",
        "unstake",
    )
    assert (r0.key_id, r0.vault_id, r0.chain) == (rig.vault.key_id, rig.vault.vault_id, CHAIN)
    assert r0.created_at.seconds > 0 and r0.replaces_record_id == ""
    assert got.records[2].record_id == bumped.signing_record_id
    assert got.records[2].replaces_record_id == got.records[1].record_id

    from_one = await _list(running, pb.ListSigningRecordsRequest(vault_id=rig.vault.vault_id, min_nonce=1))
    assert [r.nonce for r in from_one.records] == [1, 1, 2]
    elsewhere = await _list(running, pb.ListSigningRecordsRequest(key_id=rig.vault.key_id, chain="other"))
    assert list(elsewhere.records) == []


async def test_pages_follow_on_without_gaps_or_repeats(rig: SignerRig, running: RunningServer) -> None:
    other = rig.service.create_key_blocking(
        "operator-1", f"vault-{secrets.token_hex(4)}", KeyAlgorithm.SECP256K1, KeyPurpose.VAULT
    )
    for nonce in range(5):
        _sign(rig, nonce, intent_id=f"p-{nonce}")
    seen: list[tuple[str, int]] = []
    token = ""
    while True:
        page = await _list(running, pb.ListSigningRecordsRequest(page_size=2, page_token=token), "operator")
        assert len(page.records) <= 2
        seen += [(r.key_id, r.nonce) for r in page.records]
        token = page.next_page_token
        if not token:
            break
    assert seen == [(rig.vault.key_id, n) for n in range(5)]
    none = await _list(running, pb.ListSigningRecordsRequest(key_id=other.key_id), "compliance")
    assert list(none.records) == []


@pytest.mark.parametrize("role", ["initiator", "approver", "svc:worker", "svc:staking"])
async def test_other_roles_are_refused(rig: SignerRig, running: RunningServer, role: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await _list(running, pb.ListSigningRecordsRequest(), role)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    "request_",
    [
        pb.ListSigningRecordsRequest(page_token="not-a-token"),
        pb.ListSigningRecordsRequest(page_token="WyJhIiwiYiIsLTEsMF0="),  # ["a","b",-1,0]
        pb.ListSigningRecordsRequest(min_nonce=2**64 - 1),
        pb.ListSigningRecordsRequest(key_id="has space"),
    ],
)
async def test_bad_filters_are_invalid_arguments(
    rig: SignerRig, running: RunningServer, request_: pb.ListSigningRecordsRequest
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await _list(running, request_)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
