"""The shared server runtime: mTLS, roles, health, reflection, error mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.pb.custos.chain.v1 import chain_pb2, chain_pb2_grpc
from services.runtime.auth import current_principal
from services.runtime.client import BaseClient, channel_credentials
from services.runtime.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from services.runtime.server import RunningServer, ServiceBinding, start_server
from services.runtime.settings import ServiceSettings, TLSSettings
from tests.fixtures.pki import person


class _ProbeServicer(chain_pb2_grpc.ChainServiceServicer):
    """A stand-in ChainService whose handlers exercise the runtime, not chain logic."""

    ROLES: ClassVar[dict[str, frozenset[str]]] = {
        "ListChains": frozenset({"initiator", "compliance"}),
        "ValidateIntent": frozenset({"initiator"}),
        "BuildTransaction": frozenset({"initiator"}),
        "DecodeTransaction": frozenset({"svc:signer"}),
        "BroadcastTransaction": frozenset({"svc:worker"}),
        "GetTransactionStatus": frozenset({"compliance"}),
        "ReconcileVaults": frozenset({"compliance"}),
        "AcknowledgeReconcileAlert": frozenset({"operator"}),
        "ReleaseNonce": frozenset({"svc:worker"}),
    }

    async def ListChains(self, request: Any, context: Any) -> chain_pb2.ListChainsResponse:
        # the caller's identity reaches the handler
        return chain_pb2.ListChainsResponse(chains=[chain_pb2.Chain(name=current_principal().identity)])

    async def ValidateIntent(self, request: Any, context: Any) -> Any:
        raise InvalidArgument("deposit data root does not match")

    async def BuildTransaction(self, request: Any, context: Any) -> Any:
        raise RuntimeError("secret-looking internals must not reach the client")

    async def DecodeTransaction(self, request: Any, context: Any) -> Any:
        raise NotImplementedError

    async def BroadcastTransaction(self, request: Any, context: Any) -> Any:
        raise NotImplementedError

    async def GetTransactionStatus(self, request: Any, context: Any) -> Any:
        raise NotImplementedError

    async def ReconcileVaults(self, request: Any, context: Any) -> Any:
        raise NotImplementedError

    async def AcknowledgeReconcileAlert(self, request: Any, context: Any) -> Any:
        raise NotImplementedError

    async def ReleaseNonce(self, request: Any, context: Any) -> Any:
        raise NotImplementedError


class _ChainClient(BaseClient):
    service = "chain"
    stub_class = chain_pb2_grpc.ChainServiceStub


def _settings(pki_dir: Path, **tls: Any) -> ServiceSettings:
    return ServiceSettings(
        state_dir=pki_dir.parent,
        listen="127.0.0.1:0",
        tls=TLSSettings(pki_dir=pki_dir, cert=pki_dir / "chain.crt", key=pki_dir / "chain.key", **tls),
    )


@pytest.fixture
async def server(pki_dir: Path) -> AsyncIterator[RunningServer]:
    binding = ServiceBinding(
        chain_pb2.DESCRIPTOR.services_by_name["ChainService"],
        chain_pb2_grpc.add_ChainServiceServicer_to_server,
        _ProbeServicer(),
    )
    running = await start_server(_settings(pki_dir), [binding])
    yield running
    await running.stop(0)


def _channel(pki_dir: Path, port: int, who: str, ca_dir: Path | None = None) -> grpc.aio.Channel:
    p = person(ca_dir or pki_dir, who)
    creds = channel_credentials(pki_dir / "ca.crt", p.cert, p.key)
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", creds)


async def test_allowed_role_is_served_with_its_identity(pki_dir: Path, server: RunningServer) -> None:
    async with _channel(pki_dir, server.port, "alice") as ch:
        resp = await chain_pb2_grpc.ChainServiceStub(ch).ListChains(chain_pb2.ListChainsRequest(), timeout=5)
    assert resp.chains[0].name == "alice"


async def test_wrong_role_is_permission_denied(pki_dir: Path, server: RunningServer) -> None:
    async with _channel(pki_dir, server.port, "bob") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await chain_pb2_grpc.ChainServiceStub(ch).ListChains(chain_pb2.ListChainsRequest(), timeout=5)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "bob may not call ListChains" in (e.value.details() or "")


async def test_no_roles_at_all_is_permission_denied(pki_dir: Path, server: RunningServer) -> None:
    async with _channel(pki_dir, server.port, "eve") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await chain_pb2_grpc.ChainServiceStub(ch).ListChains(chain_pb2.ListChainsRequest(), timeout=5)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_client_without_certificate_is_refused(pki_dir: Path, server: RunningServer) -> None:
    creds = grpc.ssl_channel_credentials(root_certificates=(pki_dir / "ca.crt").read_bytes())
    async with grpc.aio.secure_channel(f"127.0.0.1:{server.port}", creds) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await chain_pb2_grpc.ChainServiceStub(ch).ListChains(chain_pb2.ListChainsRequest(), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE  # the TLS handshake itself fails


async def test_certificate_from_another_ca_is_refused(
    pki_dir: Path, foreign_pki_dir: Path, server: RunningServer
) -> None:
    async with _channel(pki_dir, server.port, "alice", ca_dir=foreign_pki_dir) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await chain_pb2_grpc.ChainServiceStub(ch).ListChains(chain_pb2.ListChainsRequest(), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_plaintext_without_identity_is_unauthenticated(pki_dir: Path) -> None:
    binding = ServiceBinding(
        chain_pb2.DESCRIPTOR.services_by_name["ChainService"],
        chain_pb2_grpc.add_ChainServiceServicer_to_server,
        _ProbeServicer(),
    )
    settings = _settings(pki_dir, plaintext=True, trusted_identity_header="x-mesh-identity")
    running = await start_server(settings, [binding])
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            stub = chain_pb2_grpc.ChainServiceStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.ListChains(chain_pb2.ListChainsRequest(), timeout=5)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
            resp = await stub.ListChains(
                chain_pb2.ListChainsRequest(), timeout=5, metadata=(("x-mesh-identity", "alice;initiator"),)
            )
            assert resp.chains[0].name == "alice"
    finally:
        await running.stop(0)


async def test_domain_error_maps_to_status_and_back_to_its_kind(pki_dir: Path, server: RunningServer) -> None:
    p = person(pki_dir, "alice")
    channel = grpc.aio.secure_channel(
        f"127.0.0.1:{server.port}", channel_credentials(pki_dir / "ca.crt", p.cert, p.key)
    )
    async with _ChainClient(channel, deadline=5) as client:
        with pytest.raises(InvalidArgument) as e:
            await client.call("ValidateIntent", chain_pb2.ValidateIntentRequest())
        assert "deposit data root does not match" in str(e.value)
        assert e.value.details["remote_type"] == "InvalidArgument"
        with pytest.raises(PermissionDenied):
            await client.call("DecodeTransaction", chain_pb2.DecodeTransactionRequest())


async def test_unexpected_error_is_internal_without_internals(pki_dir: Path, server: RunningServer) -> None:
    async with _channel(pki_dir, server.port, "alice") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await chain_pb2_grpc.ChainServiceStub(ch).BuildTransaction(
                chain_pb2.BuildTransactionRequest(), timeout=5
            )
    assert e.value.code() == grpc.StatusCode.INTERNAL
    assert "internals" not in (e.value.details() or "")
    assert "ref" in (e.value.details() or "")


async def test_health_and_reflection(pki_dir: Path, server: RunningServer) -> None:
    async with _channel(pki_dir, server.port, "eve") as ch:  # any authenticated caller
        health = health_pb2_grpc.HealthStub(ch)
        resp = await health.Check(
            health_pb2.HealthCheckRequest(service="custos.chain.v1.ChainService"), timeout=5
        )
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)

        async def one() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        names = []
        async for r in refl.ServerReflectionInfo(one(), timeout=5):
            names = [s.name for s in r.list_services_response.service]
    assert "custos.chain.v1.ChainService" in names


def test_an_rpc_without_declared_roles_refuses_to_start() -> None:
    class Incomplete(_ProbeServicer):
        ROLES: ClassVar[dict[str, frozenset[str]]] = {"ListChains": frozenset({"initiator"})}

    binding = ServiceBinding(
        chain_pb2.DESCRIPTOR.services_by_name["ChainService"],
        chain_pb2_grpc.add_ChainServiceServicer_to_server,
        Incomplete(),
    )
    with pytest.raises(ValueError, match="declares no roles for: ValidateIntent"):
        binding.roles()


def test_failed_precondition_is_a_kind() -> None:
    from services.runtime.grpc_errors import status_for

    class Conflict(FailedPrecondition):
        pass

    assert status_for(Conflict("x")) == grpc.StatusCode.FAILED_PRECONDITION
