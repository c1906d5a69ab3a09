"""Who is calling: the principal from the caller's mTLS certificate, and role checks.

A certificate from the custos CA names its holder (subject CN) and roles (OU).
Each servicer declares, per RPC, the roles that may call it (``ROLES``); the
interceptor in ``runtime.server`` enforces that before the handler runs. A method
without a declaration is refused: new RPCs are closed until someone opens them.
"""

from __future__ import annotations

import contextvars
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from services.runtime.errors import PermissionDenied, Unauthenticated
from services.runtime.pki import identity_of

#: RPCs any authenticated principal may call (health checking and reflection).
PUBLIC_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)


@dataclass(frozen=True)
class Principal:
    identity: str
    roles: frozenset[str]

    def has_any(self, roles: frozenset[str]) -> bool:
        return bool(self.roles & roles)


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("custos_principal", default=None)


def current_principal() -> Principal:
    """The principal of the RPC being served (set by the interceptor)."""
    p = _current.get()
    if p is None:
        raise Unauthenticated("no authenticated caller")
    return p


def set_principal(p: Principal | None) -> contextvars.Token[Principal | None]:
    return _current.set(p)


def reset_principal(token: contextvars.Token[Principal | None]) -> None:
    _current.reset(token)


@lru_cache(maxsize=1024)
def _from_pem(digest: str, pem: bytes) -> Principal:  # digest keys the cache cheaply
    identity, roles = identity_of(pem)
    return Principal(identity, roles)


def principal_from_auth_context(ctx: Mapping[str, list[bytes]]) -> Principal:
    """Reads the verified peer certificate gRPC put in the auth context."""
    pems = ctx.get("x509_pem_cert") or []
    if not pems:
        raise Unauthenticated("a client certificate from the custos CA is required")
    pem = pems[0]
    p = _from_pem(hashlib.sha256(pem).hexdigest(), pem)
    if not p.identity:
        raise Unauthenticated("the client certificate names no identity (CN)")
    return p


def principal_from_header(value: str) -> Principal:
    """Identity set by a trusted mesh sidecar in plaintext mode: ``identity;role1,role2``."""
    identity, _, roles = value.partition(";")
    if not identity.strip():
        raise Unauthenticated("the trusted identity header is empty")
    return Principal(identity.strip(), frozenset(r.strip() for r in roles.split(",") if r.strip()))


def authorise(principal: Principal, method: str, roles: Mapping[str, frozenset[str]]) -> None:
    """Raises PermissionDenied unless ``principal`` may call ``method`` (``/pkg.Service/Rpc``)."""
    service, _, rpc = method.lstrip("/").partition("/")
    if service in PUBLIC_SERVICES:
        return
    allowed = roles.get(method)
    if allowed is None:
        raise PermissionDenied(f"{rpc} declares no roles and is closed", details={"method": method})
    if not principal.has_any(allowed):
        raise PermissionDenied(
            f"{principal.identity} may not call {rpc} (needs one of: {', '.join(sorted(allowed))})",
            details={"method": method, "identity": principal.identity},
        )
