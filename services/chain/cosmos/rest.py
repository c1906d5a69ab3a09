"""A minimal async client of a Cosmos SDK node's REST (LCD) API (stdlib HTTP in a worker thread).

The REST API is the gRPC gateway every Cosmos SDK node serves; custos reads accounts,
balances, delegations, proposals and transactions from it, simulates and broadcasts
through it. An answer of the node's own (a JSON object, also with a 4xx or 5xx status) is
returned as it is: the caller reads ``code`` and ``message``. No answer at all raises
:class:`NodeUnavailable`.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from services.chain.errors import NodeUnavailable


class RestClient:
    """GETs and POSTs JSON on one node's REST API."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError("the node's REST URL must be http:// or https://")
        self.url = url.rstrip("/")
        self.timeout = timeout

    def request_sync(self, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON answer) of GET ``path`` (or POST ``body``)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            self.url + path, data=data, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                return int(resp.status), _json_object(resp.read(), path)
        except urllib.error.HTTPError as e:
            try:
                return int(e.code), _json_object(e.read(), path)
            except NodeUnavailable:
                raise NodeUnavailable(f"node REST {path.split('?')[0]}: HTTP {e.code}") from None
        except (urllib.error.URLError, OSError) as e:
            raise NodeUnavailable(f"node at {self.url} unreachable for {path.split('?')[0]}: {e}") from None

    async def get(self, path: str) -> tuple[int, dict[str, Any]]:
        return await asyncio.to_thread(self.request_sync, path)

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return await asyncio.to_thread(self.request_sync, path, body)


def quote(segment: str) -> str:
    """A path segment of a REST URL (addresses and hashes are plain, but never trust that)."""
    return urllib.parse.quote(segment, safe="")


def _json_object(raw: bytes, path: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        raise NodeUnavailable(f"node REST {path.split('?')[0]} answered something that is not JSON") from None
    if not isinstance(value, dict):
        raise NodeUnavailable(f"node REST {path.split('?')[0]} answered JSON that is not an object")
    return value
