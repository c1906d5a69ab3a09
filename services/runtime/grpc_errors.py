"""The one mapping between custos errors and gRPC status codes, both directions.

Servers: the interceptor turns a raised :class:`CustosError` into its status,
with the error's class name in the ``custos-error`` trailer and its message
bounded (:func:`bounded_message`), whatever a handler put in it. Clients: typed
clients turn ``grpc.RpcError`` back into the matching error kind. Anything else
a handler raises becomes INTERNAL with a reference, never a stack trace.
"""

from __future__ import annotations

import re
from typing import Any

import grpc

from services.runtime.errors import (
    AlreadyExists,
    CustosError,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)

ERROR_TRAILER = "custos-error"
#: The longest status message a caller sees: a request can carry megabytes, and an error that
#: echoes one of its fields must not send it back (past 16 KB of metadata, gRPC drops the call).
MAX_STATUS_MESSAGE = 300
#: A run of characters without a space longer than this (a 0x-hex BLS key is 98) is an echoed value: cut.
_MAX_WORD = 128
_LONG_WORD = re.compile(rf"\S{{{_MAX_WORD + 1},}}")

_KIND_TO_STATUS: tuple[tuple[type[CustosError], grpc.StatusCode], ...] = (
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (Internal, grpc.StatusCode.INTERNAL),
)

_STATUS_TO_KIND: dict[grpc.StatusCode, type[CustosError]] = {s: k for k, s in _KIND_TO_STATUS}
_STATUS_TO_KIND[grpc.StatusCode.DEADLINE_EXCEEDED] = Unavailable
_STATUS_TO_KIND[grpc.StatusCode.RESOURCE_EXHAUSTED] = Unavailable
_STATUS_TO_KIND[grpc.StatusCode.ABORTED] = FailedPrecondition
_STATUS_TO_KIND[grpc.StatusCode.OUT_OF_RANGE] = InvalidArgument


def bounded_message(text: str) -> str:
    """``text`` fit for a status message: one line, a long word (an echoed value) cut with an
    ellipsis, the whole at most :data:`MAX_STATUS_MESSAGE` characters."""
    text = _LONG_WORD.sub(lambda m: m.group()[: _MAX_WORD - 1] + "…", text)
    if len(text) > MAX_STATUS_MESSAGE:
        text = text[: MAX_STATUS_MESSAGE - 1] + "…"
    return "".join(c if c.isprintable() else " " for c in text)


def status_for(error: CustosError) -> grpc.StatusCode:
    """The status code of an error, from the first kind it subclasses."""
    for kind, status in _KIND_TO_STATUS:
        if isinstance(error, kind):
            return status
    return grpc.StatusCode.INTERNAL


class RemoteError(CustosError):
    """Mixin naming the remote error class (``remote_type``) and status of a failed call."""

    remote_type: str = ""
    status: grpc.StatusCode = grpc.StatusCode.UNKNOWN


_remote_classes: dict[type[CustosError], type[CustosError]] = {}


def error_from_rpc(error: grpc.RpcError, service: str) -> CustosError:
    """Turns a failed call into the custos error kind of its status.

    The result is an instance of the kind (so ``except InvalidArgument`` works across
    process boundaries) and of :class:`RemoteError`, carrying the server's error name.
    """
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = bounded_message((error.details() if hasattr(error, "details") else "") or str(code))
    kind = _STATUS_TO_KIND.get(code, Internal)
    cls = _remote_classes.get(kind)
    if cls is None:
        cls = type(f"Remote{kind.__name__}", (RemoteError, kind), {})
        _remote_classes[kind] = cls
    remote_type = ""
    trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for item in trailers or ():
        pair: Any = item
        if pair[0] == ERROR_TRAILER:
            remote_type = str(pair[1])
    out = cls(f"{service}: {details}", details={"status": code.name, "remote_type": remote_type})
    assert isinstance(out, RemoteError)
    out.remote_type = remote_type
    out.status = code
    return out
