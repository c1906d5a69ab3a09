"""Records refused calls (unauthenticated, permission denied) in the audit trail."""

from __future__ import annotations

from services.audit.writer import AuditWriter
from services.runtime.auth import Principal
from services.runtime.errors import CustosError, Unauthenticated
from services.runtime.server import DenialHook


def denial_recorder(audit: AuditWriter) -> DenialHook:
    async def record(principal: Principal | None, method: str, error: CustosError) -> None:
        action = "auth.unauthenticated" if isinstance(error, Unauthenticated) else "auth.permission_denied"
        await audit.arecord(
            action,
            f"rpc:{method}",
            "refused",
            {"reason": error.message},
            actor=principal.identity if principal else "anonymous",
        )

    return record
