"""custos connects to Temporal over TLS (and mTLS) when configured.

The dev server speaks plaintext only, so a TLS front (a real TLS 1.3 socket with
ALPN h2, certificates from the custos PKI, requiring a client certificate) forwards
bytes to it: the real Temporal client then talks to the real server through TLS.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.testing import WorkflowEnvironment

from services.runtime.errors import InvalidArgument, Unavailable
from services.runtime.pki import ensure_ca, issue
from services.runtime.settings import TemporalSettings
from services.runtime.temporal import connect


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


@pytest.fixture
async def tls_front(dev_server_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """``host:port`` of a TLS front requiring client certificates, and the PKI folder."""
    pki = tmp_path / "pki"
    ca = ensure_ca(pki)
    server = issue(pki, "temporal-frontend", (), file_stem="frontend")
    issue(pki, "svc:staking", ("svc:staking",), file_stem="staking")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca.cert))
    context.load_cert_chain(server.cert, server.key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["h2"])
    upstream_host, upstream_port = dev_server_env.client.service_client.config.target_host.rsplit(":", 1)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(upstream_host, int(upstream_port))
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    front = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    port = front.sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}", pki
    finally:
        front.close()


async def test_a_client_with_the_ca_and_its_certificate_connects(tls_front: tuple[str, Path]) -> None:
    address, pki = tls_front
    settings = TemporalSettings(
        address=address,
        tls=True,
        ca_cert=pki / "ca.crt",
        client_cert=pki / "staking.crt",
        client_key=pki / "staking.key",
        server_name="localhost",
    )
    client = await connect(settings)
    info = await client.workflow_service.get_system_info(GetSystemInfoRequest())
    assert info.server_version


async def test_plaintext_or_an_unknown_ca_gets_nothing(tls_front: tuple[str, Path], tmp_path: Path) -> None:
    address, pki = tls_front
    with pytest.raises(Unavailable):
        await asyncio.wait_for(connect(TemporalSettings(address=address)), 30)
    other = ensure_ca(tmp_path / "other-pki")
    wrong_ca = TemporalSettings(
        address=address,
        tls=True,
        ca_cert=other.cert,
        client_cert=pki / "staking.crt",
        client_key=pki / "staking.key",
        server_name="localhost",
    )
    with pytest.raises(Unavailable):
        await asyncio.wait_for(connect(wrong_ca), 30)
    without_client_cert = TemporalSettings(
        address=address, tls=True, ca_cert=pki / "ca.crt", server_name="localhost"
    )
    with pytest.raises(Unavailable):
        await asyncio.wait_for(connect(without_client_cert), 30)


def test_settings_that_cannot_work_are_one_clear_error(tmp_path: Path) -> None:
    from services.runtime.temporal import tls_config

    with pytest.raises(InvalidArgument, match="go together"):
        tls_config(TemporalSettings(tls=True, client_cert=tmp_path / "a.crt"))
    with pytest.raises(InvalidArgument, match="cannot read the Temporal CA certificate"):
        tls_config(TemporalSettings(tls=True, ca_cert=tmp_path / "missing.crt"))
    assert tls_config(TemporalSettings()) is False
