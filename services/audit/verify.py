"""Offline verification of an export: ``custos audit verify FILE``.

Needs nothing but the file. The public keys come from the export itself unless
``--trust KEY_ID=HEX`` pins them; either way the verifier prints the key
fingerprints so they can be compared with the one compliance holds (a file re-signed
with another key verifies only against its own key). The checkpoints must form one
chain from genesis, in order, with a signature on every link, and the records must
match every checkpoint; by default the export's last record must be covered by one
(the service seals every export that way), so cutting records off the end together
with the trailer and the last checkpoint is still caught.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from services.audit.chain import ChainVerifier, VerifyResult
from services.audit.export import ParsedExport, parse_export
from services.audit.signing import key_fingerprint


def verify_parsed(
    parsed: ParsedExport,
    *,
    trusted_keys: Mapping[str, bytes] | None = None,
    require_signed_head: bool = True,
) -> VerifyResult:
    """Verifies an already parsed export (see :func:`verify_export`)."""
    if parsed.header is None:
        return VerifyResult(False, 0, None, parsed.error or "not a custos audit export (no header)")
    first = int(parsed.header["from_sequence"])
    keys = dict(trusted_keys) if trusted_keys else parsed.public_keys
    verifier = ChainVerifier(parsed.checkpoints, keys, first_sequence=first)
    for record in parsed.records:
        if not verifier.feed(record):
            break
    declared = int(parsed.header["record_count"])
    trailer = parsed.trailer
    result = verifier.finish(
        declared_count=declared,
        head_sequence=first + declared - 1 if declared else None,
        head_hash=bytes.fromhex(trailer["head_hash"]) if trailer and declared else None,
    )
    if not result.ok:
        return result
    end = result.head_sequence + 1
    if parsed.error is not None:
        return _fail(result, end, f"the export is damaged after {result.head_sequence}: {parsed.error}")
    if trailer is None:
        return _fail(result, end, f"the export has no trailer: truncated after record {result.head_sequence}")
    if int(trailer["record_count"]) != declared or (declared and int(trailer["head_sequence"]) != end - 1):
        return _fail(result, end, "the trailer disagrees with the header about the records exported")
    if declared and not verifier.has_chain:
        return _fail(
            result, first, f"records {first}..{end - 1} are covered by no checkpoint chain from genesis"
        )
    if require_signed_head and declared and result.signed_through < result.head_sequence:
        return _fail(
            result,
            result.signed_through + 1 if result.signed_through >= first else first,
            f"records after {result.signed_through} are not covered by a signed checkpoint",
        )
    return result


def _fail(result: VerifyResult, sequence: int, reason: str) -> VerifyResult:
    return VerifyResult(
        ok=False,
        records_checked=result.records_checked,
        first_bad_sequence=sequence,
        reason=reason,
        signed_through=result.signed_through,
        head_sequence=result.head_sequence,
        head_hash=result.head_hash,
    )


def verify_export(
    path: str | Path,
    *,
    trusted_keys: Mapping[str, bytes] | None = None,
    require_signed_head: bool = True,
) -> VerifyResult:
    """Verifies an export file: chain, checkpoints, declared count and signed head."""
    with open(path, encoding="utf-8") as f:
        parsed = parse_export(f)
    return verify_parsed(parsed, trusted_keys=trusted_keys, require_signed_head=require_signed_head)


def _trust(values: Sequence[str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for v in values:
        key_id, sep, hexkey = v.partition("=")
        if not sep:
            raise SystemExit(f"--trust expects KEY_ID=HEX, got {v!r}")
        out[key_id] = bytes.fromhex(hexkey)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``custos audit verify FILE``: exit 0 if the export verifies, 1 if not, 2 if unreadable."""
    parser = argparse.ArgumentParser(prog="custos audit verify", description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path)
    parser.add_argument(
        "--trust",
        action="append",
        default=[],
        metavar="KEY_ID=HEX",
        help="verify checkpoints with this key instead of the keys in the export",
    )
    parser.add_argument(
        "--allow-unsigned-tail", action="store_true", help="accept records after the last signed checkpoint"
    )
    args = parser.parse_args(argv)
    try:
        with open(args.file, encoding="utf-8") as f:
            parsed = parse_export(f)
    except OSError as e:
        print(f"cannot read {args.file}: {e.strerror}", file=sys.stderr)
        return 2
    trusted = _trust(args.trust)
    result = verify_parsed(parsed, trusted_keys=trusted, require_signed_head=not args.allow_unsigned_tail)
    for key_id, public in sorted((trusted or parsed.public_keys).items()):
        source = "trusted" if trusted else "from the export"
        print(f"key {key_id}: {key_fingerprint(public)} ({source})")
    if result.ok:
        print(
            f"OK: {result.records_checked} records, head {result.head_sequence} "
            f"{result.head_hash.hex()}, signed through {result.signed_through}"
        )
        return 0
    print(
        f"FAILED at sequence {result.first_bad_sequence}: {result.reason} "
        f"({result.records_checked} records checked before)"
    )
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
