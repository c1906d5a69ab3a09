"""The one way custos processes (the staking service, the worker) connect to Temporal.

Temporal is not trusted with anything that moves funds (the signer checks every
approval itself), but it carries the intents' state: in production the connection
is TLS, and mTLS when the cluster asks for client certificates (``TemporalSettings``).
"""

from __future__ import annotations

from pathlib import Path

from temporalio.client import Client
from temporalio.service import RPCError, TLSConfig

from services.runtime.errors import InvalidArgument, Unavailable
from services.runtime.settings import TemporalSettings
from services.runtime.temporal_tracing import temporal_interceptors


def _read(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as e:
        raise InvalidArgument(f"cannot read the Temporal {what} {path}: {e.strerror}") from None


def tls_config(settings: TemporalSettings) -> TLSConfig | bool:
    """What ``Client.connect`` takes as ``tls``: False, or the CA, client pair and server name."""
    if not settings.tls:
        return False
    if (settings.client_cert is None) != (settings.client_key is None):
        raise InvalidArgument("temporal.client_cert and temporal.client_key go together")
    return TLSConfig(
        server_root_ca_cert=_read(settings.ca_cert, "CA certificate"),
        client_cert=_read(settings.client_cert, "client certificate"),
        client_private_key=_read(settings.client_key, "client key"),
        domain=settings.server_name or None,
    )


async def connect(settings: TemporalSettings) -> Client:
    """A client of the configured frontend and namespace, traced (see ``temporal_tracing``)."""
    try:
        return await Client.connect(
            settings.address,
            namespace=settings.namespace,
            tls=tls_config(settings),
            interceptors=temporal_interceptors(),
        )
    except RuntimeError as e:  # the core client's connection failure
        raise Unavailable(f"cannot reach Temporal at {settings.address}: {str(e)[:200]}") from None
    except RPCError as e:
        raise Unavailable(
            f"Temporal at {settings.address} refused the connection: {e.message[:200]}"
        ) from None
