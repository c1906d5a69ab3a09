"""The gRPC server every custos service runs on.

``grpc.aio`` with mTLS (client certificates from the custos CA required),
standard health checking and reflection, per-RPC role checks, request bodies
parsed only once the caller is admitted, the domain-error to status mapping, and
graceful shutdown on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import grpc
from google.protobuf.descriptor import FieldDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.runtime.auth import (
    Principal,
    authorise,
    principal_from_auth_context,
    principal_from_header,
    reset_principal,
    set_principal,
)
from services.runtime.errors import CustosError, InvalidArgument, Unauthenticated
from services.runtime.grpc_errors import ERROR_TRAILER, bounded_message, status_for
from services.runtime.logs import CURRENT_INTENT
from services.runtime.settings import ServiceSettings, TLSSettings
from services.runtime.telemetry import annotate, annotate_message, mark_error, server_span, tracing_on

log = logging.getLogger("custos.server")

#: Called for every refused call: (principal or None, method, error). Must not raise.
DenialHook = Callable[[Principal | None, str, CustosError], Awaitable[None]]


@dataclass(frozen=True)
class ServiceBinding:
    """A servicer, the generated function that adds it, and its service descriptor."""

    descriptor: ServiceDescriptor
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    servicer: Any

    @property
    def name(self) -> str:
        return self.descriptor.full_name

    def roles(self) -> dict[str, frozenset[str]]:
        declared: Mapping[str, frozenset[str]] = getattr(self.servicer, "ROLES", {})
        missing = [m.name for m in self.descriptor.methods if m.name not in declared]
        if missing:
            raise ValueError(f"{self.name} declares no roles for: {', '.join(missing)}")
        return {f"/{self.name}/{m.name}": frozenset(declared[m.name]) for m in self.descriptor.methods}


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates the caller, enforces the RPC's roles, maps errors to statuses."""

    def __init__(
        self,
        roles: Mapping[str, frozenset[str]],
        *,
        identity_header: str = "",
        on_denied: DenialHook | None = None,
    ) -> None:
        self._roles = dict(roles)
        self._identity_header = identity_header.lower()
        self._on_denied = on_denied

    def _principal(self, context: grpc.aio.ServicerContext) -> Principal:
        if self._identity_header:
            for key, value in context.invocation_metadata() or ():
                if key == self._identity_header:
                    return principal_from_header(str(value))
            raise Unauthenticated("no caller identity (plaintext mode needs the trusted identity header)")
        ctx = context.auth_context()
        return principal_from_auth_context({k: list(v) for k, v in ctx.items()})

    async def _admit(self, method: str, context: grpc.aio.ServicerContext) -> Principal:
        principal: Principal | None = None
        try:
            principal = self._principal(context)
            annotate(principal=principal.identity)
            authorise(principal, method, self._roles)
            return principal
        except CustosError as e:
            if self._on_denied is not None:
                try:
                    await self._on_denied(principal, method, e)
                except Exception:  # the refusal stands whatever the hook does
                    log.exception("denial hook failed")
            await _abort(context, e)
            raise AssertionError("unreachable") from e

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        method = details.method
        admit = self._admit
        inner: Any = handler.unary_unary or handler.unary_stream or handler.stream_unary
        inner = inner or handler.stream_stream
        # The body arrives as bytes and is parsed once the caller is admitted: an unauthorised
        # caller learns nothing from it, and one that does not parse is the caller's error.
        parse = _parser(method, handler.request_deserializer)

        def request_of(body: Any) -> Any:
            return _parsed(body, parse) if handler.request_streaming else parse(body)

        # custos RPCs only (health checks and reflection would drown the traces), and only when on
        traced = method in self._roles and tracing_on()
        behavior: Callable[..., Any]
        if handler.response_streaming:

            async def stream_response(body: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                async with _guarded(admit, method, context):
                    async for item in _items(inner(request_of(body), cast(Any, context))):
                        yield item

            behavior = _traced_stream(method, stream_response) if traced else stream_response
        else:

            async def unary_response(body: Any, context: grpc.aio.ServicerContext) -> Any:
                async with _guarded(admit, method, context):
                    return await inner(request_of(body), cast(Any, context))

            behavior = _traced_unary(method, unary_response) if traced else unary_response
        make = _HANDLERS[(handler.request_streaming, handler.response_streaming)]
        return make(behavior, request_deserializer=None, response_serializer=handler.response_serializer)


_HANDLERS: dict[tuple[bool, bool], Callable[..., grpc.RpcMethodHandler]] = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def _parser(method: str, deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    rpc = method.rsplit("/", 1)[-1]

    def parse(body: bytes) -> Any:
        if deserialize is None:
            return body
        try:
            request = deserialize(body)
        except Exception:  # protobuf's DecodeError, or whatever a deserializer raises on bad bytes
            raise InvalidArgument(f"the request body of {rpc} does not parse") from None
        # a NUL in a string is a NUL byte in the body: most bodies skip the walk
        if b"\x00" in body and isinstance(request, Message) and (where := _nul_field(request)):
            raise InvalidArgument(f"{where} holds a NUL character")
        annotate_message(request)  # the request's ids, on the server span when tracing
        if isinstance(intent := getattr(request, "intent_id", None), str):
            CURRENT_INTENT.set(intent)  # for the log lines of this call (its own task's context)
        return request

    return parse


def _nul_field(message: Message, prefix: str = "") -> str:
    """The first string field holding a NUL character ("" if none): PostgreSQL cannot store one
    in text, nor compare with one, so it would end a query as INTERNAL."""
    for field, value in message.ListFields():
        if field.type not in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_MESSAGE):
            continue
        entries = (
            [*value.keys(), *value.values()] if _is_map(field) else value if field.is_repeated else [value]
        )
        for entry in entries:
            if isinstance(entry, str) and "\x00" in entry:
                return prefix + field.name
            if isinstance(entry, Message) and (where := _nul_field(entry, f"{prefix}{field.name}.")):
                return where
    return ""


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and bool(field.message_type.GetOptions().map_entry)


async def _parsed(bodies: AsyncIterator[bytes], parse: Callable[[bytes], Any]) -> AsyncIterator[Any]:
    async for body in bodies:
        yield parse(body)


def _traced_unary(method: str, call: Callable[[Any, Any], Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """``call`` inside a SERVER span continuing the caller's trace; the response's ids go on it too."""

    async def traced(request: Any, context: grpc.aio.ServicerContext) -> Any:
        with server_span(method, context.invocation_metadata(), None):
            response = await call(request, context)
            annotate_message(response)
            return response

    return traced


def _traced_stream(
    method: str, call: Callable[[Any, Any], AsyncIterator[Any]]
) -> Callable[..., AsyncIterator[Any]]:
    async def traced(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        with server_span(method, context.invocation_metadata(), None):
            async for item in call(request, context):
                yield item

    return traced


async def _items(result: Any) -> AsyncIterator[Any]:
    """Streams from a handler that is an async generator or a coroutine using context.write."""
    if hasattr(result, "__aiter__"):
        async for item in result:
            yield item
    else:
        await result


@asynccontextmanager
async def _guarded(
    admit: Callable[[str, Any], Awaitable[Principal]], method: str, context: Any
) -> AsyncIterator[None]:
    """Admits the caller as the current principal, and ends any error as a gRPC status:
    CustosError by its kind, anything else as INTERNAL with a reference (logged, not shown)."""
    token = set_principal(await admit(method, context))
    try:
        yield
    except CustosError as e:
        await _abort(context, e)
    except (asyncio.CancelledError, grpc.aio.AbortError):
        raise
    except Exception as e:
        await _internal(context, method, e)
    finally:
        reset_principal(token)


async def _abort(context: Any, error: CustosError) -> None:
    kind = type(error).__name__
    mark_error(status_for(error), kind)
    context.set_trailing_metadata(((ERROR_TRAILER, kind),))
    await context.abort(status_for(error), bounded_message(error.message))


async def _internal(context: Any, method: str, error: Exception) -> None:
    ref = uuid.uuid4().hex[:12]
    log.error("unexpected error in %s (ref %s)", method, ref, exc_info=error)
    mark_error(grpc.StatusCode.INTERNAL, f"internal error (ref {ref})")
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error (ref {ref})")


def server_credentials(tls: TLSSettings) -> grpc.ServerCredentials:
    assert tls.ca_cert and tls.cert and tls.key
    try:
        return grpc.ssl_server_credentials(
            [(tls.key.read_bytes(), tls.cert.read_bytes())],
            root_certificates=tls.ca_cert.read_bytes(),
            require_client_auth=True,
        )
    except OSError as e:
        raise Unauthenticated(f"cannot read TLS material: {e.filename}: {e.strerror}") from None


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: Any
    names: tuple[str, ...]

    async def stop(self, grace: float = 5.0) -> None:
        for name in (*self.names, ""):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(grace)


async def start_server(
    settings: ServiceSettings,
    bindings: Sequence[ServiceBinding],
    *,
    listen: str | None = None,
    on_denied: DenialHook | None = None,
) -> RunningServer:
    """Starts serving ``bindings`` with health, reflection and auth; returns once listening."""
    roles: dict[str, frozenset[str]] = {}
    for b in bindings:
        roles.update(b.roles())
    tls = settings.tls
    header = tls.trusted_identity_header if tls.plaintext else ""
    if tls.plaintext and not header:
        log.warning("plaintext without a trusted identity header: every call will be UNAUTHENTICATED")
        header = "x-custos-no-identity"  # never set by anyone: refuse all
    server = grpc.aio.server(
        interceptors=[AuthInterceptor(roles, identity_header=header, on_denied=on_denied)],
        options=[("grpc.so_reuseport", 0)],
    )
    for b in bindings:
        b.add_to_server(b.servicer, server)
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = tuple(b.name for b in bindings)
    reflection.enable_server_reflection(
        (*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    address = listen or settings.listen
    if tls.plaintext:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, server_credentials(tls))
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    for name in (*names, ""):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving %s on port %d", ", ".join(names), port)
    return RunningServer(server, port, health_servicer, names)


async def serve_until_signalled(running: RunningServer, grace: float = 5.0) -> None:
    """Blocks until SIGTERM or SIGINT, then drains in-flight calls and stops."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("signal received: draining for up to %.0fs", grace)
    await running.stop(grace)
