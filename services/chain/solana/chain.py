"""The devnet's chain: one LiteSVM, a slot clock, blockhashes that expire, epochs on demand, a faucet.

LiteSVM executes transactions (System, Stake, Vote programs; sigverify on) but has no blocks: it knows one
"latest" blockhash and refuses every other, it never advances its Clock and it processes no epochs. What a
cluster does around that is built here:

- Slots advance with time (``slot_seconds`` each, configurable so a test can expire a blockhash quickly) or
  on request; the Clock sysvar follows (``epoch = slot // slots_per_epoch``, no warm-up epochs).
- Every slot has a blockhash; one is valid for 150 slots after its own (Agave's ``MAX_PROCESSING_AGE``),
  checked here with LiteSVM's single-hash check turned off. A transaction naming another is refused with
  ``BlockhashNotFound``, as a cluster refuses it.
- A landed transaction is recorded with its slot, so statuses move processed -> confirmed (next slot) ->
  finalized (32 slots later), and replays answer ``AlreadyProcessed`` (LiteSVM's own history).
- :meth:`DevnetChain.advance_epoch` moves the Clock to the first slot of the next epoch. LiteSVM writes no
  stake history, so a delegation is fully active (a deactivation fully cooled down) once an epoch passes.

Account reads always see the latest state, whatever commitment they name; slots, blockhashes and
statuses honour the commitment. Every public method holds the one lock around the LiteSVM instance.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from solders.account import Account
from solders.clock import Clock
from solders.epoch_schedule import EpochSchedule
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import Message, MessageV0, MessageV1, from_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction, VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata, SimulatedTransactionInfo

from services.chain.solana.errors import (
    FaucetRequestInvalid,
    MinContextSlotNotReached,
    PreflightFailed,
    RpcParamsInvalid,
    SignatureVerificationFailed,
)
from services.chain.solana.programs import (
    STAKE_PROGRAM,
    VOTE_STATE_SIZE,
    create_vote_account,
    effective_stake,
    get_minimum_delegation,
)
from services.chain.solana.wire import describe_err, err_json

LAMPORTS_PER_SOL = 1_000_000_000
LAMPORTS_PER_SIGNATURE = 5_000
#: A blockhash is valid for this many slots after its own (Agave's MAX_PROCESSING_AGE).
MAX_PROCESSING_AGE = 150
#: Statuses older than this many slots are found only with ``searchTransactionHistory``.
STATUS_CACHE_SLOTS = 300
#: A slot is finalized (rooted) this many slots later; "confirmed" lags one slot.
FINALITY_DEPTH = 32
DEFAULT_SLOTS_PER_EPOCH = 432_000
VOTE_COMMISSION = 5
FAUCET_LAMPORTS = 500_000_000 * LAMPORTS_PER_SOL


class Commitment(StrEnum):
    PROCESSED = "processed"
    CONFIRMED = "confirmed"
    FINALIZED = "finalized"


_LAG = {Commitment.PROCESSED: 0, Commitment.CONFIRMED: 1, Commitment.FINALIZED: FINALITY_DEPTH}
_RANK = {Commitment.PROCESSED: 0, Commitment.CONFIRMED: 1, Commitment.FINALIZED: 2}


@dataclass(frozen=True)
class Landed:
    """A transaction the chain executed (successfully or not: a failed one pays its fee too)."""

    transaction: VersionedTransaction
    slot: int
    block_time: int
    err: Any
    fee: int
    logs: list[str]
    units_consumed: int
    pre_balances: list[int]
    post_balances: list[int]


@dataclass(frozen=True)
class Simulation:
    """What a simulation found; ``err`` is the JSON form of the transaction error (None: it would succeed)."""

    err: Any
    logs: list[str]
    units_consumed: int
    return_data: tuple[Pubkey, bytes] | None = None
    post_accounts: dict[Pubkey, Account] | None = None
    replacement: tuple[Hash, int] | None = None


@dataclass(frozen=True)
class VoteAccount:
    vote: Pubkey
    node: Pubkey
    commission: int


class DevnetChain:
    """LiteSVM with a cluster's clock, blockhash window, statuses, epochs, faucet and vote accounts.

    Args:
        slot_seconds: Wall time per slot (a cluster's is 0.4 s).
        slots_per_epoch: Slots per epoch; :meth:`advance_epoch` reaches the next one at once.
        seed: Makes the genesis hash, faucet and vote accounts reproducible; random by default.
        vote_accounts: How many vote accounts to create at genesis (stake is delegated to them).
    """

    def __init__(
        self,
        *,
        slot_seconds: float = 0.4,
        slots_per_epoch: int = DEFAULT_SLOTS_PER_EPOCH,
        seed: bytes | None = None,
        vote_accounts: int = 2,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if slot_seconds <= 0 or slots_per_epoch < MAX_PROCESSING_AGE:
            raise ValueError("slot_seconds must be positive and slots_per_epoch at least 150")
        self._lock = threading.Lock()
        self._slot_seconds = slot_seconds
        self._slots_per_epoch = slots_per_epoch
        self._monotonic = monotonic
        self._started = monotonic()
        self._slot_offset = 0
        self._floor = 0
        self._synced_slot = -1
        self._epoch_start = (0, int(time.time()))
        root = seed if seed is not None else Keypair().secret()
        self.genesis_hash = Hash(hashlib.sha256(b"custos.solana.devnet.genesis" + root).digest())
        self._faucet = Keypair.from_seed(self._derive(b"faucet"))
        self._records: dict[Signature, Landed] = {}
        self._svm = LiteSVM().with_blockhash_check(False)
        self._svm.set_epoch_schedule(EpochSchedule.custom(slots_per_epoch, slots_per_epoch, False))
        self._svm.set_account(
            self._faucet.pubkey(), Account(FAUCET_LAMPORTS, b"", Pubkey.default(), False, 0)
        )
        with self._lock:
            self._sync()
            self.vote_accounts = [self._create_vote_account(i) for i in range(vote_accounts)]
            self.stake_minimum_delegation = self._query_minimum_delegation()

    def _derive(self, label: bytes) -> bytes:
        return hashlib.sha256(bytes(self.genesis_hash) + label).digest()

    # -- time: slots, epochs, blockhashes ------------------------------------------------------

    def _current_slot(self) -> int:
        elapsed = self._monotonic() - self._started
        return int(elapsed / self._slot_seconds) + self._slot_offset

    def _sync(self) -> int:
        """Moves LiteSVM's Clock to the current slot; returns it (lock held)."""
        slot = self._current_slot()
        if slot != self._synced_slot:
            epoch = slot // self._slots_per_epoch
            now = int(time.time())
            if epoch != self._epoch_start[0]:
                self._epoch_start = (epoch, now)
            self._svm.set_clock(Clock(slot, self._epoch_start[1], epoch, epoch + 1, now))
            self._synced_slot = slot
        return slot

    def _bank_slot(self, commitment: Commitment, min_context_slot: int | None) -> int:
        """The slot of the bank ``commitment`` reads: "confirmed" and "finalized" lag the latest, but never
        to before the last jump of the clock (those slots were never produced)."""
        slot = max(self._floor, self._sync() - _LAG[commitment])
        if min_context_slot is not None and slot < min_context_slot:
            raise MinContextSlotNotReached("Minimum context slot has not been reached", context_slot=slot)
        return slot

    def blockhash_of(self, slot: int) -> Hash:
        """The blockhash of ``slot``: derived from the genesis hash, so nothing needs to be stored."""
        return Hash(hashlib.sha256(bytes(self.genesis_hash) + slot.to_bytes(8, "little")).digest())

    def _blockhash_slot(self, blockhash: Hash) -> int | None:
        """The slot of a blockhash still valid now, or None (lock held)."""
        current = self._sync()
        for slot in range(current, max(-1, current - MAX_PROCESSING_AGE - 1), -1):
            if self.blockhash_of(slot) == blockhash:
                return slot
        return None

    def slot(self, commitment: Commitment = Commitment.PROCESSED, min_context_slot: int | None = None) -> int:
        with self._lock:
            return self._bank_slot(commitment, min_context_slot)

    def latest_blockhash(
        self, commitment: Commitment = Commitment.PROCESSED, min_context_slot: int | None = None
    ) -> tuple[int, Hash, int]:
        """(bank slot, its blockhash, the last block height at which it is valid)."""
        with self._lock:
            slot = self._bank_slot(commitment, min_context_slot)
            return slot, self.blockhash_of(slot), slot + MAX_PROCESSING_AGE

    def is_blockhash_valid(self, blockhash: Hash) -> tuple[int, bool]:
        with self._lock:
            return self._sync(), self._blockhash_slot(blockhash) is not None

    def epoch_info(self, commitment: Commitment = Commitment.PROCESSED) -> dict[str, int]:
        with self._lock:
            slot = self._bank_slot(commitment, None)
            return {
                "absoluteSlot": slot,
                "blockHeight": slot,
                "epoch": slot // self._slots_per_epoch,
                "slotIndex": slot % self._slots_per_epoch,
                "slotsInEpoch": self._slots_per_epoch,
                "transactionCount": len(self._records),
            }

    def advance_slots(self, slots: int) -> int:
        """Moves the clock ``slots`` ahead at once (expires blockhashes without waiting); the new slot."""
        if slots < 0:
            raise RpcParamsInvalid("slots must not be negative")
        with self._lock:
            self._slot_offset += slots
            self._floor = self._sync()
            return self._floor

    def advance_epoch(self) -> tuple[int, int]:
        """Moves the Clock to the first slot of the next epoch; (epoch, slot).

        Stake delegated before it is active after it; stake deactivated before it has cooled down.
        """
        with self._lock:
            current = self._sync()
            epoch = current // self._slots_per_epoch + 1
            self._slot_offset += epoch * self._slots_per_epoch - current
            self._floor = self._sync()
            return epoch, self._floor

    # -- accounts ----------------------------------------------------------------------------

    def accounts(
        self, keys: Sequence[Pubkey], commitment: Commitment, min_context_slot: int | None
    ) -> tuple[int, list[Account | None]]:
        with self._lock:
            slot = self._bank_slot(commitment, min_context_slot)
            return slot, [self._account(k) for k in keys]

    def _account(self, key: Pubkey) -> Account | None:
        account = self._svm.get_account(key)
        # LiteSVM keeps emptied accounts as zero-lamport entries; a cluster has no such account.
        return account if account is not None and account.lamports > 0 else None

    def minimum_balance_for_rent_exemption(self, size: int) -> int:
        with self._lock:
            return int(self._svm.minimum_balance_for_rent_exemption(size))

    def fee_for_message(self, raw: bytes, commitment: Commitment) -> tuple[int, int | None]:
        """(slot, fee in lamports), the fee None when the message's blockhash is no longer valid."""
        try:
            message = from_bytes_versioned(raw)
        except ValueError as e:
            raise RpcParamsInvalid(f"invalid message: {e}") from e
        with self._lock:
            slot = self._bank_slot(commitment, None)
            if self._blockhash_slot(message.recent_blockhash) is None:
                return slot, None
        return slot, LAMPORTS_PER_SIGNATURE * message.header.num_required_signatures

    # -- transactions ------------------------------------------------------------------------

    def send(self, tx: VersionedTransaction, *, preflight: bool) -> Signature:
        """Executes ``tx`` as a cluster's sendTransaction would; returns its signature.

        With ``preflight``, a bad signature raises :class:`SignatureVerificationFailed` and a failing
        simulation :class:`PreflightFailed`. Without, the signature comes back whatever happens, and a
        transaction a leader would drop (bad signature, expired blockhash, replay, unpayable fee)
        simply never lands.
        """
        signature = tx.signatures[0]
        with self._lock:
            if preflight:
                if not all(tx.verify_with_results()):
                    raise SignatureVerificationFailed("Transaction signature verification failure")
                found = self._simulate(tx)
                if found.err is not None:
                    raise PreflightFailed(
                        f"Transaction simulation failed: {describe_err(found.err)}",
                        simulation={
                            "err": found.err,
                            "logs": found.logs,
                            "unitsConsumed": found.units_consumed,
                        },
                    )
            if self._refusal(tx) is None:
                self._process(tx)
        return signature

    def simulate(
        self, tx: VersionedTransaction, *, sig_verify: bool, replace_blockhash: bool, commitment: Commitment
    ) -> tuple[int, Simulation]:
        if sig_verify and replace_blockhash:
            raise RpcParamsInvalid("sigVerify may not be used with replaceRecentBlockhash")
        with self._lock:
            slot = self._bank_slot(commitment, None)
            if sig_verify and not all(tx.verify_with_results()):
                raise SignatureVerificationFailed("Transaction signature verification failure")
            replacement = None
            if replace_blockhash:
                current = self._sync()
                replacement = (self.blockhash_of(current), current + MAX_PROCESSING_AGE)
                tx = VersionedTransaction.populate(_with_blockhash(tx.message, replacement[0]), tx.signatures)
            self._svm.with_sigverify(sig_verify)
            try:
                found = self._simulate(tx)
            finally:
                self._svm.with_sigverify(True)
        if replacement is None:
            return slot, found
        return slot, Simulation(
            found.err, found.logs, found.units_consumed, found.return_data, found.post_accounts, replacement
        )

    def _refusal(self, tx: VersionedTransaction) -> Any:
        """Why a cluster would refuse ``tx`` before executing it (JSON error), or None (lock held)."""
        if self._blockhash_slot(tx.message.recent_blockhash) is None:
            return "BlockhashNotFound"
        if tx.signatures[0] in self._records:
            return "AlreadyProcessed"
        return None

    def _simulate(self, tx: VersionedTransaction) -> Simulation:
        refusal = self._refusal(tx)
        if refusal is not None:
            return Simulation(refusal, [], 0)
        result = self._svm.simulate_transaction(tx)
        if isinstance(result, FailedTransactionMetadata):
            meta = result.meta()
            return Simulation(err_json(result.err()), list(meta.logs()), meta.compute_units_consumed())
        assert isinstance(result, SimulatedTransactionInfo)
        meta = result.meta()
        returned = meta.return_data()
        data = bytes(returned.data)
        return Simulation(
            None,
            list(meta.logs()),
            meta.compute_units_consumed(),
            (returned.program_id, data) if data else None,
            {key: account for key, account in result.post_accounts()},
        )

    def _process(self, tx: VersionedTransaction) -> Landed | None:
        """Executes ``tx``; records and returns it if it landed (lock held)."""
        keys = list(tx.message.account_keys)
        pre = [self._balance(k) for k in keys]
        result = self._svm.send_transaction(tx)
        signature = tx.signatures[0]
        if self._svm.get_transaction(signature) is None:
            return None  # refused before execution: a leader drops it, it never lands
        if isinstance(result, FailedTransactionMetadata):
            meta, err = result.meta(), err_json(result.err())
        else:
            meta, err = result, None
        landed = Landed(
            transaction=tx,
            slot=self._synced_slot,
            block_time=int(time.time()),
            err=err,
            fee=meta.fee(),
            logs=list(meta.logs()),
            units_consumed=meta.compute_units_consumed(),
            pre_balances=pre,
            post_balances=[self._balance(k) for k in keys],
        )
        self._records[signature] = landed
        return landed

    def _balance(self, key: Pubkey) -> int:
        return int(self._svm.get_balance(key) or 0)

    def statuses(
        self, signatures: Sequence[Signature], search_history: bool
    ) -> tuple[int, list[tuple[Landed, Commitment, int] | None]]:
        """(slot, per signature None or (record, its commitment level, confirmations))."""
        with self._lock:
            current = self._sync()
            out: list[tuple[Landed, Commitment, int] | None] = []
            for signature in signatures:
                record = self._records.get(signature)
                if record is None or (not search_history and current - record.slot > STATUS_CACHE_SLOTS):
                    out.append(None)
                    continue
                out.append((record, _level(current - record.slot), current - record.slot))
            return current, out

    def transaction(self, signature: Signature, commitment: Commitment) -> Landed | None:
        """The landed transaction, once its status has reached ``commitment``."""
        with self._lock:
            record = self._records.get(signature)
            if record is None or _RANK[_level(self._sync() - record.slot)] < _RANK[commitment]:
                return None
            return record

    # -- faucet, vote accounts, stake --------------------------------------------------------

    def airdrop(self, to: Pubkey, lamports: int) -> Signature:
        """Transfers ``lamports`` from the faucet in a landed transaction; its signature."""
        if not isinstance(lamports, int) or isinstance(lamports, bool) or lamports <= 0:
            raise FaucetRequestInvalid(
                f"airdrop amount must be a positive number of lamports, not {lamports!r}"
            )
        with self._lock:
            if lamports > self._balance(self._faucet.pubkey()) - LAMPORTS_PER_SIGNATURE:
                raise FaucetRequestInvalid(f"the faucet cannot give {lamports} lamports")
            current = self._sync()
            # The same transfer twice in one slot would be one transaction: take an older valid blockhash.
            for slot in range(current, max(-1, current - MAX_PROCESSING_AGE - 1), -1):
                tx = self._faucet_tx(
                    [
                        transfer(
                            TransferParams(from_pubkey=self._faucet.pubkey(), to_pubkey=to, lamports=lamports)
                        )
                    ],
                    [],
                    slot,
                )
                if tx.signatures[0] not in self._records:
                    return self._land(tx)
        raise FaucetRequestInvalid("the faucet sent this transfer in every recent slot: retry in a moment")

    def _faucet_tx(
        self, instructions: list[Instruction], signers: list[Keypair], slot: int
    ) -> VersionedTransaction:
        message = Message.new_with_blockhash(instructions, self._faucet.pubkey(), self.blockhash_of(slot))
        return VersionedTransaction.from_legacy(
            Transaction([self._faucet, *signers], message, message.recent_blockhash)
        )

    def _land(self, tx: VersionedTransaction) -> Signature:
        """Executes one of the devnet's own transactions, which must succeed (lock held)."""
        landed = self._process(tx)
        if landed is None or landed.err is not None:
            reason = describe_err(landed.err) if landed is not None else "refused before execution"
            raise PreflightFailed(f"devnet transaction failed: {reason}", simulation={"err": None})
        return tx.signatures[0]

    def _create_vote_account(self, index: int) -> VoteAccount:
        """A vote account made by the Vote program, as a cluster's are (the faucet pays and withdraws)."""
        node = Keypair.from_seed(self._derive(b"node" + bytes([index])))
        vote = Keypair.from_seed(self._derive(b"vote" + bytes([index])))
        rent = int(self._svm.minimum_balance_for_rent_exemption(VOTE_STATE_SIZE))
        faucet = self._faucet.pubkey()
        instructions = create_vote_account(
            faucet, vote.pubkey(), node.pubkey(), faucet, lamports=rent, commission=VOTE_COMMISSION
        )
        self._land(self._faucet_tx(instructions, [vote, node], self._synced_slot))
        return VoteAccount(vote.pubkey(), node.pubkey(), VOTE_COMMISSION)

    def _query_minimum_delegation(self) -> int:
        """Asks the Stake program rather than assuming: the minimum depends on the active features."""
        found = self._simulate(self._faucet_tx([get_minimum_delegation()], [], self._synced_slot))
        if found.err is not None or found.return_data is None:
            raise PreflightFailed(
                "the Stake program did not answer GetMinimumDelegation", simulation={"err": found.err}
            )
        return int.from_bytes(found.return_data[1], "little")

    def vote_account_stakes(self, commitment: Commitment) -> tuple[int, dict[Pubkey, int]]:
        """(slot, active stake per vote account at the bank's epoch), read from the stake accounts."""
        with self._lock:
            slot = self._bank_slot(commitment, None)
            epoch = slot // self._slots_per_epoch
            stakes = {v.vote: 0 for v in self.vote_accounts}
            for _, account in self._svm.get_program_accounts(STAKE_PROGRAM):
                voter, amount = effective_stake(bytes(account.data), epoch)
                if voter in stakes:
                    stakes[voter] += amount
            return slot, stakes


def _level(depth: int) -> Commitment:
    if depth >= FINALITY_DEPTH:
        return Commitment.FINALIZED
    return Commitment.CONFIRMED if depth >= 1 else Commitment.PROCESSED


def _with_blockhash(message: Message | MessageV0 | MessageV1, blockhash: Hash) -> Message | MessageV0:
    if isinstance(message, MessageV1):
        raise RpcParamsInvalid("replaceRecentBlockhash: version 1 messages are not served here")
    header = message.header
    if isinstance(message, MessageV0):
        return MessageV0(
            header,
            list(message.account_keys),
            blockhash,
            list(message.instructions),
            list(message.address_table_lookups),
        )
    return Message.new_with_compiled_instructions(
        header.num_required_signatures,
        header.num_readonly_signed_accounts,
        header.num_readonly_unsigned_accounts,
        list(message.account_keys),
        blockhash,
        list(message.instructions),
    )
