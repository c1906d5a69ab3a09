"""A local Ethereum devnet: anvil with the beacon deposit and system contracts loaded.

anvil 1.7.1 predeploys none of the contracts custos stakes through, so they are
exported from the Hoodi genesis (``deploy/devnet/export-system-contracts.mjs``)
and written into the running node with ``anvil_setCode`` / ``anvil_setNonce`` /
``anvil_setStorageAt``. Used by ``custos dev up``, the demo and the tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from services.chain.ethereum.rpc import JsonRpcClient
from services.families.config import HOODI_GENESIS_FORK_VERSION, ChainConfig, ChainFamily
from services.runtime.errors import FailedPrecondition, Unavailable
from services.runtime.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
DEVNET_DIR = REPO_ROOT / "deploy" / "devnet"
CONTRACTS_FILE = DEVNET_DIR / "build" / "system-contracts.json"
ANVIL_PACKAGE = "@foundry-rs/anvil-linux-amd64"
GENESIS_PACKAGE = "@ethereumjs/genesis"
DEVNET_CHAIN_ID = 31337
DEVNET_CHAIN_NAME = "ethereum-devnet"


@dataclass(frozen=True)
class DevnetAssets:
    anvil: Path
    contracts: Path


def _pinned_versions(devnet_dir: Path) -> dict[str, str]:
    return dict(json.loads((devnet_dir / "package.json").read_text())["dependencies"])


def _installed(devnet_dir: Path, package: str, version: str) -> bool:
    manifest = devnet_dir / "node_modules" / package / "package.json"
    try:
        return bool(json.loads(manifest.read_text()).get("version") == version)
    except (OSError, ValueError):
        return False


def ensure_devnet_assets(devnet_dir: Path = DEVNET_DIR) -> DevnetAssets:
    """Installs the pinned npm packages and exports the contracts, unless already done.

    Idempotent; when everything is in place it only reads two small manifests.
    """
    pins = _pinned_versions(devnet_dir)
    if not all(_installed(devnet_dir, name, version) for name, version in pins.items()):
        npm = shutil.which("npm")
        if npm is None:
            raise FailedPrecondition("npm is not installed: it is needed to fetch anvil")
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=devnet_dir,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    contracts = devnet_dir / "build" / "system-contracts.json"
    lock = devnet_dir / "package-lock.json"
    script = devnet_dir / "export-system-contracts.mjs"
    stale = not contracts.exists() or any(
        p.exists() and p.stat().st_mtime > contracts.stat().st_mtime for p in (lock, script)
    )
    if stale:
        node = shutil.which("node")
        if node is None:
            raise FailedPrecondition("node is not installed: it is needed to export the contracts")
        subprocess.run(
            [node, str(script), str(contracts)], cwd=devnet_dir, check=True, stdout=subprocess.DEVNULL
        )
    anvil = devnet_dir / "node_modules" / ANVIL_PACKAGE / "bin" / "anvil"
    if not os.access(anvil, os.X_OK):
        raise FailedPrecondition(f"anvil binary missing or not executable at {anvil}")
    return DevnetAssets(anvil=anvil, contracts=contracts)


class Devnet:
    """One anvil process with the staking contracts loaded.

    Use as a context manager, or ``start()`` / ``stop()``. ``stop`` leaves no process behind.
    """

    def __init__(
        self,
        *,
        chain_id: int = DEVNET_CHAIN_ID,
        port: int | None = None,
        assets: DevnetAssets | None = None,
        block_time: int | None = None,
    ) -> None:
        self.chain_id = chain_id
        self.port = port
        self.assets = assets
        self.block_time = block_time
        self._proc: subprocess.Popen[bytes] | None = None
        self.contracts: dict[str, dict[str, Any]] = {}

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def rpc(self) -> JsonRpcClient:
        return JsonRpcClient(self.rpc_url)

    def chain_config(self, name: str = DEVNET_CHAIN_NAME, **overrides: Any) -> ChainConfig:
        """The registry entry for this devnet (Hoodi's fork version: the contracts are Hoodi's)."""
        values: dict[str, Any] = {
            "name": name,
            "family": ChainFamily.ETHEREUM,
            "chain_id": self.chain_id,
            "rpc_url": self.rpc_url,
            "confirmations": 1,
            "genesis_fork_version": HOODI_GENESIS_FORK_VERSION,
        }
        values.update(overrides)
        return ChainConfig(**values)

    def start(self, timeout: float = 20.0) -> Devnet:
        if self._proc is not None:
            return self
        assets = self.assets or ensure_devnet_assets()
        self.assets = assets
        if self.port is None:
            self.port = free_port()
        cmd = [
            str(assets.anvil),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--chain-id",
            str(self.chain_id),
            "--hardfork",
            "prague",
            "--accounts",
            "2",
        ]
        if self.block_time:
            cmd += ["--block-time", str(self.block_time)]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                self._proc = None
                raise Unavailable(f"anvil exited at start: {err.strip()[:500]}")
            try:
                if int(self.rpc.call_sync("eth_chainId"), 16) == self.chain_id:
                    break
            except Unavailable:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise Unavailable("anvil did not answer within the start timeout")
            time.sleep(0.05)
        self.load_contracts(assets.contracts)
        return self

    def load_contracts(self, path: Path) -> None:
        self.contracts = json.loads(path.read_text())
        rpc = self.rpc
        for entry in self.contracts.values():
            address = entry["address"]
            rpc.call_sync("anvil_setCode", [address, entry["code"]])
            rpc.call_sync("anvil_setNonce", [address, hex(int(entry["nonce"], 16))])
            for slot, value in entry["storage"].items():
                rpc.call_sync("anvil_setStorageAt", [address, slot, value])

    def fund(self, address: str, wei: int) -> None:
        self.rpc.call_sync("anvil_setBalance", [address, hex(wei)])

    def mine(self, blocks: int = 1) -> None:
        self.rpc.call_sync("anvil_mine", [hex(blocks)])

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stderr:
            proc.stderr.close()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Devnet:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
