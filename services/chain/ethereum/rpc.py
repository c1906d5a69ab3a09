"""A minimal async Ethereum JSON-RPC client (stdlib HTTP in a worker thread).

No dependency beyond the standard library; one blocking request per call runs in
``asyncio.to_thread`` so the event loop never waits on the node.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import urllib.error
import urllib.request
from typing import Any

from services.chain.errors import NodeUnavailable


class RpcError(Exception):
    """The node answered with a JSON-RPC error object."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message
        self.data = data


class JsonRpcClient:
    """Calls ``method(params)`` on one node. Transport failures raise ``NodeUnavailable``."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError("the node's RPC URL must be http:// or https://")
        self.url = url
        self.timeout = timeout
        self._ids = itertools.count(1)

    def call_sync(self, method: str, params: list[Any] | None = None) -> Any:
        body = json.dumps(
            {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params or []}
        ).encode()
        req = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            self.url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                reply = json.loads(resp.read())
        except (urllib.error.URLError, OSError, json.JSONDecodeError) as e:
            raise NodeUnavailable(f"node at {self.url} unreachable for {method}: {e}") from e
        if "error" in reply and reply["error"] is not None:
            err = reply["error"]
            raise RpcError(int(err.get("code", 0)), str(err.get("message", "")), err.get("data"))
        return reply.get("result")

    async def call(self, method: str, *params: Any) -> Any:
        return await asyncio.to_thread(self.call_sync, method, list(params))
