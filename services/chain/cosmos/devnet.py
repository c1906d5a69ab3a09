"""A local Cosmos SDK devnet: one ``injectived`` node with two bonded validators and a faucet.

The home (keys, genesis: 20 s unbonding and voting, validator 2 offline but bonded) is made by
:mod:`.genesis`. Every listener is on 127.0.0.1 at a port chosen free at set-up and kept in the
home (CometBFT RPC, P2P, gRPC, REST; the EVM JSON-RPC is off), and blocks come every ~200 ms.
Used by the tests (``tests/fixtures/injective.py``); ``custos dev up`` can spawn
:meth:`CosmosDevnet.command` as a stack process and serve :meth:`CosmosDevnet.chain_config`.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from services.chain.cosmos.genesis import (
    BECH32_PREFIX,
    DENOM,
    DEVNET_CHAIN_ID,
    INJ,
    MIN_GAS_PRICE,
    UNBONDING_SECONDS,
    DevnetSetupFailed,
    Genesis,
    Injectived,
    Ports,
    injectived_binary,
    make_home,
)
from services.chain.errors import BroadcastRejected, ChainError, NodeUnavailable
from services.families.config import ChainConfig, ChainFamily
from services.families.cosmos import addresses
from services.families.errors import AddressInvalid
from services.runtime.errors import InvalidArgument

__all__ = [
    "BECH32_PREFIX",
    "DENOM",
    "DEVNET_CHAIN_ID",
    "INJ",
    "MIN_GAS_PRICE",
    "CosmosDevnet",
    "DevnetSetupFailed",
    "DevnetValidator",
    "FaucetRequestInvalid",
    "Injectived",
    "Ports",
    "injectived_binary",
]

DEVNET_CHAIN_NAME = "cosmos-devnet"
BLOCK_TIME = "200ms"
#: The registry's fee cap for this chain: 0.01 INJ, ~62 million gas at the minimum price.
MAX_FEE = 10**16
#: What one faucet transfer (a bank send, ~142k gas) may use; it pays the minimum price.
FAUCET_GAS = 200_000
#: What submitting a text proposal (~175k gas) may use; it pays the minimum price.
PROPOSAL_GAS = 400_000
#: A proposal without messages must carry metadata (x/gov refuses one with neither).
PROPOSAL_METADATA = "custos devnet text proposal"
_LOG_LEVEL = "warn"


class FaucetRequestInvalid(ChainError, InvalidArgument):
    """A funding request names something that is not an address of this chain or not an amount."""


@dataclass(frozen=True)
class DevnetValidator:
    operator: str
    moniker: str
    status: str
    tokens: int
    jailed: bool


class CosmosDevnet:
    """One ``injectived`` node and its home: :meth:`setup`, :meth:`start`, :meth:`stop`, :meth:`cleanup`.

    Without ``home`` it works in a fresh temporary folder that :meth:`cleanup` removes; with
    one, set-up happens once and later starts resume that chain. ``stop`` leaves no process.
    """

    def __init__(
        self,
        home: Path | None = None,
        *,
        chain_id: str = DEVNET_CHAIN_ID,
        ports: Ports | None = None,
        binary: Injectived | None = None,
    ) -> None:
        self._owns_home = home is None
        self.home = Path(tempfile.mkdtemp(prefix="custos-cosmos-")) / "node" if home is None else home
        self._chain_id = chain_id
        self._ports = ports
        self._binary = binary
        self._genesis: Genesis | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._faucet_lock = threading.Lock()

    # -- set-up ------------------------------------------------------------------------------

    @property
    def binary(self) -> Injectived:
        if self._binary is None:
            self._binary = injectived_binary()
        return self._binary

    @property
    def genesis(self) -> Genesis:
        if self._genesis is None:
            self.setup()
        assert self._genesis is not None
        return self._genesis

    def setup(self) -> Genesis:
        """Makes the home (keys, genesis, gentxs), unless a finished one is there. It is built in
        a sibling folder and moved into place whole, so an interrupted set-up leaves no half home."""
        marker = self.home / "devnet.json"
        if marker.exists():
            self._genesis = Genesis.load(marker)
            return self._genesis
        partial = self.home.with_name(self.home.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.parent.mkdir(parents=True, exist_ok=True)
        genesis = make_home(self.binary, partial, self._chain_id, self._ports or Ports.free())
        genesis.dump(partial / "devnet.json")
        partial.rename(self.home)
        self._genesis = genesis
        return genesis

    # -- the node ------------------------------------------------------------------------------

    def command(self) -> list[str]:
        """The node's command line: every listener on 127.0.0.1, 200 ms blocks, no EVM JSON-RPC."""
        g = self.genesis
        return [
            str(self.binary.path),
            "start",
            "--home",
            str(self.home),
            "--rpc.laddr",
            f"tcp://127.0.0.1:{g.ports.rpc}",
            "--p2p.laddr",
            f"tcp://127.0.0.1:{g.ports.p2p}",
            "--p2p.pex=false",
            "--grpc.address",
            f"127.0.0.1:{g.ports.grpc}",
            "--api.address",
            f"tcp://127.0.0.1:{g.ports.api}",
            "--json-rpc.enable=false",
            "--rpc.pprof_laddr=",
            # Injective ignores config.toml's timeout_commit: this flag is what sets the block time.
            "--unsafe-consensus-timeout-commit",
            BLOCK_TIME,
            "--minimum-gas-prices",
            f"{MIN_GAS_PRICE}{DENOM}",
            "--log-level",
            _LOG_LEVEL,
        ]

    @property
    def log_path(self) -> Path:
        return self.home / "node.log"

    def start(self, timeout: float = 60.0) -> CosmosDevnet:
        if self._proc is not None:
            return self
        self.setup()
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self.command(),
                env=self.binary.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            self.wait_ready(timeout, process=self._proc)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float = 60.0, process: subprocess.Popen[bytes] | None = None) -> None:
        """Returns once the node has committed a block and its REST and gRPC listeners answer."""
        deadline = time.monotonic() + timeout
        while True:
            if process is not None and process.poll() is not None:
                raise DevnetSetupFailed(f"injectived exited at start: {self._log_tail()}")
            try:
                if self.height() >= 1 and self.validators() and _port_open(self.genesis.ports.grpc):
                    return
            except NodeUnavailable:
                pass
            if time.monotonic() > deadline:
                raise NodeUnavailable(f"injectived did not serve within {timeout:.0f}s: {self._log_tail()}")
            time.sleep(0.2)

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return lines[-1][:300] if lines else "(empty log)"

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def cleanup(self) -> None:
        """Stops the node and removes the home if this devnet made it."""
        self.stop()
        if self._owns_home:
            shutil.rmtree(self.home.parent, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> CosmosDevnet:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    # -- what it serves -----------------------------------------------------------------------

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.genesis.ports.rpc}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.genesis.ports.grpc}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.genesis.ports.api}"

    @property
    def chain_id(self) -> str:
        return self.genesis.chain_id

    def chain_config(self, name: str = DEVNET_CHAIN_NAME, **overrides: Any) -> ChainConfig:
        """The registry entry for this devnet."""
        values: dict[str, Any] = {
            "name": name,
            "family": ChainFamily.COSMOS,
            "chain_id": self.chain_id,
            "rpc_url": self.rpc_url,
            "grpc_address": self.grpc_address,
            "rest_url": self.rest_url,
            "confirmations": 1,
            "denom": DENOM,
            "bech32_prefix": BECH32_PREFIX,
            "display_unit": "INJ",
            "display_exponent": 18,
            "max_fee_wei": MAX_FEE,
            "unbonding_seconds": UNBONDING_SECONDS,
        }
        values.update(overrides)
        return ChainConfig(**values)

    # -- queries (REST) and the faucet -----------------------------------------------------

    def rest(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """GET (or POST ``body``) ``path`` on the REST API; the JSON answer, also of a 4xx."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(  # noqa: S310 - our own http://127.0.0.1 URL
            self.rest_url + path, data=data, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
                return dict(json.loads(resp.read()))
        except urllib.error.HTTPError as e:
            try:
                return dict(json.loads(e.read()))
            except ValueError:
                raise NodeUnavailable(f"injectived REST {path}: HTTP {e.code}") from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise NodeUnavailable(f"injectived REST {path} unreachable: {e}") from None

    def height(self) -> int:
        latest = self.rest("/cosmos/base/tendermint/v1beta1/blocks/latest")
        try:
            return int(latest["block"]["header"]["height"])
        except (KeyError, TypeError, ValueError):
            raise NodeUnavailable("injectived has no latest block yet") from None

    def validators(self) -> list[DevnetValidator]:
        answer = self.rest("/cosmos/staking/v1beta1/validators")
        return [
            DevnetValidator(
                operator=v["operator_address"],
                moniker=v["description"]["moniker"],
                status=v["status"],
                tokens=int(v["tokens"]),
                jailed=bool(v.get("jailed", False)),
            )
            for v in answer.get("validators", [])
        ]

    def balance(self, address: str, denom: str = DENOM) -> int:
        answer = self.rest(f"/cosmos/bank/v1beta1/balances/{address}/by_denom?denom={denom}")
        return int(answer.get("balance", {}).get("amount", 0))

    def wait_for_tx(self, tx_hash: str, timeout: float = 15.0) -> dict[str, Any]:
        """The ``tx_response`` of ``tx_hash`` once a block includes it."""
        deadline = time.monotonic() + timeout
        while True:
            answer = self.rest(f"/cosmos/tx/v1beta1/txs/{tx_hash.upper()}")
            if "tx_response" in answer:
                return dict(answer["tx_response"])
            if time.monotonic() > deadline:
                raise NodeUnavailable(f"transaction {tx_hash} not included within {timeout:.0f}s")
            time.sleep(0.1)

    def fund(self, address: str, amount: int) -> str:
        """Sends ``amount`` ``inj`` from the faucet to ``address``; returns once a block includes it.

        Returns the transaction hash. One transfer at a time: each reads the faucet's sequence.
        """
        try:
            to = addresses.normalise_account(BECH32_PREFIX, address, "the address to fund")
        except AddressInvalid as e:
            raise FaucetRequestInvalid(e.message) from None
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            raise FaucetRequestInvalid(f"the faucet sends a positive integer amount of {DENOM}")
        if not self.running and not _port_open(self.genesis.ports.rpc):
            raise NodeUnavailable("the Cosmos devnet is not running")
        with self._faucet_lock:
            return str(
                self._faucet_tx(
                    "faucet transfer", FAUCET_GAS, "bank", "send", "faucet", to, f"{amount}{DENOM}"
                )["txhash"]
            )

    def _faucet_tx(self, what: str, gas: int, *args: str) -> dict[str, Any]:
        """``injectived tx ARGS`` signed by the faucet's key at the minimum gas price; its
        ``tx_response`` once a block includes it (a refusal or a failure raises BroadcastRejected).
        The caller holds the faucet lock: each transaction reads the faucet's sequence."""
        out = self.binary.run(
            self.home,
            "tx",
            *args,
            "--keyring-backend",
            "test",
            "--chain-id",
            self.chain_id,
            "--node",
            f"tcp://127.0.0.1:{self.genesis.ports.rpc}",
            "--gas",
            str(gas),
            "--fees",
            f"{gas * MIN_GAS_PRICE}{DENOM}",
            "--yes",
            "--output",
            "json",
            error=BroadcastRejected,
        )
        sent = json.loads(out)
        if int(sent.get("code", 0)) != 0:
            raise BroadcastRejected(f"the node refused the {what}: {sent.get('raw_log', '')[:300]}")
        included = self.wait_for_tx(str(sent["txhash"]))
        if int(included.get("code", 0)) != 0:
            raise BroadcastRejected(f"the {what} failed: {included.get('raw_log', '')[:300]}")
        return included

    def submit_text_proposal(self, title: str, summary: str) -> int:
        """Submits a text proposal (no messages) from the faucet with the chain's minimum deposit,
        so it is in its 20 s voting period at once; returns its id once a block includes it.

        The demo and the tests need a real proposal to vote on; the faucet pays the deposit.
        """
        if not self.running and not _port_open(self.genesis.ports.rpc):
            raise NodeUnavailable("the Cosmos devnet is not running")
        params = self.rest("/cosmos/gov/v1/params/deposit").get("params") or {}
        deposits = [int(c["amount"]) for c in params.get("min_deposit", []) if c.get("denom") == DENOM]
        if not deposits:
            raise NodeUnavailable(f"the node's gov params name no minimum deposit in {DENOM}")
        proposal = {
            "messages": [],
            "metadata": PROPOSAL_METADATA,
            "deposit": f"{deposits[0]}{DENOM}",
            "title": title,
            "summary": summary,
            "expedited": False,
        }
        with self._faucet_lock, tempfile.TemporaryDirectory(dir=self.home) as folder:
            path = Path(folder) / "proposal.json"
            path.write_text(json.dumps(proposal))
            included = self._faucet_tx(
                "proposal", PROPOSAL_GAS, "gov", "submit-proposal", str(path), "--from", "faucet"
            )
        proposal_id = _event_attribute(included, "submit_proposal", "proposal_id")
        if proposal_id is None or not proposal_id.isdigit():
            raise BroadcastRejected(f"the proposal transaction {included['txhash']} names no proposal id")
        return int(proposal_id)


def _event_attribute(tx_response: dict[str, Any], event_type: str, key: str) -> str | None:
    """The first value of attribute ``key`` of an ``event_type`` event in a transaction's result."""
    for event in tx_response.get("events", []):
        if event.get("type") == event_type:
            for attribute in event.get("attributes", []):
                if attribute.get("key") == key:
                    return str(attribute.get("value", ""))
    return None


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0
