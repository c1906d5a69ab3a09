"""The Cosmos devnet's home: ``injectived`` from PyPI, its keys, and a genesis made for custos.

``injectived`` comes from the PyPI package ``injective-core`` (a full Cosmos SDK 0.50 chain:
x/staking, x/gov, x/distribution). The genesis is made with the chain's own commands: bond,
mint and gov denomination ``inj``, a 20 s unbonding period and a 20 s voting period (so tests
and the demo see an unbonding end and a proposal close), and two validators, so that a
redelegation has somewhere to go. Only validator 1 runs a node: it holds 90% of the bonded
stake, more than the 2/3 that commits blocks alone; validator 2 is bonded from genesis with a
consensus key no node holds, and nothing jails or slashes it for the blocks it misses. A third
genesis key, the faucet, funds addresses. All keys live in the home's *test* keyring: this is a
devnet, nothing of value.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from services.chain.errors import ChainError
from services.families.cosmos import addresses
from services.runtime.errors import FailedPrecondition
from services.runtime.ports import allocate

DEVNET_CHAIN_ID = "custos-devnet-1"
DENOM = "inj"
BECH32_PREFIX = "inj"
#: One INJ in base units (``inj``, 18 decimals).
INJ = 10**18
#: The node's minimum gas price, in ``inj`` per unit of gas (Injective's default).
MIN_GAS_PRICE = 160_000_000
UNBONDING_SECONDS = 20
VOTING_PERIOD_SECONDS = 20
#: Self-delegations of validator 1 and 2. Validator 1's node commits blocks alone while it
#: holds more than 2/3 of the bonded stake: delegating more than ~350,000 INJ to validator 2
#: would halt the chain.
VALIDATOR_STAKES = (900_000 * INJ, 100_000 * INJ)
FAUCET_BALANCE = 10**9 * INJ

_COMMAND_TIMEOUT = 60.0
_KEYRING = ("--keyring-backend", "test")


class DevnetSetupFailed(ChainError, FailedPrecondition):
    """The devnet cannot be set up or started: ``injectived`` missing, or a step refused."""


@dataclass(frozen=True)
class Injectived:
    """The node binary and the environment it runs in (its wasm library beside it)."""

    path: Path
    env: dict[str, str]

    def run(self, home: Path, *args: str, error: type[ChainError] = DevnetSetupFailed) -> str:
        """``injectived ARGS --home HOME``'s stdout; a refusal raises ``error`` with its last line."""
        what = "injectived " + " ".join(args[:2])
        try:
            done = subprocess.run(
                [str(self.path), *args, "--home", str(home)],
                env=self.env,
                capture_output=True,
                timeout=_COMMAND_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise error(f"{what} timed out") from None
        if done.returncode != 0:
            lines = done.stderr.decode(errors="replace").strip().splitlines() or ["(no output)"]
            raise error(f"{what} failed: {lines[-1][:300]}")
        return done.stdout.decode()


def injectived_binary() -> Injectived:
    """``injectived`` from the installed ``injective-core`` (unpacked on first use, ~4 s)."""
    try:
        import injective_core
    except ImportError:
        raise DevnetSetupFailed(
            "the Cosmos devnet needs the PyPI package injective-core (make setup installs it)"
        ) from None
    try:
        path = Path(injective_core.get_binary_path())
    except (OSError, RuntimeError) as e:
        raise DevnetSetupFailed(f"injective-core has no injectived for this machine: {e}") from None
    # The binary links libwasmvm from its own folder.
    library_path = os.pathsep.join(p for p in (str(path.parent), os.environ.get("LD_LIBRARY_PATH")) if p)
    return Injectived(path=path, env={**os.environ, "LD_LIBRARY_PATH": library_path})


@dataclass(frozen=True)
class Ports:
    """The node's listeners, all on 127.0.0.1."""

    rpc: int
    p2p: int
    grpc: int
    api: int

    @classmethod
    def free(cls) -> Ports:
        return cls(*allocate(4))


@dataclass(frozen=True)
class Genesis:
    """What set-up made, kept in the home's ``devnet.json``: the chain, its ports, its keys' addresses."""

    chain_id: str
    ports: Ports
    faucet: str
    #: Validator 1 (the running node's) and validator 2, as operator addresses.
    validators: tuple[str, str]

    @classmethod
    def load(cls, path: Path) -> Genesis:
        data = json.loads(path.read_text())
        return cls(
            chain_id=data["chain_id"],
            ports=Ports(**data["ports"]),
            faucet=data["faucet"],
            validators=(data["validators"][0], data["validators"][1]),
        )

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))


def make_home(binary: Injectived, home: Path, chain_id: str, ports: Ports) -> Genesis:
    """Initialises ``home``: the node, the three keys, the genesis with both validators' gentxs."""
    binary.run(home, "init", "validator1", "--chain-id", chain_id, "--default-denom", DENOM)
    address = {}
    for key in ("validator1", "validator2", "faucet"):
        # The JSON output carries the mnemonic: it is read for the address and dropped.
        out = binary.run(home, "keys", "add", key, *_KEYRING, "--output", "json")
        address[key] = json.loads(out)["address"]
    _edit_genesis(home / "config" / "genesis.json")
    fees = 1_000 * INJ
    balances = {
        "validator1": VALIDATOR_STAKES[0] + fees,
        "validator2": VALIDATOR_STAKES[1] + fees,
        "faucet": FAUCET_BALANCE,
    }
    for key, amount in balances.items():
        binary.run(
            home, "genesis", "add-genesis-account", key, f"{amount}{DENOM}", *_KEYRING, "--chain-id", chain_id
        )
    gentx = ("genesis", "gentx", *_KEYRING, "--chain-id", chain_id)
    binary.run(home, *gentx, "validator1", f"{VALIDATOR_STAKES[0]}{DENOM}", "--moniker", "validator1")
    # Validator 2's consensus key is made here and not kept: no node signs for it.
    consensus = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    pubkey = {"@type": "/cosmos.crypto.ed25519.PubKey", "key": base64.b64encode(consensus).decode()}
    document = home / "config" / "gentx" / "gentx-validator2.json"
    binary.run(
        home,
        *gentx,
        "validator2",
        f"{VALIDATOR_STAKES[1]}{DENOM}",
        "--moniker",
        "validator2",
        "--pubkey",
        json.dumps(pubkey),
        "--output-document",
        str(document),
    )
    binary.run(home, "genesis", "collect-gentxs")
    binary.run(home, "genesis", "validate")
    valoper = BECH32_PREFIX + addresses.VALOPER
    operators = [
        addresses.encode(valoper, addresses.decode(address[k], BECH32_PREFIX, k))
        for k in ("validator1", "validator2")
    ]
    return Genesis(
        chain_id=chain_id, ports=ports, faucet=address["faucet"], validators=(operators[0], operators[1])
    )


def _edit_genesis(path: Path) -> None:
    """Short unbonding and voting; no validator is ever jailed or slashed for being offline."""
    genesis = json.loads(path.read_text())
    app = genesis["app_state"]
    app["staking"]["params"]["unbonding_time"] = f"{UNBONDING_SECONDS}s"
    gov = app["gov"]["params"]
    gov["voting_period"] = f"{VOTING_PERIOD_SECONDS}s"
    gov["expedited_voting_period"] = f"{VOTING_PERIOD_SECONDS // 2}s"  # must be shorter
    gov["max_deposit_period"] = f"{VOTING_PERIOD_SECONDS}s"
    # Validator 2 never signs: with no minimum of signed blocks, downtime never jails it.
    app["slashing"]["params"]["min_signed_per_window"] = "0.000000000000000000"
    # Injective's bridge module slashes validators that confirm no bridge valsets (after 10,000
    # blocks, 35 minutes at 200 ms): no validator here runs a bridge orchestrator.
    peggy = app["peggy"]["params"]
    for window in ("signed_valsets_window", "signed_batches_window", "signed_claims_window"):
        peggy[window] = str(10**12)
    peggy["unbond_slashing_valsets_window"] = str(10**12)
    for fraction in [k for k in peggy if k.startswith("slash_fraction_")]:
        peggy[fraction] = "0.000000000000000000"
    path.write_text(json.dumps(genesis, indent=1))
