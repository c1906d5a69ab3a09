"""Solana public keys: 32 bytes, spelt in base58; program ids and seeded addresses.

An address is canonical when it is the base58 of exactly 32 bytes with no leading-zero
padding games: decoding then encoding gives the same text back.
"""

from __future__ import annotations

import hashlib
from typing import NewType

import base58

from services.families.errors import AddressInvalid

#: A 32-byte public key (an account address, a program id).
Pubkey = NewType("Pubkey", bytes)

PUBKEY_LENGTH = 32
MAX_SEED_LENGTH = 32


def pubkey(text: str) -> Pubkey:
    """The key ``text`` spells (for constants: raises ``ValueError`` if it is not one)."""
    raw = base58.b58decode(text)
    if len(raw) != PUBKEY_LENGTH:
        raise ValueError(f"{text} is not a 32-byte key")
    return Pubkey(raw)


def b58(key: bytes) -> str:
    return base58.b58encode(key).decode("ascii")


SYSTEM_PROGRAM = pubkey("11111111111111111111111111111111")
STAKE_PROGRAM = pubkey("Stake11111111111111111111111111111111111111")
STAKE_CONFIG = pubkey("StakeConfig11111111111111111111111111111111")
VOTE_PROGRAM = pubkey("Vote111111111111111111111111111111111111111")
COMPUTE_BUDGET_PROGRAM = pubkey("ComputeBudget111111111111111111111111111111")
SYSVAR_CLOCK = pubkey("SysvarC1ock11111111111111111111111111111111")
SYSVAR_RENT = pubkey("SysvarRent111111111111111111111111111111111")
SYSVAR_STAKE_HISTORY = pubkey("SysvarStakeHistory1111111111111111111111111")

#: Names of the well-known accounts, for messages a person reads.
KNOWN = {
    SYSTEM_PROGRAM: "System program",
    STAKE_PROGRAM: "Stake program",
    STAKE_CONFIG: "stake config",
    VOTE_PROGRAM: "Vote program",
    COMPUTE_BUDGET_PROGRAM: "ComputeBudget program",
    SYSVAR_CLOCK: "clock sysvar",
    SYSVAR_RENT: "rent sysvar",
    SYSVAR_STAKE_HISTORY: "stake history sysvar",
}


def parse(text: object, what: str) -> Pubkey:
    """The 32 bytes of a canonical base58 key; raises ``AddressInvalid`` for anything else."""
    if not isinstance(text, str) or not text or not text.isascii():
        raise AddressInvalid(f"{what} must be a base58 string")
    try:
        raw = base58.b58decode(text)
    except ValueError:
        raise AddressInvalid(f"{what} is not base58") from None
    if len(raw) != PUBKEY_LENGTH:
        raise AddressInvalid(f"{what} does not encode a 32-byte key ({len(raw)} bytes)")
    return Pubkey(raw)


def normalise(text: object, what: str) -> str:
    """``text`` re-spelt from its 32 bytes (base58 has one spelling per value; this refuses
    anything that decodes to another length)."""
    return b58(parse(text, what))


def seed_valid(seed: bytes) -> bool:
    """A seed custos uses: 1 to 32 printable ASCII characters (space to ``~``)."""
    return 1 <= len(seed) <= MAX_SEED_LENGTH and all(0x20 <= c <= 0x7E for c in seed)


def create_with_seed(base: bytes, seed: bytes, owner: bytes) -> Pubkey:
    """The address ``create_with_seed`` gives: sha256(base || seed || owner).

    Seeded addresses are not checked against the curve: none of their keys can sign.
    """
    if len(seed) > MAX_SEED_LENGTH:
        raise ValueError("a seed is at most 32 bytes")
    return Pubkey(hashlib.sha256(base + seed + owner).digest())
