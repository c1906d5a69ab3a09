"""The few native-program bytes the devnet itself needs: a Vote account's set-up, the Stake program's
minimum-delegation query, and reading a stake account's delegation (bincode, as the programs define it).

Building stake instructions for custos is the Solana family's job; nothing here is used by the product.
"""

from __future__ import annotations

import struct

from solders.instruction import AccountMeta, Instruction
from solders.pubkey import Pubkey
from solders.system_program import CreateAccountParams, create_account
from solders.sysvar import CLOCK, RENT

STAKE_PROGRAM = Pubkey.from_string("Stake11111111111111111111111111111111111111")
VOTE_PROGRAM = Pubkey.from_string("Vote111111111111111111111111111111111111111")
#: The size of a Vote program account (VoteStateVersions::vote_state_size_of).
VOTE_STATE_SIZE = 3762
_U64_MAX = 2**64 - 1
#: StakeStateV2 tag of a delegated stake account, and where its Delegation starts.
_STAKE_TAG = 2
_DELEGATION_OFFSET = 124


def create_vote_account(
    payer: Pubkey, vote: Pubkey, node: Pubkey, withdrawer: Pubkey, *, lamports: int, commission: int
) -> list[Instruction]:
    """CreateAccount + Vote InitializeAccount (u32 0, VoteInit{node, voter, withdrawer, commission u8}).

    The node identity is also the authorized voter; ``vote`` and ``node`` sign.
    """
    create = create_account(
        CreateAccountParams(
            from_pubkey=payer, to_pubkey=vote, lamports=lamports, space=VOTE_STATE_SIZE, owner=VOTE_PROGRAM
        )
    )
    data = struct.pack("<I", 0) + bytes(node) + bytes(node) + bytes(withdrawer) + bytes([commission])
    initialize = Instruction(
        VOTE_PROGRAM,
        data,
        [
            AccountMeta(vote, is_signer=False, is_writable=True),
            AccountMeta(RENT, is_signer=False, is_writable=False),
            AccountMeta(CLOCK, is_signer=False, is_writable=False),
            AccountMeta(node, is_signer=True, is_writable=False),
        ],
    )
    return [create, initialize]


def get_minimum_delegation() -> Instruction:
    """Stake GetMinimumDelegation (u32 13): the program answers in its return data (u64 LE)."""
    return Instruction(STAKE_PROGRAM, struct.pack("<I", 13), [])


def effective_stake(data: bytes, epoch: int) -> tuple[Pubkey | None, int]:
    """(vote account, effective stake at ``epoch``) of a stake account's data.

    LiteSVM writes no stake history, and without history the Stake program takes a delegation as fully
    effective from the epoch after its activation through its deactivation epoch; so does this.
    """
    if len(data) < _DELEGATION_OFFSET + 56 or struct.unpack_from("<I", data, 0)[0] != _STAKE_TAG:
        return None, 0
    voter = Pubkey(data[_DELEGATION_OFFSET : _DELEGATION_OFFSET + 32])
    amount, activation, deactivation = struct.unpack_from("<QQQ", data, _DELEGATION_OFFSET + 32)
    if activation == _U64_MAX:
        activation = -1  # a bootstrap stake is active from genesis
    active = (
        activation < epoch
        and activation != deactivation
        and (deactivation == _U64_MAX or epoch <= deactivation)
    )
    return voter, amount if active else 0
