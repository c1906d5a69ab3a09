"""The chain registry: one ``ChainConfig`` per chain custos talks to, loaded from settings.

Pure (pydantic only): the signer, the policy and the chain service all read it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, NewType

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

ChainName = NewType("ChainName", str)
ChainId = NewType("ChainId", int)

MAINNET_GENESIS_FORK_VERSION = "0x00000000"
HOODI_GENESIS_FORK_VERSION = "0x10000910"
DEPOSIT_CONTRACT_ADDRESS = "0x00000000219ab540356cBB839Cbe05303d7705Fa"


class ChainFamily(StrEnum):
    ETHEREUM = "ethereum"
    COSMOS = "cosmos"
    SOLANA = "solana"


def _hex_bytes(value: str, size: int, field: str) -> str:
    text = value.lower()
    if not text.startswith("0x") or len(text) != 2 + 2 * size:
        raise ValueError(f"{field} must be 0x followed by {2 * size} hex digits")
    bytes.fromhex(text[2:])
    return text


class ChainConfig(BaseModel):
    """One chain of the registry. Amounts and fees are integers in base units (wei).

    Attributes:
        name: Registry name used in intents, e.g. ``ethereum-devnet``.
        chain_id: The chain's own id: an EIP-155 integer on Ethereum (transactions for
            another id are refused), a string such as ``cosmoshub-4`` on Cosmos.
        confirmations: Blocks (including the one that mined it) before a transaction counts as final.
        max_fee_per_gas_cap: Highest ``maxFeePerGas`` custos will ever sign, in wei.
        max_priority_fee_cap: Highest ``maxPriorityFeePerGas``, in wei.
        genesis_fork_version: Beacon-chain genesis fork version: the domain of deposit signatures.
        deposit_contract: Address of the beacon deposit contract.
        unbonding_seconds: Wait after an unstake before the withdrawal step.
        nonce_release_seconds: A nonce reserved but never broadcast for this long goes to the next intent.
        max_fee_wei: The most one transaction may pay in network fees, in the chain's base units
            (on Ethereum gas limit x max fee per gas, default 0.1 ETH; other families must set it:
            a default in wei would be no cap in their units);
            the signer refuses more, whatever the policy allows.
        max_request_fee_wei: The most an EIP-7002/7251 request may pay its system contract (the
            only ether an exit or a consolidation sends); the signer refuses more.
        denom: The chain's base denomination (``uatom``, ``inj``); Ethereum's is ``wei``.
        display_unit: How people read amounts (``ATOM``); Ethereum's default is ``ETH``, other
            families' their base denomination.
        display_exponent: ``display_unit`` is ``10**display_exponent`` base units (ETH: 18, ATOM: 6).
        bech32_prefix: Cosmos: the account address prefix (``cosmos``); validators use
            ``<prefix>valoper``.
        grpc_address: Cosmos: the node's gRPC endpoint, ``host:port`` (``rpc_url`` is its
            CometBFT RPC); empty when not configured.
        rest_url: Cosmos: the node's REST (LCD) API, ``http(s)://...``; empty when not configured.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")]
    family: ChainFamily = ChainFamily.ETHEREUM
    chain_id: int | str
    rpc_url: Annotated[str, Field(min_length=1)]
    confirmations: Annotated[int, Field(ge=1, le=10_000)] = 1
    max_fee_per_gas_cap: Annotated[int, Field(gt=0)] = 500 * 10**9
    max_priority_fee_cap: Annotated[int, Field(ge=0)] = 5 * 10**9
    genesis_fork_version: str = MAINNET_GENESIS_FORK_VERSION
    deposit_contract: str = DEPOSIT_CONTRACT_ADDRESS
    unbonding_seconds: Annotated[int, Field(ge=0)] = 0
    nonce_release_seconds: Annotated[int, Field(gt=0)] = 600
    rpc_timeout_seconds: Annotated[float, Field(gt=0)] = 10.0
    max_fee_wei: Annotated[int, Field(gt=0)] = 10**17
    max_request_fee_wei: Annotated[int, Field(ge=0)] = 10**16
    denom: Annotated[str, Field(pattern=r"^[a-zA-Z][a-zA-Z0-9/:._-]{1,127}$")] = "wei"
    bech32_prefix: Annotated[str, Field(pattern=r"^[a-z]{1,32}$")] = "cosmos"
    display_unit: Annotated[str, Field(max_length=16)] = ""
    display_exponent: Annotated[int, Field(ge=0, le=36)] = 0
    grpc_address: Annotated[str, Field(pattern=r"^$|^[A-Za-z0-9.-]+:[0-9]{1,5}$")] = ""
    rest_url: Annotated[str, Field(pattern=r"^$|^https?://[^\s]+$")] = ""

    @field_validator("chain_id")
    @classmethod
    def _chain_id(cls, value: int | str, info: ValidationInfo) -> int | str:
        if info.data.get("family", ChainFamily.ETHEREUM) is ChainFamily.ETHEREUM:
            number = int(value) if isinstance(value, str) and value.isdigit() else value
            if not isinstance(number, int) or number <= 0:
                raise ValueError("an Ethereum chain id is a positive integer")
            return number
        if not str(value):
            raise ValueError("chain_id is required")
        return str(value)

    @model_validator(mode="after")
    def _fee_cap_in_the_chains_unit(self) -> ChainConfig:
        if self.family is not ChainFamily.ETHEREUM and "max_fee_wei" not in self.model_fields_set:
            raise ValueError(
                f"chain {self.name}: set max_fee_wei, the most one transaction may pay in {self.denom}"
            )
        return self

    @field_validator("denom")
    @classmethod
    def _denom(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("family", ChainFamily.ETHEREUM) is ChainFamily.ETHEREUM and value != "wei":
            raise ValueError("an Ethereum chain counts amounts in wei")
        return value

    @field_validator("genesis_fork_version")
    @classmethod
    def _fork_version(cls, value: str) -> str:
        return _hex_bytes(value, 4, "genesis_fork_version")

    @field_validator("deposit_contract")
    @classmethod
    def _address(cls, value: str) -> str:
        return _hex_bytes(value, 20, "deposit_contract")

    @property
    def evm_chain_id(self) -> int:
        """The EIP-155 chain id (Ethereum family only)."""
        if not isinstance(self.chain_id, int):
            raise TypeError(f"chain {self.name} has no EVM chain id")
        return self.chain_id

    def display(self) -> tuple[str, int]:
        """(unit, exponent): amounts are shown as ``amount / 10**exponent unit``."""
        if self.display_unit:
            return self.display_unit, self.display_exponent
        if self.family is ChainFamily.ETHEREUM:
            return "ETH", 18
        return self.denom, 0

    def amount_text(self, amount: int) -> str:
        """``amount`` base units as people read them, exactly: ``2.5 INJ``, ``32 ETH``, ``5000 uatom``."""
        unit, exponent = self.display()
        if not exponent:
            return f"{amount} {unit}"
        whole, frac = divmod(amount, 10**exponent)
        return f"{whole}.{frac:0{exponent}d}".rstrip("0").rstrip(".") + f" {unit}"

    @property
    def fork_version_bytes(self) -> bytes:
        return bytes.fromhex(self.genesis_fork_version[2:])
