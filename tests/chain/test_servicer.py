"""custos.chain.v1.ChainService over real gRPC (plaintext with a trusted identity header)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import grpc
import pytest

from services.chain.service import ChainService
from services.chain.servicer import ChainServicer
from services.families.config import ChainConfig
from services.families.ethereum.deposit import ETHER
from services.pb.custos.chain.v1 import chain_pb2, chain_pb2_grpc
from services.runtime.convert import spec_to_pb
from services.runtime.errors import InvalidArgument, NotFound
from services.runtime.server import RunningServer, ServiceBinding, start_server
from services.runtime.settings import ServiceSettings, TLSSettings
from tests.chain.conftest import HsmVaultSigner, deposit_for, stake_spec

HEADER = "x-custos-test-identity"


@pytest.fixture
async def running(service: ChainService) -> AsyncIterator[RunningServer]:
    settings = ServiceSettings(tls=TLSSettings(plaintext=True, trusted_identity_header=HEADER))
    binding = ServiceBinding(
        descriptor=chain_pb2.DESCRIPTOR.services_by_name["ChainService"],
        add_to_server=chain_pb2_grpc.add_ChainServiceServicer_to_server,
        servicer=ChainServicer(service),
    )
    server = await start_server(settings, [binding], listen="127.0.0.1:0")
    yield server
    await server.stop(0)


def _stub(server: RunningServer) -> tuple[grpc.aio.Channel, chain_pb2_grpc.ChainServiceAsyncStub]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    return channel, chain_pb2_grpc.ChainServiceStub(channel)


def _as(role: str) -> tuple[tuple[str, str]]:
    return ((HEADER, f"{role}-test;{role}"),)


def test_every_rpc_declares_its_roles() -> None:
    methods = {m.name for m in chain_pb2.DESCRIPTOR.services_by_name["ChainService"].methods}
    assert set(ChainServicer.ROLES) == methods
    assert ChainServicer.ROLES["DecodeTransaction"] == frozenset()  # the signer decodes on its own
    assert ChainServicer.ROLES["BuildTransaction"] == frozenset({"svc:worker"})


async def test_stake_end_to_end_over_grpc(
    running: RunningServer, service: ChainService, chain_config: ChainConfig, vault: HsmVaultSigner
) -> None:
    channel, stub = _stub(running)
    async with channel:
        chains = await stub.ListChains(chain_pb2.ListChainsRequest(), metadata=_as("svc:worker"))
        assert [c.name for c in chains.chains] == [chain_config.name]
        assert chains.chains[0].family == chain_pb2.CHAIN_FAMILY_ETHEREUM

        spec = spec_to_pb(stake_spec(chain_config, deposit_for(vault, chain_config)))
        await stub.ValidateIntent(
            chain_pb2.ValidateIntentRequest(spec=spec, vault_address=vault.address),
            metadata=_as("svc:staking"),
        )
        built = await stub.BuildTransaction(
            chain_pb2.BuildTransactionRequest(intent_id="grpc-1", spec=spec, vault_address=vault.address),
            metadata=_as("svc:worker"),
        )
        decoded = await ChainServicer(service).DecodeTransaction(  # closed over gRPC: nobody calls it
            chain_pb2.DecodeTransactionRequest(chain=chain_config.name, unsigned_tx=built.unsigned_tx), None
        )
        assert decoded.decoded.stake == spec.stake
        assert decoded.decoded.amount == spec.amount == str(32 * ETHER)
        assert decoded.decoded.signing_digest == built.decoded.signing_digest

        signed = vault.sign(built.unsigned_tx)
        request = chain_pb2.BroadcastTransactionRequest(chain=chain_config.name, signed_tx=signed)
        first = await stub.BroadcastTransaction(request, metadata=_as("svc:worker"))
        second = await stub.BroadcastTransaction(request, metadata=_as("svc:worker"))
        assert first.tx_hash == second.tx_hash and second.already_known

        for _ in range(100):
            status = await stub.GetTransactionStatus(
                chain_pb2.GetTransactionStatusRequest(chain=chain_config.name, tx_hash=first.tx_hash),
                metadata=_as("svc:worker"),
            )
            if status.state == chain_pb2.TRANSACTION_STATE_CONFIRMED:
                break
            await asyncio.sleep(0.05)
        assert status.state == chain_pb2.TRANSACTION_STATE_CONFIRMED
        (event,) = status.events
        assert event.name == "DepositEvent" and event.fields["amount_gwei"] == str(32 * 10**9)


async def test_refusals_map_to_grpc_statuses(
    running: RunningServer, service: ChainService, chain_config: ChainConfig, vault: HsmVaultSigner
) -> None:
    gen = deposit_for(vault, chain_config)
    bad = replace(gen, data=replace(gen.data, deposit_data_root=bytes(32)))
    spec = spec_to_pb(stake_spec(chain_config, bad))
    channel, stub = _stub(running)
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.ValidateIntent(
                chain_pb2.ValidateIntentRequest(spec=spec, vault_address=vault.address),
                metadata=_as("svc:staking"),
            )
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "deposit data root" in (e.value.details() or "")

        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.BuildTransaction(
                chain_pb2.BuildTransactionRequest(intent_id="x", spec=spec, vault_address=vault.address),
                metadata=_as("svc:signer"),
            )
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED

        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.DecodeTransaction(
                chain_pb2.DecodeTransactionRequest(chain=chain_config.name, unsigned_tx=b"\x02\x00"),
                metadata=_as("svc:signer"),
            )
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED

    servicer = ChainServicer(service)
    with pytest.raises(InvalidArgument):
        await servicer.DecodeTransaction(
            chain_pb2.DecodeTransactionRequest(chain=chain_config.name, unsigned_tx=b"\x02\x00"), None
        )
    with pytest.raises(NotFound):
        await servicer.DecodeTransaction(
            chain_pb2.DecodeTransactionRequest(chain="nope", unsigned_tx=b"\x02\x00"), None
        )


async def test_only_the_worker_may_release_nonces(
    running: RunningServer, chain_config: ChainConfig, vault: HsmVaultSigner
) -> None:
    assert ChainServicer.ROLES["ReleaseNonce"] == frozenset({"svc:worker"})
    spec = spec_to_pb(stake_spec(chain_config, deposit_for(vault, chain_config)))
    channel, stub = _stub(running)
    async with channel:
        built = await stub.BuildTransaction(
            chain_pb2.BuildTransactionRequest(intent_id="grpc-r", spec=spec, vault_address=vault.address),
            metadata=_as("svc:worker"),
        )
        request = chain_pb2.ReleaseNonceRequest(chain=chain_config.name, intent_id="grpc-r", reason="failed")
        for role in ("svc:staking", "svc:signer", "operator"):
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.ReleaseNonce(request, metadata=_as(role))
            assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        for bad, code in (
            (chain_pb2.ReleaseNonceRequest(chain=chain_config.name), grpc.StatusCode.INVALID_ARGUMENT),
            (chain_pb2.ReleaseNonceRequest(chain="nope", intent_id="grpc-r"), grpc.StatusCode.NOT_FOUND),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.ReleaseNonce(bad, metadata=_as("svc:worker"))
            assert e.value.code() == code
        released = await stub.ReleaseNonce(request, metadata=_as("svc:worker"))
        assert list(released.released) == [built.decoded.nonce] and list(released.kept) == []
        again = await stub.ReleaseNonce(request, metadata=_as("svc:worker"))
        assert list(again.released) == list(again.kept) == []
