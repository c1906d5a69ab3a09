"""ChainService logic: the chain registry, one adapter per chain, nonces and broadcasts.

Chain-specific work lives behind :class:`ChainAdapter` (Ethereum, Cosmos account
sequences, Solana recent blockhashes). This module never imports grpc.

Nonces never leave a gap that holds a vault's later transactions back: a build
prices and checks everything before it reserves one, an intent that fails before
signing gives its nonce back (``release_nonces``), and the next build takes the
lowest nonce given back before a new one.

A family without nonces (Solana: an adapter whose ``uses_nonces`` is False) reserves
nothing: its replay key is the family's, and the signer's ledger holds one signature per
(key, chain, replay key). Its broadcasts are still recorded, for the idempotent re-send.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from services.chain.cosmos.adapter import CosmosAdapter
from services.chain.errors import BlockhashExpired, BroadcastRejected, IntentInvalid, UnknownChain
from services.chain.ethereum.adapter import EthereumAdapter
from services.chain.repository import NonceRepository
from services.chain.solana.adapter import SolanaAdapter
from services.chain.types import (
    BroadcastResult,
    BuiltTransaction,
    DecodedTransaction,
    NonceRelease,
    SignedInfo,
    TransactionStatus,
    TxState,
    WaitStatus,
)
from services.families.config import ChainConfig, ChainFamily
from services.runtime.db import utcnow
from services.runtime.intent import IntentSpec

log = logging.getLogger("custos.chain")
#: What an adapter's ``prepare`` gives its ``assemble``: its own, the service only carries it.
Prepared = TypeVar("Prepared")


class ChainAdapter(Protocol[Prepared]):
    """What ChainService needs of one chain's node adapter: the I/O half of its family
    (the pure half, decoding and checking, is ``services.families``)."""

    config: ChainConfig

    def plan(self, spec: IntentSpec, vault_address: str) -> object:
        """Validates the intent's chain-specific data; raises ``IntentInvalid`` with the reason."""
        ...

    async def check_holds_value(self, spec: IntentSpec, vault_address: str) -> str:
        """Raises ``InsufficientFunds`` when the vault does not hold the value the intent moves.

        Returns what approvers should see beside the intent, read from the chain now (a vote's
        proposal and the vault's voting weight); "" when there is nothing to add.
        """
        ...

    def normalise_address(self, address: str) -> str:
        """The one spelling of an account address used as a database key."""
        ...

    async def pending_nonce(self, address: str) -> int:
        """The next nonce (account sequence) the node expects from ``address``."""
        ...

    async def prepare(
        self, spec: IntentSpec, vault_address: str, public_key: bytes = b"", step: str = ""
    ) -> Prepared:
        """Everything of the intent's transaction but its nonce: validated, priced, affordable.
        ``public_key`` is the vault key's, for families whose transactions name it (Cosmos,
        Solana); ``step`` the family step built (Solana's steps differ; the others ignore it).

        Raises whatever would make the build fail, before a nonce is reserved for it.
        """
        ...

    def assemble(self, prepared: Prepared, nonce: int) -> tuple[bytes, DecodedTransaction]:
        """The unsigned transaction bytes with ``nonce``, and what they decode to."""
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

    def tx_id(self, text: str) -> str:
        """A transaction id in the chain's own spelling; raises ``IntentInvalid`` otherwise."""
        ...

    async def wait_status(self, step: str, tx_hash: str, vault_address: str) -> WaitStatus:
        """Where the chain is with the family's WAIT ``step`` after the transaction ``tx_hash``."""
        ...


AdapterFactory = Callable[[ChainConfig], ChainAdapter[Any]]

ADAPTERS: dict[ChainFamily, AdapterFactory] = {
    ChainFamily.ETHEREUM: EthereumAdapter,
    ChainFamily.COSMOS: CosmosAdapter,
    ChainFamily.SOLANA: SolanaAdapter,
}


def uses_nonces(adapter: ChainAdapter[Any]) -> bool:
    """Whether the adapter's family spends account nonces the service reserves (Ethereum,
    Cosmos); an adapter says otherwise with ``uses_nonces = False`` (Solana)."""
    return bool(getattr(adapter, "uses_nonces", True))


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
        self._adapters: dict[str, ChainAdapter[Any]] = {}
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

    def adapter(self, chain: str) -> ChainAdapter[Any]:
        try:
            return self._adapters[chain]
        except KeyError:
            raise UnknownChain(f"unknown chain {chain!r}", details={"chain": chain}) from None

    async def validate_intent(self, spec: IntentSpec, vault_address: str) -> str:
        """Checks the chain-specific data (e.g. ETH deposit data), and that the vault holds the
        intent's value: an intent nobody can pay is refused at submission, before any approver
        is asked (the build checks the value and the fees again). Returns the chain's context
        for approvers (a vote's proposal title and the vault's voting weight), or ""."""
        adapter = self.adapter(spec.chain)
        adapter.plan(spec, vault_address)
        return await adapter.check_holds_value(spec, adapter.normalise_address(vault_address))

    async def build_transaction(
        self,
        intent_id: str,
        spec: IntentSpec,
        vault_address: str,
        *,
        step: str | None = None,
        public_key: bytes = b"",
    ) -> BuiltTransaction:
        """The unsigned transaction for (intent, step); asking again reuses the same nonce."""
        if not intent_id:
            raise IntentInvalid("intent_id is required")
        adapter = self.adapter(spec.chain)
        address = adapter.normalise_address(vault_address)
        # Whatever can refuse the build (the intent's data, fees, gas, the vault's funds) runs
        # before a nonce is reserved: a build that cannot succeed leaves no gap behind it.
        step = step or step_for(spec)
        prepared = await adapter.prepare(spec, address, public_key, step)
        if not uses_nonces(adapter):
            unsigned, decoded = adapter.assemble(prepared, 0)
            return BuiltTransaction(unsigned_tx=unsigned, decoded=decoded)
        chain_nonce = await adapter.pending_nonce(address)
        # The repository blocks on a row lock: keep it off the event loop.
        nonce = await asyncio.to_thread(
            self._nonces.reserve,
            chain=spec.chain,
            address=address,
            intent_id=intent_id,
            step=step,
            chain_nonce=chain_nonce,
            now=self._clock(),
            release_after=timedelta(seconds=adapter.config.nonce_release_seconds),
        )
        unsigned, decoded = adapter.assemble(prepared, nonce)
        return BuiltTransaction(unsigned_tx=unsigned, decoded=decoded)

    async def release_nonces(self, chain: str, intent_id: str, reason: str) -> NonceRelease:
        """Gives back the nonces ``intent_id`` reserved on ``chain`` and sent nothing with.

        For an intent that failed before it signed: the vault's next build takes the lowest
        of them, instead of a new nonce that would wait behind the gap. A nonce a signed
        transaction was sent with is kept (see ``NonceRepository.release``). Idempotent.
        """
        if not intent_id:
            raise IntentInvalid("intent_id is required")
        if not uses_nonces(self.adapter(chain)):  # UnknownChain
            return NonceRelease()
        released, kept = await asyncio.to_thread(
            self._nonces.release, chain=chain, intent_id=intent_id, now=self._clock()
        )
        if released or kept:
            log.info(
                "%s gave back nonces %s on %s (kept %s): %s", intent_id, released, chain, kept, reason[:200]
            )
        return NonceRelease(released=tuple(released), kept=tuple(kept))

    def decode_transaction(
        self, chain: str, unsigned_tx: bytes, *, sender: str | None = None
    ) -> DecodedTransaction:
        return self.adapter(chain).decode(unsigned_tx, sender=sender)

    async def broadcast(self, chain: str, signed_tx: bytes) -> BroadcastResult:
        """Sends signed bytes once: a repeat (even after a restart) sends the same transaction."""
        adapter = self.adapter(chain)
        info = adapter.inspect_signed(signed_tx)
        address = adapter.normalise_address(info.sender)
        if not uses_nonces(adapter):
            return await self._broadcast_without_nonce(adapter, chain, signed_tx, info.tx_hash, address)
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
            # Refused outright: the nonce is free for a corrected transaction of the same step
            # (the signer allows no other), never for another intent.
            await asyncio.to_thread(
                self._nonces.forget_broadcast,
                chain=chain,
                tx_hash=info.tx_hash,
                address=address,
                nonce=info.nonce,
            )
            raise
        return BroadcastResult(tx_hash=info.tx_hash, already_known=known)

    async def _broadcast_without_nonce(
        self, adapter: ChainAdapter[Any], chain: str, signed_tx: bytes, tx_hash: str, address: str
    ) -> BroadcastResult:
        """Records the bytes (for the re-send) and sends them. A refused transaction's record is
        dropped, except an expired blockhash's: the send is not an error (the transaction simply
        never lands) and its status answers EXPIRED from the record, so the workflow builds the
        step again."""
        await asyncio.to_thread(
            self._nonces.record_sent,
            chain=chain,
            tx_hash=tx_hash,
            address=address,
            raw=signed_tx,
            now=self._clock(),
        )
        try:
            known = await adapter.broadcast(signed_tx, tx_hash)
        except BlockhashExpired as e:
            log.info("%s on %s expired before it was sent: %s", tx_hash, chain, e.message)
            return BroadcastResult(tx_hash=tx_hash, already_known=False)
        except BroadcastRejected:
            # (no reservation to mark: nonce -1 matches none)
            await asyncio.to_thread(
                self._nonces.forget_broadcast, chain=chain, tx_hash=tx_hash, address=address, nonce=-1
            )
            raise
        return BroadcastResult(tx_hash=tx_hash, already_known=known)

    async def wait_status(self, chain: str, step: str, tx_hash: str, vault_address: str) -> WaitStatus:
        """Where ``chain`` is with the WAIT ``step`` that follows the transaction ``tx_hash``."""
        adapter = self.adapter(chain)
        return await adapter.wait_status(
            step, adapter.tx_id(tx_hash), adapter.normalise_address(vault_address)
        )

    async def transaction_status(self, chain: str, tx_hash: str) -> TransactionStatus:
        adapter = self.adapter(chain)
        text = adapter.tx_id(tx_hash)
        status = await adapter.status(text)
        if status.state is TxState.NOT_FOUND:
            # Broadcast once but unknown to the node now (evicted, node restarted):
            # send the recorded bytes again. Same bytes, same nonce: never a second spend.
            row = await asyncio.to_thread(self._nonces.broadcast, chain, text)
            if row is not None:
                try:
                    await adapter.broadcast(row.raw, text)
                except BlockhashExpired as e:
                    # Never landed, and never can: the step is rebuilt with a new blockhash.
                    return TransactionStatus(
                        state=TxState.EXPIRED,
                        confirmations_required=status.confirmations_required,
                        failure_reason=e.message,
                    )
                except BroadcastRejected:
                    return status
                return await adapter.status(text)
        return status
