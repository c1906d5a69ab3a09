"""Channels and the base of every typed client.

Each service's ``client.py`` subclasses :class:`BaseClient`: every call carries a
deadline, and a failed call comes back as the custos error kind of its status
(``raise ... from`` the ``grpc.RpcError``), never as a raw gRPC exception. With
tracing on, each call is a CLIENT span whose context travels in the metadata.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import grpc

from services.runtime.errors import InvalidArgument
from services.runtime.grpc_errors import RemoteError, error_from_rpc
from services.runtime.settings import ServiceSettings, TLSSettings
from services.runtime.telemetry import annotate_message, client_span, mark_error, tracing_on

Resp = TypeVar("Resp")


def channel_credentials(ca_cert: Path, cert: Path, key: Path) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=_read_tls(ca_cert, "the CA certificate (tls.ca_cert)"),
        private_key=_read_tls(key, "the client key"),
        certificate_chain=_read_tls(cert, "the client certificate"),
    )


def _read_tls(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise InvalidArgument(f"cannot read {what} {path}: {e.strerror or e}") from None


def open_channel(
    target: str,
    tls: TLSSettings,
    *,
    cert: Path | None = None,
    key: Path | None = None,
    interceptors: list[Any] | None = None,
) -> grpc.aio.Channel:
    """An aio channel to ``target`` with this process's client certificate (or ``cert``/``key``)."""
    if tls.plaintext:
        return grpc.aio.insecure_channel(target, interceptors=interceptors)
    assert tls.ca_cert is not None
    creds = channel_credentials(tls.ca_cert, cert or tls.cert or Path(), key or tls.key or Path())
    return grpc.aio.secure_channel(target, creds, interceptors=interceptors)


def _failed(e: grpc.RpcError, service: str) -> Exception:
    error = error_from_rpc(e, service)
    if isinstance(error, RemoteError):  # on the CLIENT span, if any: the status and the server's kind
        mark_error(error.status, error.remote_type or type(error).__name__)
    return error


class BaseClient:
    """A typed client: one stub, a deadline on every call, errors as custos errors."""

    service: ClassVar[str] = ""
    stub_class: ClassVar[Any]

    def __init__(
        self, channel: grpc.aio.Channel, *, deadline: float = 10.0, metadata: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self.channel = channel
        self.deadline = deadline
        self._metadata = metadata
        self.stub = type(self).stub_class(channel)

    @classmethod
    def connect(
        cls,
        settings: ServiceSettings,
        *,
        target: str | None = None,
        cert: Path | None = None,
        key: Path | None = None,
    ) -> Any:
        """Opens a channel to this client's service as configured in ``settings.endpoints``."""
        channel = open_channel(target or settings.endpoints.of(cls.service), settings.tls, cert=cert, key=key)
        return cls(channel, deadline=settings.grpc_deadline_seconds)

    async def call(self, rpc: str, request: Any, *, deadline: float | None = None) -> Any:
        method = getattr(self.stub, rpc)
        with self._traced(rpc, request) as metadata:
            try:
                response = await method(request, timeout=deadline or self.deadline, metadata=metadata)
            except grpc.RpcError as e:
                raise _failed(e, self.service) from e
            annotate_message(response)  # e.g. the id of the intent just submitted
            return response

    async def stream(self, rpc: str, request: Any, *, deadline: float | None = None) -> AsyncIterator[Any]:
        method = getattr(self.stub, rpc)
        with self._traced(rpc, request) as metadata:
            try:
                async for item in method(request, timeout=deadline, metadata=metadata):
                    yield item
            except grpc.RpcError as e:
                raise _failed(e, self.service) from e

    @contextmanager
    def _traced(self, rpc: str, request: Any) -> Iterator[tuple[tuple[str, str], ...]]:
        """The call's metadata; with tracing on, inside a CLIENT span whose context it carries."""
        if not tracing_on():
            yield self._metadata
            return
        # /custos.signer.v1.SignerService/Sign: the request's package and the stub's service
        method = (
            f"/{request.DESCRIPTOR.file.package}.{type(self).stub_class.__name__.removesuffix('Stub')}/{rpc}"
        )
        with client_span(method, request) as context:
            yield self._metadata + context

    async def close(self) -> None:
        await self.channel.close(None)

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
