"""The System and Stake program instructions custos builds, and their strict readers.

Instruction data is bincode: a u32 little-endian variant, then the fields (integers little
endian, a ``String`` as a u64 length and its bytes). Account lists are the ones every
Stake program accepts (the native one and the core BPF one that replaced it), sysvars
included, as ``@solana/web3.js`` 1.x ``StakeProgram`` writes them:

- System ``CreateAccountWithSeed`` (3): funder (signer, writable), new account (writable);
  the base is the funder, so it is not listed twice;
- Stake ``Initialize`` (0): stake (writable), rent sysvar;
- Stake ``DelegateStake`` (2): stake (writable), vote, clock, stake history, stake config,
  stake authority (signer);
- Stake ``Withdraw`` (4): stake (writable), recipient (writable), clock, stake history,
  withdraw authority (signer);
- Stake ``Deactivate`` (5): stake (writable), clock, stake authority (signer).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from services.families.solana.keys import (
    STAKE_CONFIG,
    STAKE_PROGRAM,
    SYSTEM_PROGRAM,
    SYSVAR_CLOCK,
    SYSVAR_RENT,
    SYSVAR_STAKE_HISTORY,
    Pubkey,
)
from services.families.solana.message import AccountMeta, Instruction

#: Bytes of a stake account (``StakeStateV2``).
STAKE_ACCOUNT_SPACE = 200
#: Lamports that keep a 200-byte account rent-exempt at Solana's rent
#: ((128 + 200) bytes x 3480 lamports x 2 years): what a stake account holds besides its stake.
STAKE_ACCOUNT_RENT_EXEMPT = (128 + STAKE_ACCOUNT_SPACE) * 3480 * 2

SYSTEM_CREATE_ACCOUNT_WITH_SEED = 3
STAKE_INITIALIZE = 0
STAKE_DELEGATE = 2
STAKE_WITHDRAW = 4
STAKE_DEACTIVATE = 5


@dataclass(frozen=True)
class Role:
    """An account an instruction names, with the flags custos gives it."""

    name: str
    key: Pubkey
    signer: bool = False
    writable: bool = False

    def meta(self) -> AccountMeta:
        return AccountMeta(self.key, self.signer, self.writable)


@dataclass(frozen=True)
class Built:
    """An instruction custos builds: its name, program, accounts by role and data fields."""

    name: str
    program: Pubkey
    roles: tuple[Role, ...]
    fields: tuple[tuple[str, object], ...]
    data: bytes

    def instruction(self) -> Instruction:
        return Instruction(self.program, tuple(r.meta() for r in self.roles), self.data)


def _u32(value: int) -> bytes:
    return struct.pack("<I", value)


def _u64(value: int) -> bytes:
    return struct.pack("<Q", value)


def create_account_with_seed(funder: Pubkey, account: Pubkey, seed: bytes, lamports: int) -> Built:
    """System ``CreateAccountWithSeed`` of a stake account, funded and based on ``funder``."""
    fields = (
        ("base", funder),
        ("seed", seed),
        ("amount", lamports),
        ("space", STAKE_ACCOUNT_SPACE),
        ("owner", STAKE_PROGRAM),
    )
    data = (
        _u32(SYSTEM_CREATE_ACCOUNT_WITH_SEED)
        + funder
        + _u64(len(seed))
        + seed
        + _u64(lamports)
        + _u64(STAKE_ACCOUNT_SPACE)
        + STAKE_PROGRAM
    )
    roles = (
        Role("fee payer", funder, signer=True, writable=True),
        Role("stake account", account, writable=True),
    )
    return Built("CreateAccountWithSeed", SYSTEM_PROGRAM, roles, fields, data)


#: No lockup: unix timestamp 0, epoch 0, custodian the zero key.
NO_LOCKUP = (0, 0, Pubkey(bytes(32)))


def initialize(stake: Pubkey, authority: Pubkey) -> Built:
    """Stake ``Initialize`` with staker = withdrawer = ``authority`` and no lockup."""
    timestamp, epoch, custodian = NO_LOCKUP
    data = _u32(STAKE_INITIALIZE) + authority + authority + struct.pack("<qQ", timestamp, epoch) + custodian
    fields = (("staker", authority), ("withdrawer", authority), ("lockup", NO_LOCKUP))
    roles = (Role("stake account", stake, writable=True), Role("rent sysvar", SYSVAR_RENT))
    return Built("Initialize", STAKE_PROGRAM, roles, fields, data)


def delegate(stake: Pubkey, vote: Pubkey, authority: Pubkey) -> Built:
    roles = (
        Role("stake account", stake, writable=True),
        Role("vote account", vote),
        Role("clock sysvar", SYSVAR_CLOCK),
        Role("stake history sysvar", SYSVAR_STAKE_HISTORY),
        Role("stake config", STAKE_CONFIG),
        Role("stake authority", authority, signer=True),
    )
    return Built("DelegateStake", STAKE_PROGRAM, roles, (), _u32(STAKE_DELEGATE))


def deactivate(stake: Pubkey, authority: Pubkey) -> Built:
    roles = (
        Role("stake account", stake, writable=True),
        Role("clock sysvar", SYSVAR_CLOCK),
        Role("stake authority", authority, signer=True),
    )
    return Built("Deactivate", STAKE_PROGRAM, roles, (), _u32(STAKE_DEACTIVATE))


def withdraw(stake: Pubkey, recipient: Pubkey, authority: Pubkey, lamports: int) -> Built:
    roles = (
        Role("stake account", stake, writable=True),
        Role("recipient", recipient, writable=True),
        Role("clock sysvar", SYSVAR_CLOCK),
        Role("stake history sysvar", SYSVAR_STAKE_HISTORY),
        Role("withdraw authority", authority, signer=True),
    )
    return Built(
        "Withdraw",
        STAKE_PROGRAM,
        roles,
        (("withdraw amount", lamports),),
        _u32(STAKE_WITHDRAW) + _u64(lamports),
    )


# -- reading ----------------------------------------------------------------------------------


class DataInvalid(ValueError):
    """Instruction data that is not one of the layouts above."""


def _variant(data: bytes) -> int:
    if len(data) < 4:
        raise DataInvalid("instruction data shorter than its variant")
    return int(struct.unpack_from("<I", data)[0])


def read_fields(program: bytes, data: bytes) -> tuple[str, tuple[tuple[str, object], ...]]:
    """(instruction name, fields) of data custos might have written; ``DataInvalid`` otherwise.

    Reads the same fields :class:`Built` lists, so a difference can be named field by field.
    """
    variant = _variant(data)
    if program == SYSTEM_PROGRAM and variant == SYSTEM_CREATE_ACCOUNT_WITH_SEED:
        if len(data) < 4 + 32 + 8:
            raise DataInvalid("CreateAccountWithSeed data is too short")
        (seed_length,) = struct.unpack_from("<Q", data, 36)
        if len(data) != 44 + seed_length + 8 + 8 + 32:
            raise DataInvalid("CreateAccountWithSeed data has the wrong length for its seed")
        seed = data[44 : 44 + seed_length]
        lamports, space = struct.unpack_from("<QQ", data, 44 + seed_length)
        owner = data[60 + seed_length :]
        return "CreateAccountWithSeed", (
            ("base", data[4:36]),
            ("seed", seed),
            ("amount", lamports),
            ("space", space),
            ("owner", owner),
        )
    if program != STAKE_PROGRAM:
        raise DataInvalid("not a System CreateAccountWithSeed or a Stake instruction")
    if variant == STAKE_INITIALIZE:
        if len(data) != 4 + 32 + 32 + 8 + 8 + 32:
            raise DataInvalid("Initialize data has the wrong length")
        timestamp, epoch = struct.unpack_from("<qQ", data, 68)
        lockup = (timestamp, epoch, data[84:116])
        return "Initialize", (("staker", data[4:36]), ("withdrawer", data[36:68]), ("lockup", lockup))
    if variant in (STAKE_DELEGATE, STAKE_DEACTIVATE):
        if len(data) != 4:
            raise DataInvalid("DelegateStake and Deactivate carry no data beyond their variant")
        return ("DelegateStake" if variant == STAKE_DELEGATE else "Deactivate"), ()
    if variant == STAKE_WITHDRAW:
        if len(data) != 12:
            raise DataInvalid("Withdraw data is its variant and a u64")
        return "Withdraw", (("withdraw amount", struct.unpack_from("<Q", data, 4)[0]),)
    raise DataInvalid(f"Stake instruction {variant} is not one custos builds")
