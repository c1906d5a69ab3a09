"""Legacy Solana messages and transactions, written and read strictly by hand.

A legacy message is a header (required signatures, read-only signed, read-only unsigned
accounts), the account keys (compact-u16 count, 32 bytes each), the recent blockhash and the
instructions (program index, account indices, data; each list compact-u16 counted). A
transaction is the signatures (compact-u16 count, 64 bytes each) followed by the message.
The reader refuses versioned messages, non-minimal compact-u16, duplicate keys, indices out
of range and trailing bytes: what it accepts serializes back to the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from services.families.errors import TransactionInvalid
from services.families.solana.keys import PUBKEY_LENGTH, Pubkey

SIGNATURE_LENGTH = 64
BLOCKHASH_LENGTH = 32
_MAX_U16 = 0xFFFF


def compact_u16(value: int) -> bytes:
    """``value`` in Solana's short-vec encoding: 7 bits a byte, low bits first, 1 to 3 bytes."""
    if not 0 <= value <= _MAX_U16:
        raise ValueError("compact-u16 holds 0..65535")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class Reader:
    """Reads bytes front to back; every shortfall or oddity is a ``TransactionInvalid``."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def take(self, n: int, what: str) -> bytes:
        if self._at + n > len(self._data):
            raise TransactionInvalid(f"the transaction ends inside its {what}")
        chunk = self._data[self._at : self._at + n]
        self._at += n
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def compact_u16(self, what: str) -> int:
        """A short-vec length, refused unless in its one minimal spelling and at most 65535."""
        value = 0
        for i in range(3):
            byte = self.u8(what)
            if i == 2 and byte > 0x03:
                raise TransactionInvalid(f"the {what} is above 65535")
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if i and byte == 0:
                    raise TransactionInvalid(f"the {what} is not minimally encoded")
                return value
        raise TransactionInvalid(f"the {what} is longer than 3 bytes")  # pragma: no cover - i == 2 ends it

    def end(self) -> None:
        if self._at != len(self._data):
            raise TransactionInvalid(f"{len(self._data) - self._at} bytes follow the transaction")


@dataclass(frozen=True)
class AccountMeta:
    key: Pubkey
    signer: bool
    writable: bool


@dataclass(frozen=True)
class Instruction:
    """An instruction with its accounts spelt out (flags as the message grants them)."""

    program: Pubkey
    accounts: tuple[AccountMeta, ...]
    data: bytes


@dataclass(frozen=True)
class CompiledInstruction:
    program_index: int
    account_indices: tuple[int, ...]
    data: bytes


@dataclass(frozen=True)
class Message:
    """A legacy message. ``header`` = (required signatures, read-only signed, read-only unsigned)."""

    header: tuple[int, int, int]
    keys: tuple[Pubkey, ...]
    blockhash: bytes
    instructions: tuple[CompiledInstruction, ...]

    @property
    def fee_payer(self) -> Pubkey:
        return self.keys[0]

    @property
    def signers(self) -> tuple[Pubkey, ...]:
        return self.keys[: self.header[0]]

    def is_signer(self, index: int) -> bool:
        return index < self.header[0]

    def is_writable(self, index: int) -> bool:
        required, readonly_signed, readonly_unsigned = self.header
        if index < required:
            return index < required - readonly_signed
        return index < len(self.keys) - readonly_unsigned

    def meta(self, index: int) -> AccountMeta:
        return AccountMeta(self.keys[index], self.is_signer(index), self.is_writable(index))

    def resolved(self) -> tuple[Instruction, ...]:
        """The instructions with keys and flags in place of indices."""
        return tuple(
            Instruction(
                program=self.keys[ix.program_index],
                accounts=tuple(self.meta(i) for i in ix.account_indices),
                data=ix.data,
            )
            for ix in self.instructions
        )

    def serialize(self) -> bytes:
        out = bytearray(self.header)
        out += compact_u16(len(self.keys))
        for key in self.keys:
            out += key
        out += self.blockhash
        out += compact_u16(len(self.instructions))
        for ix in self.instructions:
            out.append(ix.program_index)
            out += compact_u16(len(ix.account_indices))
            out += bytes(ix.account_indices)
            out += compact_u16(len(ix.data))
            out += ix.data
        return bytes(out)


def compile_message(instructions: Iterable[Instruction], payer: Pubkey, blockhash: bytes) -> Message:
    """The legacy message Solana's own compiler makes (``Message::new_with_blockhash``).

    Keys are grouped as writable signers (the fee payer first), read-only signers, writable
    and read-only non-signers; each group in byte order of the keys; a key's flags are the
    union of every use; program ids are read-only non-signers unless used otherwise.
    """
    ixs = tuple(instructions)
    if len(blockhash) != BLOCKHASH_LENGTH:
        raise ValueError("a blockhash is 32 bytes")
    flags: dict[Pubkey, tuple[bool, bool]] = {}
    for ix in ixs:
        flags.setdefault(ix.program, (False, False))
        for meta in ix.accounts:
            signer, writable = flags.get(meta.key, (False, False))
            flags[meta.key] = (signer or meta.signer, writable or meta.writable)
    flags[payer] = (True, True)
    others = sorted(k for k in flags if k != payer)
    groups = [
        [k for k in others if flags[k] == (True, True)],
        [k for k in others if flags[k] == (True, False)],
        [k for k in others if flags[k] == (False, True)],
        [k for k in others if flags[k] == (False, False)],
    ]
    keys = (payer, *groups[0], *groups[1], *groups[2], *groups[3])
    if len(keys) > 256:
        raise ValueError("a legacy message holds at most 256 accounts")
    index = {k: i for i, k in enumerate(keys)}
    header = (1 + len(groups[0]) + len(groups[1]), len(groups[1]), len(groups[3]))
    compiled = tuple(
        CompiledInstruction(index[ix.program], tuple(index[m.key] for m in ix.accounts), ix.data)
        for ix in ixs
    )
    return Message(header=header, keys=keys, blockhash=bytes(blockhash), instructions=compiled)


def _read_message(reader: Reader) -> Message:
    first = reader.u8("header")
    if first & 0x80:
        raise TransactionInvalid("a versioned message: custos builds legacy messages only")
    header = (first, reader.u8("header"), reader.u8("header"))
    count = reader.compact_u16("account count")
    keys = tuple(Pubkey(reader.take(PUBKEY_LENGTH, "account keys")) for _ in range(count))
    blockhash = reader.take(BLOCKHASH_LENGTH, "blockhash")
    instructions = []
    for _ in range(reader.compact_u16("instruction count")):
        program = reader.u8("instruction")
        accounts = tuple(reader.take(reader.compact_u16("account index count"), "account indices"))
        data = reader.take(reader.compact_u16("instruction data length"), "instruction data")
        instructions.append(CompiledInstruction(program, accounts, data))
    message = Message(header=header, keys=keys, blockhash=blockhash, instructions=tuple(instructions))
    _sanitize(message)
    return message


def _sanitize(message: Message) -> None:
    """What Solana's ``Message::sanitize`` refuses, and duplicate keys."""
    required, readonly_signed, readonly_unsigned = message.header
    if required == 0 or readonly_signed >= required:
        raise TransactionInvalid("the message has no writable fee payer")
    if required + readonly_unsigned > len(message.keys):
        raise TransactionInvalid("the message header counts more accounts than it lists")
    if len(set(message.keys)) != len(message.keys):
        raise TransactionInvalid("an account key is listed twice")
    for ix in message.instructions:
        if not 0 < ix.program_index < len(message.keys):
            raise TransactionInvalid("an instruction's program index is out of range")
        if any(i >= len(message.keys) for i in ix.account_indices):
            raise TransactionInvalid("an instruction's account index is out of range")


def parse_message(data: bytes) -> Message:
    """A legacy message from its serialized bytes, nothing before or after it."""
    reader = Reader(data)
    message = _read_message(reader)
    reader.end()
    return message


def transaction(signatures: Iterable[bytes], message: bytes) -> bytes:
    """The wire transaction: compact-u16 signature count, the signatures, the message."""
    sigs = tuple(signatures)
    if any(len(s) != SIGNATURE_LENGTH for s in sigs):
        raise ValueError("a signature is 64 bytes")
    return compact_u16(len(sigs)) + b"".join(sigs) + message


def parse_transaction(data: bytes) -> tuple[tuple[bytes, ...], Message, bytes]:
    """(signatures, message, message bytes) of a wire transaction with one signature per
    required signer."""
    reader = Reader(data)
    count = reader.compact_u16("signature count")
    signatures = tuple(reader.take(SIGNATURE_LENGTH, "signatures") for _ in range(count))
    offset = len(compact_u16(count)) + SIGNATURE_LENGTH * count
    message = _read_message(reader)
    reader.end()
    if count != message.header[0]:
        raise TransactionInvalid(f"{count} signatures for {message.header[0]} required signers")
    return signatures, message, data[offset:]
