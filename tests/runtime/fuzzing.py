"""Request generators for fuzzing any gRPC service from its descriptors (tests/runtime/test_fuzz.py).

Values mix plausible ones (from the state a test seeds) with boundaries: timestamps
outside any calendar and at its ends, integers past each database column type, 20 KB
strings and bytes, unknown enum numbers; and bodies that do not parse at all.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

F = FieldDescriptor
_UINT = {F.TYPE_UINT32: 32, F.TYPE_FIXED32: 32, F.TYPE_UINT64: 64, F.TYPE_FIXED64: 64}
_SINT = {F.TYPE_INT32: 32, F.TYPE_SINT32: 32, F.TYPE_SFIXED32: 32}
_SINT |= {F.TYPE_INT64: 64, F.TYPE_SINT64: 64, F.TYPE_SFIXED64: 64}
FIRST_SECOND = -62_135_596_800  # 0001-01-01T00:00:00Z, the first a Timestamp (and a datetime) holds
LAST_SECOND = 253_402_300_799  # 9999-12-31T23:59:59Z, the last
#: (seconds, nanos): past the ends, far past them, a negative nano, and the first and last instants.
TIMESTAMP_EXTREMES = (
    (FIRST_SECOND - 1, 0),
    (LAST_SECOND + 1, 0),
    (2**63 - 1, 0),
    (0, -1),
    (FIRST_SECOND, 0),
    (LAST_SECOND, 999_999_999),
)
_SECONDS = (0, FIRST_SECOND, FIRST_SECOND - 1, LAST_SECOND, LAST_SECOND + 1, 10**12, 2**63 - 1, -(2**63))
_NANOS = (0, 999_999_999, 1_000_000_000, -1, 2**31 - 1, -(2**31))
_BIG = 20 * 1024


class Values(random.Random):
    """Random field values: plausible ones (``known``, from the seeded state) and boundaries.

    ``named`` gives a plausible value per field name (``spec``: the seeded intent's), so
    that a plausible request with one field at an extreme gets past the checks before it;
    ``documents`` are long texts worth sending whole (a policy document).
    """

    def __init__(self, seed: int, known: list[str], documents: list[str]) -> None:
        super().__init__(seed)
        self.known = known
        self.documents = documents
        self.named: dict[str, Any] = {}

    def text(self) -> str:
        if self.random() < 0.5 and self.known:
            return self.choice(self.known)
        return self.choice(
            [
                "",
                " ",
                "a",
                "x" * 129,
                "y" * _BIG,
                "ünï\u202ecödé",
                "nul\x00byte",
                "two\nlines",
                "0",
                "-1",
                "1" + "0" * 80,
                "{}",
                "[]",
                "[" * 5000,
                '{"a": ' * 3000,
                "a: &x [1]\nb: *x\n",
                *self.documents,
            ]
        )

    def blob(self) -> bytes:
        return self.choice([b"", b"\x00" * 32, self.randbytes(32), self.randbytes(48), self.randbytes(_BIG)])

    def integer(self, field: FieldDescriptor) -> int:
        if field.type in _UINT:
            top = 2 ** _UINT[field.type] - 1
            return self.choice([0, 1, 50, 500, 501, 1000, 1001, 2**31, top // 2, top // 2 + 1, top])
        bits = _SINT.get(field.type, 64)
        return self.choice([0, 1, -1, 2 ** (bits - 1) - 1, -(2 ** (bits - 1))])

    def enum(self, field: FieldDescriptor) -> int:
        if self.random() < 0.6:
            return self.choice(_enum_numbers(field))
        return self.choice([99, -1, 2**31 - 1])

    def scalar(self, field: FieldDescriptor) -> Any:
        if field.type == F.TYPE_STRING:
            return self.text()
        if field.type == F.TYPE_BYTES:
            return self.blob()
        if field.type == F.TYPE_BOOL:
            return self.random() < 0.5
        if field.type == F.TYPE_ENUM:
            return self.enum(field)
        if field.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
            return self.choice([0.0, -1.0, 1e308, float("nan"), float("inf")])
        return self.integer(field)

    def message(self, descriptor: Descriptor, depth: int = 0) -> Message:
        out = GetMessageClass(descriptor)()
        if descriptor.full_name == "google.protobuf.Timestamp":
            now = int(time.time())
            out.seconds = self.choice([*_SECONDS, now, now + 3600, now - 86400 * 365])  # type: ignore[attr-defined]
            out.nanos = self.choice(_NANOS)  # type: ignore[attr-defined]
            return out
        chosen = {o.name: self.choice(o.fields) for o in descriptor.oneofs}
        for field in descriptor.fields:
            oneof = field.containing_oneof
            if (oneof is not None and chosen[oneof.name] is not field) or self.random() < 0.3:
                continue
            self._fill(out, field, depth)
        return out

    def _fill(self, out: Any, field: FieldDescriptor, depth: int) -> None:
        if field.type == F.TYPE_MESSAGE:
            if depth > 3:
                return
            if _is_map(field):
                target = getattr(out, field.name)
                value = _of(field).fields_by_name["value"]
                for _ in range(self.randint(0, 2)):
                    target[self.text()[:64]] = self.scalar(value)
            elif field.is_repeated:
                for _ in range(self.randint(0, 3)):
                    getattr(out, field.name).add().CopyFrom(self.message(_of(field), depth + 1))
            else:
                getattr(out, field.name).CopyFrom(self.message(_of(field), depth + 1))
        elif field.is_repeated:
            getattr(out, field.name).extend(self.scalar(field) for _ in range(self.randint(0, 3)))
        else:
            setattr(out, field.name, self.scalar(field))

    def extreme(self, descriptor: Descriptor, low: bool, depth: int = 0) -> Message:
        """Every field (the first of each oneof) at one end of its range."""
        out = GetMessageClass(descriptor)()
        if descriptor.full_name == "google.protobuf.Timestamp":
            out.seconds = -(2**63) if low else 2**63 - 1  # type: ignore[attr-defined]
            out.nanos = -1 if low else 1_000_000_000  # type: ignore[attr-defined]
            return out
        for field in descriptor.fields:
            oneof = field.containing_oneof
            if oneof is not None and oneof.fields[0] is not field:
                continue
            value: Any
            if field.type == F.TYPE_MESSAGE:
                if depth > 3 or _is_map(field):
                    continue
                sub = self.extreme(_of(field), low, depth + 1)
                if field.is_repeated:
                    getattr(out, field.name).add().CopyFrom(sub)
                else:
                    getattr(out, field.name).CopyFrom(sub)
                continue
            if field.type == F.TYPE_STRING:
                value = "" if low else "z" * _BIG
            elif field.type == F.TYPE_BYTES:
                value = b"" if low else b"\xff" * _BIG
            elif field.type == F.TYPE_BOOL:
                value = not low
            elif field.type == F.TYPE_ENUM:
                value = -1 if low else 2**31 - 1
            elif field.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
                value = float("-inf") if low else float("inf")
            elif field.type in _UINT:
                value = 0 if low else 2 ** _UINT[field.type] - 1
            else:
                bits = _SINT.get(field.type, 64)
                value = -(2 ** (bits - 1)) if low else 2 ** (bits - 1) - 1
            if field.is_repeated:
                getattr(out, field.name).append(value)
            else:
                setattr(out, field.name, value)
        return out

    def plausible(self, descriptor: Descriptor, depth: int = 0) -> Message:
        """Every field (the first of each oneof) set to a value the seeded state makes plausible."""
        out = GetMessageClass(descriptor)()
        if descriptor.full_name == "google.protobuf.Timestamp":
            out.seconds = int(time.time()) + 600  # type: ignore[attr-defined]
            return out
        for field in descriptor.fields:
            oneof = field.containing_oneof
            if (oneof is not None and oneof.fields[0] is not field) or (
                field.type == F.TYPE_MESSAGE and (depth > 3 or _is_map(field))
            ):
                continue
            value = self.named.get(field.name)
            if field.type == F.TYPE_MESSAGE:
                if not _fits(field, value):
                    value = self.plausible(_of(field), depth + 1)
                target = getattr(out, field.name).add() if field.is_repeated else getattr(out, field.name)
                target.CopyFrom(value)
                continue
            if not _fits(field, value):
                value = {F.TYPE_STRING: "", F.TYPE_BYTES: b"", F.TYPE_BOOL: False}.get(field.type, 0)
                if field.type == F.TYPE_ENUM:
                    numbers = _enum_numbers(field)
                    value = numbers[1 if len(numbers) > 1 else 0]  # the first beyond UNSPECIFIED
            if field.is_repeated:
                getattr(out, field.name).append(value)
            else:
                setattr(out, field.name, value)
        return out

    def mutants(self, base: Message) -> Iterator[tuple[str, Message]]:
        """``base`` with one leaf at an extreme: every number, timestamp and enum; a few strings
        of 20 KB, and a few strings holding a NUL (which PostgreSQL's text cannot)."""
        texts: list[tuple[str, Message]] = []
        nuls: list[tuple[str, Message]] = []
        for path in _leaves(base):
            field = _resolve(base, path)[1]
            name = ".".join(p for p, _ in path)
            if field.type == F.TYPE_MESSAGE:  # a Timestamp
                extremes: list[Any] = list(TIMESTAMP_EXTREMES)
            elif field.type == F.TYPE_ENUM:
                extremes = [2**31 - 1]
            elif field.type in _UINT:
                bits = _UINT[field.type]
                # past int32 (a PostgreSQL INTEGER), int64's last (BIGINT) and first past it, the end
                extremes = [2**31, 2**63 - 1, 2**63, 2**64 - 1] if bits == 64 else [2**31, 2**32 - 1]
            elif field.type in _SINT:
                bits = _SINT[field.type]
                extremes = [-(2 ** (bits - 1)), -1, 2 ** (bits - 1) - 1]
            elif field.type in (F.TYPE_STRING, F.TYPE_BYTES):
                big = "w" * _BIG if field.type == F.TYPE_STRING else b"\xee" * _BIG
                texts.append((f"{name} of 20 KB", _mutate(base, path, big)))
                if field.type == F.TYPE_STRING:
                    nuls.append((f"{name} holding a NUL", _mutate(base, path, "nul\x00byte")))
                continue
            else:
                continue
            for value in extremes:
                yield f"{name} = {value}", _mutate(base, path, value)
        yield from self.sample(texts, min(3, len(texts)))
        yield from self.sample(nuls, min(2, len(nuls)))

    def garbage(self, descriptor: Descriptor) -> Iterator[tuple[str, bytes]]:
        """Bodies that do not parse as ``descriptor`` (or barely do)."""
        yield "random bytes", self.randbytes(self.randint(1, 40))
        yield "invalid tag", b"\xff" * 11
        whole = self.message(descriptor).SerializeToString()
        if len(whole) > 1:
            yield "truncated", whole[:-1]
        strings = [f for f in descriptor.fields if f.type == F.TYPE_STRING and not f.is_repeated]
        if strings:
            tag = strings[0].number << 3 | 2
            yield "invalid UTF-8", _varint(tag) + b"\x02\xc3\x28"


FieldPath = tuple[tuple[str, int | None], ...]


def _of(field: FieldDescriptor) -> Descriptor:
    """The message type of a message field."""
    assert field.message_type is not None
    return field.message_type


def _is_map(field: FieldDescriptor) -> bool:
    return field.type == F.TYPE_MESSAGE and bool(_of(field).GetOptions().map_entry)


def _enum_numbers(field: FieldDescriptor) -> list[int]:
    assert field.enum_type is not None
    return [v.number for v in field.enum_type.values]


def _fits(field: FieldDescriptor, value: Any) -> bool:
    if field.type == F.TYPE_MESSAGE:
        return isinstance(value, Message) and value.DESCRIPTOR.full_name == _of(field).full_name
    if field.type in (F.TYPE_STRING, F.TYPE_BYTES, F.TYPE_BOOL):
        return isinstance(value, {F.TYPE_STRING: str, F.TYPE_BYTES: bytes, F.TYPE_BOOL: bool}[field.type])
    return isinstance(value, int) and not isinstance(value, bool)


def _leaves(message: Message, path: FieldPath = ()) -> Iterator[FieldPath]:
    """The scalar fields and timestamps of ``message`` (set or not; the first of repeated ones,
    the set member of a oneof), as paths."""
    for field in cast(Descriptor, message.DESCRIPTOR).fields:
        oneof = field.containing_oneof
        if oneof is not None and message.WhichOneof(oneof.name) != field.name:
            continue
        value = getattr(message, field.name)
        if field.is_repeated and not len(value):
            continue
        if _is_map(field):
            continue
        step = (*path, (field.name, 0 if field.is_repeated else None))
        if field.type == F.TYPE_MESSAGE and _of(field).full_name != "google.protobuf.Timestamp":
            if field.is_repeated or message.HasField(field.name):
                yield from _leaves(value[0] if field.is_repeated else value, step)
        else:
            yield step


def _resolve(message: Message, path: FieldPath) -> tuple[Any, FieldDescriptor]:
    container: Any = message
    for name, index in path[:-1]:
        container = getattr(container, name)
        container = container[index] if index is not None else container
    return container, container.DESCRIPTOR.fields_by_name[path[-1][0]]


def _mutate(base: Message, path: FieldPath, value: Any) -> Message:
    out = type(base)()
    out.CopyFrom(base)
    container, field = _resolve(out, path)
    name, index = path[-1]
    if field.type == F.TYPE_MESSAGE:
        target = getattr(container, name)[index] if index is not None else getattr(container, name)
        target.seconds, target.nanos = value
    elif index is not None:
        getattr(container, name)[index] = value
    else:
        setattr(container, name, value)
    return out


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


@dataclass(frozen=True)
class Case:
    method: MethodDescriptor
    what: str
    body: bytes


def cases(values: Values, method: MethodDescriptor, randoms: int) -> Iterator[Case]:
    """What one RPC is sent: the empty body, garbage, every field at each end, a plausible
    request and its mutants, and ``randoms`` random messages."""
    request = method.input_type
    yield Case(method, "empty body", b"")
    for what, body in values.garbage(request):
        yield Case(method, f"garbage: {what}", body)
    for low in (True, False):
        body = values.extreme(request, low).SerializeToString()
        yield Case(method, f"every field at its {'low' if low else 'high'} end", body)
    base = values.plausible(request)
    yield Case(method, "plausible", base.SerializeToString())
    for what, mutant in values.mutants(base):
        yield Case(method, f"plausible but {what}", mutant.SerializeToString())
    for i in range(randoms):
        yield Case(method, f"random #{i}", values.message(request).SerializeToString())
