"""Typed client of the audit service: a deadline on every call, errors as custos errors."""

from __future__ import annotations

from services.pb.custos.audit.v1 import audit_pb2_grpc
from services.runtime.client import BaseClient


class AuditClient(BaseClient):
    """Calls custos.audit.v1.AuditService; e.g. ``await client.call("Rpc", request)``."""

    service = "audit"
    stub_class = audit_pb2_grpc.AuditServiceStub
