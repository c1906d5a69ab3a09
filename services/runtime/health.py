"""Client-side health and reflection checks of a custos service."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.runtime.client import channel_credentials
from services.runtime.errors import Unavailable


@dataclass(frozen=True)
class Health:
    status: str
    services: list[str]


async def check_service(pki_dir: Path, target: str, service: str, who: str, timeout: float = 5) -> Health:
    """Asks ``target`` for the health of ``service`` and lists its services by reflection."""
    creds = channel_credentials(pki_dir / "ca.crt", pki_dir / f"{who}.crt", pki_dir / f"{who}.key")
    try:
        async with grpc.aio.secure_channel(target, creds) as ch:
            resp = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )

            async def ask():  # type: ignore[no-untyped-def]
                yield reflection_pb2.ServerReflectionRequest(list_services="")

            names: list[str] = []
            async for r in reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
                ask(), timeout=timeout
            ):
                names = [s.name for s in r.list_services_response.service]
    except grpc.RpcError as e:
        raise Unavailable(f"{target}: {e.code().name if hasattr(e, 'code') else e}") from e
    return Health(health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status), names)
