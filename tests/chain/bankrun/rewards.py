"""Solana staking rewards on a real Agave bank, through custos's own transactions; prints JSON.

Run by ``.venv-bankrun/bin/python`` (``deploy/bootstrap.sh`` makes it), not by pytest:
``tests/chain/test_solana_rewards.py`` starts it in a subprocess. solders 0.21's ``bankrun``
(solana-program-test 1.18) is a real Agave ``Bank``: ``warp_to_slot`` crosses epoch boundaries
as a cluster does (StakeHistory, warmup and cooldown at the cluster's rate, inflation rewards to
the stake and vote accounts that earned credits). The devnet's LiteSVM (solders 0.29) has none of
that, and the two solders cannot share an environment: hence this environment and this process.
Only the standard library, solders 0.21, ``base58``, ``cryptography`` and ``pydantic`` are
installed there; the repository root goes on ``sys.path`` for the Solana family.

What is custos's here: every vault transaction (stake, deactivate, withdraw) is built by the
Solana family's ``build_unsigned`` and assembled by its ``assemble``, so the bytes the bank runs
are the ones custos signs. The vault key is an Ed25519 key made with ``cryptography`` in this
process: there is no HSM here (the family's SoftHSM signature is tested in
``tests/families/test_solana_family.py``); the signature is the same pure Ed25519 over the
message either way.

What is the test's scaffolding: a vote account made by the Vote program (the payer of the
program-test genesis funds it), credited ``CREDITS_PER_EPOCH`` vote credits each epoch with
``increment_vote_account_credits``. The genesis validator's 1M SOL of stake is the rest of the
cluster; its vote account earns no credits, so each epoch's validator inflation goes wholly to the
stake delegated to our vote account and to its commission. The amounts are therefore Solana's
inflation of the whole bank, not a mainnet yield; the test checks them against the inflation
schedule. The 300k SOL delegation is large against that 1M SOL cluster, so its warmup and
cooldown take several epochs at the cluster rate, as a large delegation's do.

Output: one JSON object on stdout (see ``main``); a failure is one line on stderr and exit 1.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from solders import bankrun  # type: ignore[attr-defined]  # mypy sees .venv's solders 0.29
from solders.epoch_schedule import EpochSchedule
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import (
    CreateAccountParams,
    TransferParams,
    create_account,
    transfer,
)
from solders.sysvar import CLOCK, EPOCH_SCHEDULE, RENT, STAKE_HISTORY
from solders.transaction import Transaction, VersionedTransaction

from services.families.config import ChainConfig, ChainFamily
from services.families.solana.family import (
    LAMPORTS_PER_SIGNATURE,
    SolanaFamily,
    build_unsigned,
    stake_account,
)
from services.families.solana.keys import b58
from services.runtime.intent import (
    Action,
    IntentSpec,
    StakeTarget,
    TargetParams,
    UnstakeTarget,
)

SOL = 10**9
VOTE_PROGRAM = Pubkey.from_string("Vote111111111111111111111111111111111111111")
#: Exists while an epoch's rewards are being paid (partitioned epoch rewards).
SYSVAR_EPOCH_REWARDS = Pubkey.from_string("SysvarEpochRewards1111111111111111111111111")
#: Bytes of a Vote program account (VoteStateVersions::vote_state_size_of).
VOTE_STATE_SIZE = 3762
COMMISSION = 10
CREDITS_PER_EPOCH = 1_000
FUNDING = 400_000 * SOL
STAKE = 300_000 * SOL
SEED = b"bankrun-rewards"
#: Epochs the stake stays fully active, earning, before the deactivation.
ACTIVE_EPOCHS = 2
#: A bound on the epochs of a warmup or cooldown: past it the bank is not doing what we expect.
MAX_TRANSITION_EPOCHS = 8
#: A bound on the slots the bank takes to pay an epoch's rewards (one, with our few accounts).
MAX_DISTRIBUTION_SLOTS = 16
_U64_MAX = 2**64 - 1
#: StakeStateV2's tag of a delegated account, and where its Delegation (voter, stake,
#: activation epoch, deactivation epoch) starts.
_STAKE_TAG = 2
_DELEGATION = 124


class RunFailed(Exception):
    """The bank did not do what the run needs; the message says what."""


@dataclass
class Run:
    """The bank, the vault and what the run has seen so far."""

    ctx: Any  # bankrun.ProgramTestContext (typed only in solders 0.21)
    schedule: EpochSchedule
    chain: ChainConfig
    key: Ed25519PrivateKey
    vote: Pubkey
    epochs: list[dict[str, Any]] = field(default_factory=list)
    transactions: dict[str, str] = field(default_factory=dict)
    refusals: list[dict[str, Any]] = field(default_factory=list)

    @property
    def public_key(self) -> bytes:
        return self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def vault(self) -> Pubkey:
        return Pubkey(self.public_key)

    @property
    def stake(self) -> Pubkey:
        return Pubkey(stake_account(self.public_key, SEED))

    async def epoch(self) -> int:
        return int((await self.ctx.banks_client.get_clock()).epoch)

    async def slot(self) -> int:
        return int(await self.ctx.banks_client.get_slot())

    async def lamports(self, address: Pubkey) -> int:
        return int(await self.ctx.banks_client.get_balance(address))

    async def signed(self, spec: IntentSpec, step: str, withdraw_lamports: int = 0) -> VersionedTransaction:
        """Step ``step`` of ``spec`` as custos builds and assembles it, on a fresh blockhash."""
        blockhash, _ = await self.ctx.banks_client.get_latest_blockhash()
        unsigned = build_unsigned(
            self.chain,
            spec,
            step,
            public_key=self.public_key,
            recent_blockhash=bytes(blockhash),
            withdraw_lamports=withdraw_lamports,
        )
        signed = SolanaFamily().assemble(self.chain, unsigned, self.key.sign(unsigned), self.public_key)
        return VersionedTransaction.from_bytes(signed.signed_tx)

    async def send(self, spec: IntentSpec, step: str, withdraw_lamports: int = 0) -> None:
        tx = await self.signed(spec, step, withdraw_lamports)
        refusal = await self.refusal(tx)
        if refusal is not None:
            raise RunFailed(f"the bank refused the {step} transaction: {refusal}")
        await self.ctx.banks_client.process_transaction(tx)
        self.transactions[step] = str(tx.signatures[0])

    async def refusal(self, tx: VersionedTransaction) -> str | None:
        """Why the bank would refuse ``tx`` (None: it would run it)."""
        result = await self.ctx.banks_client.simulate_transaction(tx)
        return None if result.result is None else str(result.result)

    async def snapshot(self) -> None:
        """Records the stake account, the vote account and the vault at the current epoch."""
        epoch = await self.epoch()
        account = await self.ctx.banks_client.get_account(self.stake)
        data = bytes(account.data) if account is not None else bytes(4)
        voter, delegated, activation, deactivation = (
            struct.unpack_from("<32sQQQ", data, _DELEGATION)
            if struct.unpack_from("<I", data)[0] == _STAKE_TAG
            else (b"", 0, None, None)
        )
        if voter and voter != bytes(self.vote):
            raise RunFailed("the stake account is delegated to another vote account")
        self.epochs.append(
            {
                "epoch": epoch,
                "slot": await self.slot(),
                "first_slot": self.schedule.get_first_slot_in_epoch(epoch),
                "slots": self.schedule.get_slots_in_epoch(epoch),
                "stake_lamports": account.lamports if account is not None else 0,
                "delegated_stake": delegated,
                "activation_epoch": activation,
                "deactivation_epoch": None if deactivation == _U64_MAX else deactivation,
                "vote_lamports": await self.lamports(self.vote),
                "vault_lamports": await self.lamports(self.vault),
            }
        )

    async def next_epoch(self) -> None:
        """Credits the vote account for this epoch, crosses into the next one and records it once
        the epoch's rewards are paid.

        Rewards are partitioned (Agave 1.18 with every feature on, as mainnet): the first block
        of an epoch computes them and the following blocks pay them; until then the Stake program
        refuses to touch a stake account (ProgramExecutionTemporarilyRestricted). So the run
        moves on a block at a time until the EpochRewards sysvar is gone.
        """
        epoch = await self.epoch()
        self.ctx.increment_vote_account_credits(self.vote, CREDITS_PER_EPOCH)
        slot = self.schedule.get_first_slot_in_epoch(epoch + 1)
        self.ctx.warp_to_slot(slot)
        for _ in range(MAX_DISTRIBUTION_SLOTS):
            if await self.ctx.banks_client.get_account(SYSVAR_EPOCH_REWARDS) is None:
                break
            slot += 1
            self.ctx.warp_to_slot(slot)
        else:
            raise RunFailed(
                f"epoch {epoch + 1}'s rewards were still being paid {MAX_DISTRIBUTION_SLOTS} slots in"
            )
        if await self.epoch() != epoch + 1:
            raise RunFailed(f"warping past epoch {epoch} did not reach epoch {epoch + 1}")
        await self.snapshot()


async def create_vote_account(ctx: Any) -> Pubkey:
    """CreateAccount + Vote InitializeAccount (u32 0, VoteInit{node, voter, withdrawer, commission}),
    as a validator makes its vote account; the node identity is also the authorized voter."""
    payer, node, vote = ctx.payer, Keypair(), Keypair()
    rent = await ctx.banks_client.get_rent()
    create = create_account(
        CreateAccountParams(
            from_pubkey=payer.pubkey(),
            to_pubkey=vote.pubkey(),
            lamports=rent.minimum_balance(VOTE_STATE_SIZE),
            space=VOTE_STATE_SIZE,
            owner=VOTE_PROGRAM,
        )
    )
    vote_init = bytes(node.pubkey()) * 2 + bytes(payer.pubkey()) + bytes([COMMISSION])
    initialize = Instruction(
        VOTE_PROGRAM,
        struct.pack("<I", 0) + vote_init,
        [
            AccountMeta(vote.pubkey(), is_signer=False, is_writable=True),
            AccountMeta(RENT, is_signer=False, is_writable=False),
            AccountMeta(CLOCK, is_signer=False, is_writable=False),
            AccountMeta(node.pubkey(), is_signer=True, is_writable=False),
        ],
    )
    await _payer_sends(ctx, [create, initialize], [vote, node])
    return vote.pubkey()


async def _payer_sends(ctx: Any, instructions: list[Instruction], signers: list[Keypair]) -> None:
    blockhash, _ = await ctx.banks_client.get_latest_blockhash()
    message = Message(instructions, ctx.payer.pubkey())
    await ctx.banks_client.process_transaction(Transaction([ctx.payer, *signers], message, blockhash))


def stake_history(data: bytes) -> dict[int, dict[str, int]]:
    """The StakeHistory sysvar: a bincode Vec of (epoch, {effective, activating, deactivating})."""
    (count,) = struct.unpack_from("<Q", data)
    entries = (struct.unpack_from("<QQQQ", data, 8 + 32 * i) for i in range(count))
    return {
        epoch: {"effective": effective, "activating": activating, "deactivating": deactivating}
        for epoch, effective, activating, deactivating in entries
    }


def with_cluster(epochs: list[dict[str, Any]], history: dict[int, dict[str, int]]) -> None:
    """Adds to each epoch the cluster's StakeHistory entry (written when the epoch ends), our
    part of it and the rewards paid at the epoch's start (for the epoch before it).

    Ours is the only stake that ever activates or deactivates, and the genesis validator's stake
    earns nothing (no credits) so stays what it was at our activation epoch: our effective stake
    is the cluster's less that, our activating and deactivating stake the cluster's.
    """
    activation = next(e["activation_epoch"] for e in epochs if e["activation_epoch"] is not None)
    others = history[activation]["effective"]
    previous: dict[str, Any] | None = None
    for record in epochs:
        cluster = history.get(record["epoch"])
        record["cluster"] = cluster
        record["effective"] = cluster["effective"] - others if cluster else None
        record["activating"] = cluster["activating"] if cluster else None
        record["deactivating"] = cluster["deactivating"] if cluster else None
        record["reward"] = record["stake_lamports"] - previous["stake_lamports"] if previous else 0
        record["commission_reward"] = record["vote_lamports"] - previous["vote_lamports"] if previous else 0
        previous = record


async def stake_and_earn(run: Run, spec: IntentSpec) -> None:
    """STAKE, then warp until the warmup is over and ``ACTIVE_EPOCHS`` epochs more."""
    await run.send(spec, "stake")
    await run.snapshot()
    for _ in range(MAX_TRANSITION_EPOCHS):
        await run.next_epoch()
        history = stake_history(bytes((await run.ctx.banks_client.get_account(STAKE_HISTORY)).data))
        if history[run.epochs[-1]["epoch"] - 1]["activating"] == 0:
            break
    else:
        raise RunFailed(f"the stake was still activating after {MAX_TRANSITION_EPOCHS} epochs")
    for _ in range(ACTIVE_EPOCHS):
        await run.next_epoch()


async def unstake(run: Run, spec: IntentSpec) -> int:
    """UNSTAKE: deactivate, then each epoch try the withdrawal of the whole balance (refused while
    cooling down: recorded), and send it once the bank would run it. Returns what it withdrew."""
    await run.send(spec, "deactivate")
    run.epochs.pop()  # the epoch's record, read again with the deactivation in it
    await run.snapshot()
    for _ in range(MAX_TRANSITION_EPOCHS):
        balance = await run.lamports(run.stake)
        refusal = await run.refusal(await run.signed(spec, "withdraw", balance))
        if refusal is None:
            await run.send(spec, "withdraw", balance)
            return balance
        run.refusals.append({"epoch": await run.epoch(), "withdraw_lamports": balance, "error": refusal})
        await run.next_epoch()
    raise RunFailed(f"the withdrawal was still refused {MAX_TRANSITION_EPOCHS} epochs after deactivating")


async def main() -> dict[str, Any]:
    """The run; its JSON: the accounts, the amounts, the refused withdrawals, the final balances
    and one record per epoch: the stake account's lamports and delegation, the vote account's and
    the vault's lamports (read once the epoch's rewards are paid, and after a step sent in it),
    then what :func:`with_cluster` adds (activation from the StakeHistory, the rewards)."""
    ctx = await bankrun.start()
    schedule = EpochSchedule.from_bytes(bytes((await ctx.banks_client.get_account(EPOCH_SCHEDULE)).data))
    blockhash, _ = await ctx.banks_client.get_latest_blockhash()
    chain = ChainConfig(
        name="solana-bankrun",
        family=ChainFamily.SOLANA,
        chain_id=str(blockhash),  # bankrun tells no genesis hash; its first blockhash names the run
        rpc_url="bankrun:in-process",
        denom="lamports",
        display_unit="SOL",
        display_exponent=9,
        max_fee_wei=50_000,
    )
    run = Run(ctx, schedule, chain, Ed25519PrivateKey.generate(), await create_vote_account(ctx))
    await _payer_sends(
        ctx,
        [transfer(TransferParams(from_pubkey=ctx.payer.pubkey(), to_pubkey=run.vault, lamports=FUNDING))],
        [],
    )
    params = TargetParams.of({"seed": SEED})
    vote = str(run.vote)
    await stake_and_earn(
        run, IntentSpec(Action.STAKE, chain.name, "vault-bankrun", STAKE, StakeTarget(vote, params))
    )
    withdrawn = await unstake(
        run, IntentSpec(Action.UNSTAKE, chain.name, "vault-bankrun", 0, UnstakeTarget(vote, params))
    )
    history = stake_history(bytes((await ctx.banks_client.get_account(STAKE_HISTORY)).data))
    with_cluster(run.epochs, history)
    return {
        "vault": b58(run.public_key),
        "vote_account": vote,
        "stake_account": str(run.stake),
        "commission": COMMISSION,
        "credits_per_epoch": CREDITS_PER_EPOCH,
        "funding": FUNDING,
        "stake_amount": STAKE,
        "fee_per_transaction": LAMPORTS_PER_SIGNATURE,
        "transactions": run.transactions,
        "epochs": run.epochs,
        "withdraw_refusals": run.refusals,
        "final": {
            "epoch": await run.epoch(),
            "withdrawn": withdrawn,
            "vault_lamports": await run.lamports(run.vault),
            "stake_account_lamports": await run.lamports(run.stake),
        },
    }


def _exit(code: int) -> None:
    """Leaves without Python's finalization: bankrun's Rust threads (its banks server, its
    simulated PoH) outlive ``asyncio.run``, and finalizing under them aborts the process now
    and then (``PyGILState_Release: thread state must be current``) after the output is out."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    try:
        print(json.dumps(asyncio.run(main()), indent=1))
    except (RunFailed, bankrun.BanksClientError) as e:
        print(f"bankrun rewards run failed: {e}", file=sys.stderr)
        _exit(1)
    _exit(0)
