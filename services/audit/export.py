"""The export format: JSON Lines that carry everything needed to verify offline.

    {"type":"header","format":"custos.audit.export.v2","from_sequence":1,"to_sequence":N,"record_count":N,...}
    {"type":"record","sequence":1,"prev_hash":"00..","hash":"..","time":"...Z",...,"payload_json":"{...}"}
    ...
    {"type":"checkpoint","sequence":K,"head_hash":"..","prev_sequence":J,"prev_digest":"..","signature":"..",...}
    {"type":"public_key","key_id":"..","algorithm":"ed25519","public_key":"..","fingerprint":"sha256:.."}
    {"type":"trailer","record_count":N,"head_sequence":N,"head_hash":".."}

Bytes are lowercase hex, times the canonical ``YYYY-MM-DDTHH:MM:SS.ffffffZ``, and
``payload_json`` is kept as the exact text its digest covers. The header and the
trailer both declare the count, so a cut file is caught even before the
checkpoints are looked at. The checkpoints are the whole chain from genesis to the
last record, in order, whatever range the records cover. Version 1 exports (from
before checkpoints were chained) are refused: they cannot show that none was dropped.
Standard library only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.audit.chain import Checkpoint
from services.audit.records import AuditRecord

EXPORT_FORMAT = "custos.audit.export.v2"
_OLD_FORMATS = {"custos.audit.export.v1"}
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def format_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime(_TIME_FORMAT)


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC)


def _line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def header_line(from_sequence: int, to_sequence: int, exported_at: datetime) -> str:
    count = max(0, to_sequence - from_sequence + 1)
    return _line(
        {
            "type": "header",
            "format": EXPORT_FORMAT,
            "from_sequence": from_sequence,
            "to_sequence": to_sequence,
            "record_count": count,
            "exported_at": format_time(exported_at),
        }
    )


def record_to_json(r: AuditRecord) -> dict[str, Any]:
    return {
        "sequence": r.sequence,
        "prev_hash": r.prev_hash.hex(),
        "hash": r.hash.hex(),
        "time": format_time(r.time),
        "actor": r.actor,
        "action": r.action,
        "subject": r.subject,
        "outcome": r.outcome,
        "payload_digest": r.payload_digest.hex(),
        "payload_json": r.payload_json,
    }


def record_line(r: AuditRecord) -> str:
    return _line({"type": "record", **record_to_json(r)})


def checkpoint_line(cp: Checkpoint) -> str:
    return _line(
        {
            "type": "checkpoint",
            "sequence": cp.sequence,
            "head_hash": cp.head_hash.hex(),
            "time": format_time(cp.time),
            "key_id": cp.key_id,
            "public_key": cp.public_key.hex(),
            "signature": cp.signature.hex(),
            "prev_sequence": cp.prev_sequence,
            "prev_digest": cp.prev_digest.hex(),
        }
    )


def key_line(key_id: str, public_key: bytes) -> str:
    return _line(
        {
            "type": "public_key",
            "key_id": key_id,
            "algorithm": "ed25519",
            "public_key": public_key.hex(),
            "fingerprint": "sha256:" + hashlib.sha256(public_key).hexdigest()[:32],
        }
    )


def trailer_line(record_count: int, head_sequence: int, head_hash: bytes) -> str:
    return _line(
        {
            "type": "trailer",
            "record_count": record_count,
            "head_sequence": head_sequence,
            "head_hash": head_hash.hex(),
        }
    )


@dataclass
class ParsedExport:
    """What a file held, up to the first line that could not be read (``error``)."""

    header: dict[str, Any] | None = None
    records: list[AuditRecord] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    public_keys: dict[str, bytes] = field(default_factory=dict)
    trailer: dict[str, Any] | None = None
    error: str | None = None


def _int(obj: dict[str, Any], key: str) -> int:
    value = obj[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{key} must be a non-negative integer")
    return value


def _record(obj: dict[str, Any]) -> AuditRecord:
    return AuditRecord(
        sequence=_int(obj, "sequence"),
        prev_hash=bytes.fromhex(obj["prev_hash"]),
        time=parse_time(obj["time"]),
        actor=str(obj["actor"]),
        action=str(obj["action"]),
        subject=str(obj["subject"]),
        outcome=str(obj["outcome"]),
        payload_digest=bytes.fromhex(obj["payload_digest"]),
        payload_json=str(obj["payload_json"]),
        hash=bytes.fromhex(obj["hash"]),
    )


def _checkpoint(obj: dict[str, Any]) -> Checkpoint:
    return Checkpoint(
        sequence=_int(obj, "sequence"),
        head_hash=bytes.fromhex(obj["head_hash"]),
        time=parse_time(obj["time"]),
        key_id=str(obj["key_id"]),
        public_key=bytes.fromhex(obj["public_key"]),
        signature=bytes.fromhex(obj["signature"]),
        prev_sequence=_int(obj, "prev_sequence"),
        prev_digest=bytes.fromhex(obj["prev_digest"]),
    )


def parse_export(lines: Iterable[str]) -> ParsedExport:
    """Reads an export; stops at the first unreadable line and says where in ``error``."""
    out = ParsedExport()
    for number, raw in enumerate(lines, start=1):
        text = raw.rstrip("\n")
        if not text:
            continue
        try:
            obj = json.loads(text)
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
            kind = obj.get("type")
            if out.trailer is not None:
                raise ValueError("content after the trailer")
            if kind == "header":
                if out.header is not None or number != 1:
                    raise ValueError("the header must be the first line, once")
                if obj.get("format") in _OLD_FORMATS:
                    raise ValueError(
                        f"{obj['format']} was written before checkpoints were chained and cannot show "
                        "that none was dropped: export the trail again"
                    )
                if obj.get("format") != EXPORT_FORMAT:
                    raise ValueError(f"unknown format {obj.get('format')!r}")
                for key in ("from_sequence", "to_sequence", "record_count"):
                    _int(obj, key)
                out.header = obj
            elif out.header is None:
                raise ValueError("the file does not start with an export header")
            elif kind == "record":
                out.records.append(_record(obj))
            elif kind == "checkpoint":
                out.checkpoints.append(_checkpoint(obj))
            elif kind == "public_key":
                if obj.get("algorithm") != "ed25519":
                    raise ValueError(f"unsupported key algorithm {obj.get('algorithm')!r}")
                out.public_keys[str(obj["key_id"])] = bytes.fromhex(obj["public_key"])
            elif kind == "trailer":
                for key in ("record_count", "head_sequence"):
                    _int(obj, key)
                bytes.fromhex(obj["head_hash"])
                out.trailer = obj
            else:
                raise ValueError(f"unknown line type {kind!r}")
        except (ValueError, KeyError, TypeError) as e:
            out.error = f"line {number}: {e}"
            break
    return out
