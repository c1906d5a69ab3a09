"""Protobuf wire format, only as much as Cosmos transactions need: a canonical writer and a strict reader.

custos writes every message canonically: fields in field-number order, proto3 defaults (0,
empty string or bytes) left out, minimal varints, embedded messages always written. The
reader refuses anything else it can see locally: unknown fields, fields out of order or
repeated when not ``repeated``, the wrong wire type, non-minimal or oversized varints,
truncation. What it cannot see (a default value written out) is caught by the caller
re-encoding what it read and comparing bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum

from services.families.errors import TransactionInvalid

_MAX_UINT64 = 2**64 - 1


class Wire(IntEnum):
    VARINT = 0
    LEN = 2


@dataclass(frozen=True)
class FieldSpec:
    """A field a message may hold: its name, wire type and whether it repeats."""

    name: str
    wire: Wire
    repeated: bool = False


#: A message's fields by number.
Schema = Mapping[int, FieldSpec]
#: What :func:`read` returns: every field of the schema by name, with the values seen in order.
Fields = dict[str, list[int | bytes]]


def uvarint(value: int) -> bytes:
    if not 0 <= value <= _MAX_UINT64:
        raise ValueError("a protobuf varint holds 0..2**64-1")
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_uvarint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it; refuses non-minimal encodings."""
    result = 0
    for i in range(10):
        if pos >= len(data):
            raise TransactionInvalid("truncated protobuf varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if i > 0 and byte == 0:
                raise TransactionInvalid("non-canonical protobuf varint (padded)")
            if result > _MAX_UINT64:
                raise TransactionInvalid("protobuf varint above 2**64-1")
            return result, pos
    raise TransactionInvalid("protobuf varint longer than 10 bytes")


class Writer:
    """Builds one message canonically; fields must be added in field-number order."""

    def __init__(self) -> None:
        self._out = bytearray()
        self._last = 0

    def _key(self, number: int, wire: Wire) -> None:
        if number < self._last:
            raise ValueError(f"protobuf field {number} written after field {self._last}")
        self._last = number
        self._out += uvarint(number << 3 | wire)

    def uint(self, number: int, value: int) -> Writer:
        """A uint64 or enum field (left out when 0)."""
        if value:
            self._key(number, Wire.VARINT)
            self._out += uvarint(value)
        return self

    def bytes_(self, number: int, value: bytes) -> Writer:
        """A bytes field (left out when empty)."""
        if value:
            self._key(number, Wire.LEN)
            self._out += uvarint(len(value)) + value
        return self

    def string(self, number: int, value: str) -> Writer:
        """A string field (left out when empty)."""
        return self.bytes_(number, value.encode())

    def message(self, number: int, encoded: bytes) -> Writer:
        """An embedded message, written even when empty (it is set)."""
        self._key(number, Wire.LEN)
        self._out += uvarint(len(encoded)) + encoded
        return self

    def finish(self) -> bytes:
        return bytes(self._out)


def read(data: bytes, schema: Schema, what: str, refused: Mapping[int, str] | None = None) -> Fields:
    """The fields of message ``what`` in ``data``, strictly (see the module docstring).

    ``refused`` names fields of the real message that custos never writes, so the error
    says which one was found rather than a bare number.
    """
    fields: Fields = {spec.name: [] for spec in schema.values()}
    pos, last = 0, 0
    while pos < len(data):
        key, pos = read_uvarint(data, pos)
        number, wire = key >> 3, key & 7
        spec = schema.get(number)
        if spec is None:
            if refused and number in refused:
                raise TransactionInvalid(f"{what}.{refused[number]} is set: custos never builds it")
            raise TransactionInvalid(f"{what} has unknown field {number}")
        if wire != spec.wire:
            raise TransactionInvalid(f"{what}.{spec.name} has wire type {wire}, not {int(spec.wire)}")
        if number < last:
            raise TransactionInvalid(f"{what}.{spec.name} is out of field order")
        if number == last and not spec.repeated:
            raise TransactionInvalid(f"{what}.{spec.name} appears twice")
        last = number
        if wire == Wire.VARINT:
            value, pos = read_uvarint(data, pos)
            fields[spec.name].append(value)
        else:
            length, pos = read_uvarint(data, pos)
            if length > len(data) - pos:
                raise TransactionInvalid(f"{what}.{spec.name} is truncated")
            fields[spec.name].append(data[pos : pos + length])
            pos += length
    return fields


def one_uint(fields: Fields, name: str) -> int:
    """A non-repeated varint field (0 when absent)."""
    values = fields[name]
    value = values[0] if values else 0
    assert isinstance(value, int)
    return value


def one_bytes(fields: Fields, name: str) -> bytes:
    """A non-repeated length-delimited field (empty when absent)."""
    values = fields[name]
    value = values[0] if values else b""
    assert isinstance(value, bytes)
    return value


def one_string(fields: Fields, name: str, what: str) -> str:
    """A non-repeated string field ("" when absent); refuses invalid UTF-8."""
    try:
        return one_bytes(fields, name).decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise TransactionInvalid(f"{what}.{name} is not UTF-8") from None


def many_bytes(fields: Fields, name: str) -> list[bytes]:
    """A repeated length-delimited field."""
    values = fields[name]
    assert all(isinstance(v, bytes) for v in values)
    return [v for v in values if isinstance(v, bytes)]


def required_message(fields: Fields, name: str, what: str) -> bytes:
    """An embedded message that must be present."""
    if not fields[name]:
        raise TransactionInvalid(f"{what}.{name} is missing")
    return one_bytes(fields, name)
