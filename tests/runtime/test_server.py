"""The shared server runtime: mTLS, roles, health, reflection, error mapping."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.pb.custos.chain.v1 import chain_pb2, chain_pb2_grpc
from services.pb.custos.common.v1 import common_pb2
from services.runtime.auth import current_principal
from services.runtime.client import BaseClient, channel_credentials
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from services.runtime.grpc_errors import MAX_STATUS_MESSAGE, bounded_message
from services.runtime.server import (
    AuthInterceptor,
    RunningServer,
    ServiceBinding,
    server_credentials,
    start_server,
)
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
        "GetWaitStatus": frozenset({"svc:worker"}),
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
        # echoes what the caller sent, as many a refusal does
        raise NotFound(f"no transaction {request.tx_hash!r} on chain {request.chain!r}")

    async def ReconcileVaults(self, request: Any, context: Any) -> Any:
        raise NotImplementedError

    async def AcknowledgeReconcileAlert(self, request: Any, context: Any) -> Any:
        raise NotImplementedError

    async def ReleaseNonce(self, request: Any, context: Any) -> Any:
        raise NotImplementedError

    async def GetWaitStatus(self, request: Any, context: Any) -> Any:
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


# --- bodies that do not parse, and bounded statuses ---------------------------------------------

GARBAGE = b"\xff" * 11  # no protobuf message starts with an 11-byte varint tag
LIST_CHAINS = "/custos.chain.v1.ChainService/ListChains"


def _tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]


async def test_a_body_that_does_not_parse_is_invalid_argument_once_the_caller_is_admitted(
    pki_dir: Path, server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with _channel(pki_dir, server.port, "alice") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await ch.unary_unary(LIST_CHAINS, None, None)(GARBAGE, timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details() == "the request body of ListChains does not parse"
    # an unauthorised caller learns nothing from the body: refused before it is read
    async with _channel(pki_dir, server.port, "bob") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await ch.unary_unary(LIST_CHAINS, None, None)(GARBAGE, timeout=5)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert _tracebacks(caplog) == []


async def test_an_echoed_value_is_cut_and_the_status_bounded(pki_dir: Path, server: RunningServer) -> None:
    huge = "0x" + "ab" * 10_000
    request = chain_pb2.GetTransactionStatusRequest(chain="eth\nnet", tx_hash=huge)
    async with _channel(pki_dir, server.port, "carol") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await chain_pb2_grpc.ChainServiceStub(ch).GetTransactionStatus(request, timeout=5)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND  # not the RESOURCE_EXHAUSTED of a 20 KB status
    details = e.value.details() or ""
    assert details.startswith("no transaction '0xabab") and "…" in details
    assert details.endswith("on chain 'eth\\nnet'")  # the rest of the message survives the cut
    assert len(details) <= MAX_STATUS_MESSAGE


async def test_a_string_holding_a_nul_is_invalid_argument_naming_the_field(
    pki_dir: Path, server: RunningServer
) -> None:
    """PostgreSQL's text holds no NUL: as a query parameter it failed the query (INTERNAL)."""
    async with _channel(pki_dir, server.port, "carol") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await chain_pb2_grpc.ChainServiceStub(ch).GetTransactionStatus(
                chain_pb2.GetTransactionStatusRequest(chain="a\x00b", tx_hash="0x00"), timeout=5
            )
    assert (e.value.code(), e.value.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "chain holds a NUL character",
    )
    spec = common_pb2.IntentSpec(vault_id="vault\x00-1")
    async with _channel(pki_dir, server.port, "alice") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await chain_pb2_grpc.ChainServiceStub(ch).BuildTransaction(
                chain_pb2.BuildTransactionRequest(spec=spec), timeout=5
            )
    assert e.value.details() == "spec.vault_id holds a NUL character"


def test_bounded_message() -> None:
    assert bounded_message("deposit data root does not match") == "deposit data root does not match"
    assert bounded_message("two\nlines\x00") == "two lines "
    digest = "ab" * 32
    assert bounded_message(f"version {digest} is ACTIVE") == f"version {digest} is ACTIVE"  # kept whole
    spaced = bounded_message("word " * 1000)
    assert len(spaced) == MAX_STATUS_MESSAGE and spaced.endswith("…")
    assert bounded_message("x" * 5_000_000) == "x" * 127 + "…"  # one long word: an echoed value


class _Probe:
    """One RPC of each kind (protobuf Timestamps in, Timestamps out) behind the custos interceptor."""

    KINDS = ("Unary", "ServerStream", "ClientStream", "BidiStream")

    @staticmethod
    async def unary(request: Timestamp, context: Any) -> Timestamp:
        return request

    @staticmethod
    async def server_stream(request: Timestamp, context: Any) -> AsyncIterator[Timestamp]:
        yield request

    @staticmethod
    async def client_stream(requests: AsyncIterator[Timestamp], context: Any) -> Timestamp:
        return [r async for r in requests][-1]

    @staticmethod
    async def bidi_stream(requests: AsyncIterator[Timestamp], context: Any) -> AsyncIterator[Timestamp]:
        async for r in requests:
            yield r

    @classmethod
    def handler(cls) -> grpc.GenericRpcHandler:
        parse, serialize = Timestamp.FromString, Timestamp.SerializeToString
        return grpc.method_handlers_generic_handler(
            "test.Probe",
            {
                "Unary": grpc.unary_unary_rpc_method_handler(cls.unary, parse, serialize),
                "ServerStream": grpc.unary_stream_rpc_method_handler(cls.server_stream, parse, serialize),
                "ClientStream": grpc.stream_unary_rpc_method_handler(cls.client_stream, parse, serialize),
                "BidiStream": grpc.stream_stream_rpc_method_handler(cls.bidi_stream, parse, serialize),
            },
        )


@pytest.fixture
async def probe(pki_dir: Path) -> AsyncIterator[int]:
    roles = {f"/test.Probe/{kind}": frozenset({"initiator"}) for kind in _Probe.KINDS}
    server = grpc.aio.server(interceptors=[AuthInterceptor(roles)])
    server.add_generic_rpc_handlers((_Probe.handler(),))
    port = server.add_secure_port("127.0.0.1:0", server_credentials(_settings(pki_dir).tls))
    await server.start()
    yield port
    await server.stop(0)


async def _call(channel: grpc.aio.Channel, kind: str, body: bytes) -> tuple[grpc.StatusCode, list[bytes]]:
    """Sends ``body`` (as the one message of a stream, for streaming requests); the status and replies."""
    path = f"/test.Probe/{kind}"

    async def bodies() -> AsyncIterator[bytes]:
        yield body

    try:
        if kind == "Unary":
            return grpc.StatusCode.OK, [await channel.unary_unary(path, None, None)(body, timeout=5)]
        if kind == "ServerStream":
            return grpc.StatusCode.OK, [
                r async for r in channel.unary_stream(path, None, None)(body, timeout=5)
            ]
        if kind == "ClientStream":
            return grpc.StatusCode.OK, [await channel.stream_unary(path, None, None)(bodies(), timeout=5)]
        return grpc.StatusCode.OK, [
            r async for r in channel.stream_stream(path, None, None)(bodies(), timeout=5)
        ]
    except grpc.aio.AioRpcError as e:
        return e.code(), []


@pytest.mark.parametrize("kind", _Probe.KINDS)
async def test_every_kind_of_rpc_admits_the_caller_before_reading_the_body(
    pki_dir: Path, probe: int, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Unary and streaming alike: a client-streaming RPC used to pass the interceptor unchecked."""
    caplog.set_level(logging.WARNING)
    valid = Timestamp(seconds=42).SerializeToString()
    async with _channel(pki_dir, probe, "alice") as ch:
        assert await _call(ch, kind, valid) == (grpc.StatusCode.OK, [valid])
        assert (await _call(ch, kind, GARBAGE))[0] == grpc.StatusCode.INVALID_ARGUMENT
    async with _channel(pki_dir, probe, "bob") as ch:
        assert (await _call(ch, kind, valid))[0] == grpc.StatusCode.PERMISSION_DENIED
        assert (await _call(ch, kind, GARBAGE))[0] == grpc.StatusCode.PERMISSION_DENIED
    assert _tracebacks(caplog) == []
