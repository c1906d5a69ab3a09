"""Serving a servicer over mTLS, for the benchmarks' gRPC sections."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from services.runtime.client import BaseClient, open_channel
from services.runtime.pki import ensure_service_certs
from services.runtime.server import RunningServer, ServiceBinding, start_server
from services.runtime.settings import ServiceSettings, TLSSettings


def new_pki(parent: Path | None = None) -> Path:
    """A fresh development PKI (CA, every service's and the worker's certificate, with their
    private keys): in ``parent`` when given, else a new temporary folder. The caller removes it."""
    pki = parent / "pki" if parent else Path(tempfile.mkdtemp(prefix="custos-bench-pki-"))
    ensure_service_certs(pki)
    return pki


def server_tls(pki: Path, service: str) -> TLSSettings:
    """The TLS settings of ``service`` serving with its certificate from ``pki``."""
    return TLSSettings(pki_dir=pki, cert=pki / f"{service}.crt", key=pki / f"{service}.key")


async def serve(binding: ServiceBinding, service: str, pki: Path) -> tuple[RunningServer, Path]:
    """Starts ``binding`` in this process on a free port, with its certificate from ``pki``
    (see :func:`new_pki`; servers in several processes share one); returns (server, pki dir)."""
    settings = ServiceSettings(state_dir=pki.parent, listen="127.0.0.1:0", tls=server_tls(pki, service))
    return await start_server(settings, [binding]), pki


def client(cls: type[BaseClient], port: int, pki: Path, caller: str) -> Any:
    """A typed client calling as the service identity ``caller`` (e.g. "staking")."""
    tls = TLSSettings(pki_dir=pki, ca_cert=pki / "ca.crt")
    channel = open_channel(f"127.0.0.1:{port}", tls, cert=pki / f"{caller}.crt", key=pki / f"{caller}.key")
    return cls(channel, deadline=10)
