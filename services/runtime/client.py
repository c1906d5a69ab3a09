"""Channels and the base of every typed client.

Each service's ``client.py`` subclasses :class:`BaseClient`: every call carries a
deadline, and a failed call comes back as the custos error kind of its status
(``raise ... from`` the ``grpc.RpcError``), never as a raw gRPC exception.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import grpc

from services.runtime.grpc_errors import error_from_rpc
from services.runtime.settings import ServiceSettings, TLSSettings

Resp = TypeVar("Resp")


def channel_credentials(ca_cert: Path, cert: Path, key: Path) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=ca_cert.read_bytes(),
        private_key=key.read_bytes(),
        certificate_chain=cert.read_bytes(),
    )


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
        try:
            return await method(request, timeout=deadline or self.deadline, metadata=self._metadata)
        except grpc.RpcError as e:
            raise error_from_rpc(e, self.service) from e

    async def stream(self, rpc: str, request: Any, *, deadline: float | None = None) -> AsyncIterator[Any]:
        method = getattr(self.stub, rpc)
        try:
            async for item in method(request, timeout=deadline, metadata=self._metadata):
                yield item
        except grpc.RpcError as e:
            raise error_from_rpc(e, self.service) from e

    async def close(self) -> None:
        await self.channel.close(None)

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
