"""ChainService logic: the chain registry, one adapter per chain, nonces and broadcasts.

Chain-specific work lives behind :class:`ChainAdapter` (Ethereum today; Cosmos
account sequences and Solana recent blockhashes fit the same shape). This module
never imports grpc.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from services.chain.config import ChainConfig, ChainFamily
from services.chain.errors import BroadcastRejected, IntentInvalid, UnknownChain
from services.chain.ethereum.adapter import EthereumAdapter
from services.chain.repository import NonceRepository
from services.chain.types import (
    BroadcastResult,
    BuiltTransaction,
    DecodedTransaction,
    SignedInfo,
    TransactionStatus,
    TxState,
)
from services.runtime.db import utcnow
from services.runtime.intent import IntentSpec


class ChainAdapter(Protocol):
    """What ChainService needs from one chain family."""

    config: ChainConfig

    def plan(self, spec: IntentSpec, vault_address: str) -> object:
        """Validates the intent's chain-specific data; raises ``IntentInvalid`` with the reason."""
        ...

    def normalise_address(self, address: str) -> str:
        """The one spelling of an account address used as a database key."""
        ...

    async def pending_nonce(self, address: str) -> int:
        """The next nonce (account sequence) the node expects from ``address``."""
        ...

    async def build(
        self, spec: IntentSpec, vault_address: str, nonce: int
    ) -> tuple[bytes, DecodedTransaction]:
        """The unsigned transaction bytes for the intent, and what they decode to."""
        ...

    def decode(self, unsigned_tx: bytes, *, sender: str | None = None) -> DecodedTransaction:
        """Strictly reads unsigned bytes back into intent fields."""
        ...

    def inspect_signed(self, signed_tx: bytes) -> SignedInfo:
        """Hash, sender and nonce of signed bytes."""
        ...

    async def broadcast(self, signed_tx: bytes, tx_hash: str) -> bool:
        """Sends the transaction; True when the node already had it."""
        ...

    async def status(self, tx_hash: str) -> TransactionStatus: ...


AdapterFactory = Callable[[ChainConfig], ChainAdapter]

ADAPTERS: dict[ChainFamily, AdapterFactory] = {ChainFamily.ETHEREUM: EthereumAdapter}


def step_for(spec: IntentSpec) -> str:
    """The default step name of an intent's first transaction."""
    return spec.action.value.lower()


class ChainService:
    """Builds, decodes, broadcasts and follows transactions on the registry's chains."""

    def __init__(
        self,
        chains: Iterable[ChainConfig],
        session_factory: sessionmaker[Session],
        *,
        adapters: dict[ChainFamily, AdapterFactory] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        factories = adapters or ADAPTERS
        self._configs: dict[str, ChainConfig] = {}
        self._adapters: dict[str, ChainAdapter] = {}
        for config in chains:
            if config.family not in factories:
                raise ValueError(f"no adapter for the {config.family} family (chain {config.name})")
            if config.name in self._configs:
                raise ValueError(f"chain {config.name} is registered twice")
            self._configs[config.name] = config
            self._adapters[config.name] = factories[config.family](config)
        self._nonces = NonceRepository(session_factory)
        self._clock = clock

    def list_chains(self) -> list[ChainConfig]:
        return list(self._configs.values())

    def adapter(self, chain: str) -> ChainAdapter:
        try:
            return self._adapters[chain]
        except KeyError:
            raise UnknownChain(f"unknown chain {chain!r}", details={"chain": chain}) from None

    def validate_intent(self, spec: IntentSpec, vault_address: str) -> None:
        """Checks the chain-specific data (e.g. ETH deposit data) without touching the node."""
        self.adapter(spec.chain).plan(spec, vault_address)

    async def build_transaction(
        self, intent_id: str, spec: IntentSpec, vault_address: str, *, step: str | None = None
    ) -> BuiltTransaction:
        """The unsigned transaction for (intent, step); asking again reuses the same nonce."""
        if not intent_id:
            raise IntentInvalid("intent_id is required")
        adapter = self.adapter(spec.chain)
        adapter.plan(spec, vault_address)  # refuse bad data before reserving anything
        address = adapter.normalise_address(vault_address)
        chain_nonce = await adapter.pending_nonce(address)
        # The repository blocks on a row lock: keep it off the event loop.
        nonce = await asyncio.to_thread(
            self._nonces.reserve,
            chain=spec.chain,
            address=address,
            intent_id=intent_id,
            step=step or step_for(spec),
            chain_nonce=chain_nonce,
            now=self._clock(),
            release_after=timedelta(seconds=adapter.config.nonce_release_seconds),
        )
        unsigned, decoded = await adapter.build(spec, address, nonce)
        return BuiltTransaction(unsigned_tx=unsigned, decoded=decoded)

    def decode_transaction(
        self, chain: str, unsigned_tx: bytes, *, sender: str | None = None
    ) -> DecodedTransaction:
        return self.adapter(chain).decode(unsigned_tx, sender=sender)

    async def broadcast(self, chain: str, signed_tx: bytes) -> BroadcastResult:
        """Sends signed bytes once: a repeat (even after a restart) sends the same transaction."""
        adapter = self.adapter(chain)
        info = adapter.inspect_signed(signed_tx)
        address = adapter.normalise_address(info.sender)
        await asyncio.to_thread(
            self._nonces.record_broadcast,
            chain=chain,
            tx_hash=info.tx_hash,
            address=address,
            nonce=info.nonce,
            raw=signed_tx,
            now=self._clock(),
        )
        try:
            known = await adapter.broadcast(signed_tx, info.tx_hash)
        except BroadcastRejected:
            # Refused outright: free the nonce for a corrected transaction.
            await asyncio.to_thread(
                self._nonces.forget_broadcast,
                chain=chain,
                tx_hash=info.tx_hash,
                address=address,
                nonce=info.nonce,
            )
            raise
        return BroadcastResult(tx_hash=info.tx_hash, already_known=known)

    async def transaction_status(self, chain: str, tx_hash: str) -> TransactionStatus:
        text = tx_hash.lower()
        if len(text) != 66 or not text.startswith("0x"):
            raise IntentInvalid("tx_hash must be 0x followed by 64 hex digits")
        try:
            bytes.fromhex(text[2:])
        except ValueError:
            raise IntentInvalid("tx_hash must be 0x followed by 64 hex digits") from None
        adapter = self.adapter(chain)
        status = await adapter.status(text)
        if status.state is TxState.NOT_FOUND:
            # Broadcast once but unknown to the node now (evicted, node restarted):
            # send the recorded bytes again. Same bytes, same nonce: never a second spend.
            row = await asyncio.to_thread(self._nonces.broadcast, chain, text)
            if row is not None:
                try:
                    await adapter.broadcast(row.raw, text)
                except BroadcastRejected:
                    return status
                return await adapter.status(text)
        return status
