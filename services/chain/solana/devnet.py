"""The Solana devnet: LiteSVM behind our own JSON-RPC server on 127.0.0.1 (no validator runs here).

In-process (tests)::

    with SolanaDevnet() as net:
        AsyncClient(net.rpc_url) ...; net.fund(address, lamports); net.advance_epoch()

As its own process (the dev stack): ``python -m services.chain.solana.devnet --port N`` prints one line
``ready {"rpc_url": ..., "genesis_hash": ..., "vote_accounts": [...]}`` once it serves, and stops cleanly
on SIGTERM. The chain lives in memory: a restart is a new chain with a new genesis hash.

The server is stdlib HTTP (one thread per request, HTTP/1.0 so no connection outlives its request and
:meth:`SolanaDevnet.stop` leaves no thread behind); the chain holds one lock around LiteSVM.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any

from solders.pubkey import Pubkey

from services.chain.solana.chain import DEFAULT_SLOTS_PER_EPOCH, DevnetChain
from services.chain.solana.errors import FaucetRequestInvalid
from services.chain.solana.rpc import INVALID_REQUEST, RpcMethods, error_object
from services.families.config import ChainConfig, ChainFamily
from services.runtime.ports import free_port

DEVNET_CHAIN_NAME = "solana-devnet"
HOST = "127.0.0.1"
#: The registry's fee cap for this chain: ten one-signature transactions' worth.
MAX_FEE_LAMPORTS = 50_000
PARSE_ERROR = -32700
#: A request body larger than this is refused (a cluster's limit is 50 KB).
MAX_BODY_BYTES = 50 * 1024

log = logging.getLogger(__name__)


class _Handler(BaseHTTPRequestHandler):
    """POST / with a JSON-RPC request or batch; GET /health answers ``ok`` as Agave's does."""

    server: _RpcServer

    def do_GET(self) -> None:
        if self.path == "/health":
            self._reply(200, b"ok", "text/plain")
        else:
            self._reply(405, b"Used HTTP Method is not allowed. POST or OPTIONS is required", "text/plain")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._reply(413, b"request too large", "text/plain")
            return
        body = self.rfile.read(length)
        try:
            request = json.loads(body)
        except ValueError:
            answer: Any = _error(None, {"code": PARSE_ERROR, "message": "Parse error"})
        else:
            if isinstance(request, list):
                answer = [self.server.answer(r) for r in request] if request else _invalid(None)
            else:
                answer = self.server.answer(request)
        self._reply(200, json.dumps(answer).encode(), "application/json")

    def _reply(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


class _RpcServer(ThreadingHTTPServer):
    daemon_threads = False  # stop() joins every request thread: none is left behind
    block_on_close = True

    def __init__(self, port: int, methods: RpcMethods) -> None:
        super().__init__((HOST, port), _Handler)
        self.methods = methods

    def answer(self, request: Any) -> dict[str, Any]:
        if (
            not isinstance(request, dict)
            or request.get("jsonrpc") != "2.0"
            or not isinstance(request.get("method"), str)
        ):
            return _invalid(request.get("id") if isinstance(request, dict) else None)
        try:
            result = self.methods.call(request["method"], request.get("params"))
        except Exception as e:  # every failure becomes a JSON-RPC error object, never a trace
            return _error(request.get("id"), error_object(e))
        return {"jsonrpc": "2.0", "result": result, "id": request.get("id")}


def _error(request_id: Any, error: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "error": error, "id": request_id}


def _invalid(request_id: Any) -> dict[str, Any]:
    return _error(request_id, {"code": INVALID_REQUEST, "message": "Invalid request"})


class SolanaDevnet:
    """A LiteSVM devnet serving Solana JSON-RPC on 127.0.0.1: :meth:`start`, :meth:`stop`, or ``with``.

    Args:
        port: The port to serve on; a free one when None.
        slot_seconds: Wall time per slot (0.4 s like a cluster; less to expire blockhashes sooner).
        slots_per_epoch: Slots per epoch (:meth:`advance_epoch` does not wait for them).
        seed: Makes the genesis hash and vote accounts reproducible.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        slot_seconds: float = 0.4,
        slots_per_epoch: int = DEFAULT_SLOTS_PER_EPOCH,
        seed: bytes | None = None,
    ) -> None:
        self._port = port
        self._chain_args: dict[str, Any] = {
            "slot_seconds": slot_seconds,
            "slots_per_epoch": slots_per_epoch,
            "seed": seed,
        }
        self._chain: DevnetChain | None = None
        self._server: _RpcServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> SolanaDevnet:
        if self._server is not None:
            return self
        chain = DevnetChain(**self._chain_args)
        server = _RpcServer(self._port if self._port is not None else free_port(), RpcMethods(chain))
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="solana-devnet", daemon=True
        )
        thread.start()
        self._chain, self._server, self._thread = chain, server, thread
        return self

    def stop(self) -> None:
        """Stops serving, closes the port and joins every server thread."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()

    @property
    def running(self) -> bool:
        return self._server is not None

    def __enter__(self) -> SolanaDevnet:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def chain(self) -> DevnetChain:
        if self._chain is None:
            raise RuntimeError("the Solana devnet is not started")
        return self._chain

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the Solana devnet is not started")
        return int(self._server.server_address[1])

    @property
    def rpc_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def genesis_hash(self) -> str:
        return str(self.chain.genesis_hash)

    @property
    def vote_accounts(self) -> list[str]:
        """The vote accounts made at genesis (base58): stake can be delegated and redelegated between them."""
        return [str(v.vote) for v in self.chain.vote_accounts]

    def chain_config(self, name: str = DEVNET_CHAIN_NAME, **overrides: Any) -> ChainConfig:
        """The registry entry for this devnet (chain id = its genesis hash)."""
        return devnet_chain_config(self.rpc_url, self.genesis_hash, name=name, **overrides)

    def fund(self, address: str | Pubkey, lamports: int) -> str:
        """Sends ``lamports`` from the faucet to ``address``; the landed transaction's signature."""
        try:
            to = address if isinstance(address, Pubkey) else Pubkey.from_string(address)
        except ValueError as e:
            raise FaucetRequestInvalid(f"{address!r} is not a Solana address (base58 public key)") from e
        return str(self.chain.airdrop(to, lamports))

    def advance_epoch(self) -> int:
        """Moves the chain to the first slot of the next epoch (stake activates or cools down); the epoch."""
        return self.chain.advance_epoch()[0]

    def advance_slots(self, slots: int) -> int:
        """Moves the clock ``slots`` ahead at once; the new slot."""
        return self.chain.advance_slots(slots)


def devnet_chain_config(
    rpc_url: str, genesis_hash: str, *, name: str = DEVNET_CHAIN_NAME, **overrides: Any
) -> ChainConfig:
    """The registry entry of a Solana devnet served at ``rpc_url`` (also for one running as a process)."""
    values: dict[str, Any] = {
        "name": name,
        "family": ChainFamily.SOLANA,
        "chain_id": genesis_hash,
        "rpc_url": rpc_url,
        "confirmations": 1,
        "denom": "lamports",
        "display_unit": "SOL",
        "display_exponent": 9,
        "max_fee_wei": MAX_FEE_LAMPORTS,
    }
    values.update(overrides)
    return ChainConfig(**values)


def main(argv: list[str] | None = None) -> int:
    """Serves until SIGTERM or SIGINT; prints one ``ready {...}`` line once it serves."""
    parser = argparse.ArgumentParser(
        prog="python -m services.chain.solana.devnet", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (a free one by default)")
    parser.add_argument("--slot-ms", type=float, default=400.0, help="milliseconds per slot")
    parser.add_argument("--slots-per-epoch", type=int, default=DEFAULT_SLOTS_PER_EPOCH)
    args = parser.parse_args(argv)
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    net = SolanaDevnet(port=args.port, slot_seconds=args.slot_ms / 1000, slots_per_epoch=args.slots_per_epoch)
    with net:
        ready = {"rpc_url": net.rpc_url, "genesis_hash": net.genesis_hash, "vote_accounts": net.vote_accounts}
        print("ready " + json.dumps(ready), flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
