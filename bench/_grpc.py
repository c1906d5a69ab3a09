"""Serving a servicer in-process over mTLS, for the benchmarks' gRPC sections."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from services.runtime.client import BaseClient, open_channel
from services.runtime.pki import ensure_service_certs
from services.runtime.server import RunningServer, ServiceBinding, start_server
from services.runtime.settings import ServiceSettings, TLSSettings


async def serve(binding: ServiceBinding, service: str) -> tuple[RunningServer, Path]:
    """Starts ``binding`` on a free port with a fresh development PKI; returns (server, pki dir)."""
    pki = Path(tempfile.mkdtemp(prefix="custos-bench-pki-"))
    ensure_service_certs(pki)
    settings = ServiceSettings(
        state_dir=pki.parent,
        listen="127.0.0.1:0",
        tls=TLSSettings(pki_dir=pki, cert=pki / f"{service}.crt", key=pki / f"{service}.key"),
    )
    return await start_server(settings, [binding]), pki


def client(cls: type[BaseClient], port: int, pki: Path, caller: str) -> Any:
    """A typed client calling as the service identity ``caller`` (e.g. "staking")."""
    tls = TLSSettings(pki_dir=pki, ca_cert=pki / "ca.crt")
    channel = open_channel(f"127.0.0.1:{port}", tls, cert=pki / f"{caller}.crt", key=pki / f"{caller}.key")
    return cls(channel, deadline=10)
