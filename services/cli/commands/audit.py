"""``custos audit query | export | verify``: the tamper-evident trail, for compliance."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from services.cli.context import (
    CliContext,
    When,
    fill_range,
    hhmmss,
    page_hint,
    paged,
    pass_cli,
    run,
    table,
    to_json,
)
from services.pb.custos.audit.v1 import audit_pb2
from services.runtime.errors import CustosError, InvalidArgument


@click.group("audit")
def audit() -> None:
    """Query, export and verify the audit trail (compliance, operators)."""


@audit.command("query")
@click.option("--intent", "intent_id", help="Records about this intent (subject intent:ID).")
@click.option("--subject", default="", help="e.g. intent:int-…, key:…, policy:….")
@click.option("--actor", default="", help="Who acted, e.g. alice or svc:signer.")
@click.option("--action", default="", help="e.g. intent.approved_by, signer.sign.")
@click.option("--since", type=When(), help="At or after (ISO time, or 1h for an hour ago).")
@click.option("--until", type=When(), help="Before.")
@paged(default=100, maximum=1000)
@pass_cli
def query(
    cli: CliContext,
    intent_id: str | None,
    subject: str,
    since: datetime | None,
    until: datetime | None,
    **o: Any,
) -> None:
    """Records matching every filter given, in sequence order."""
    from services.audit.client import AuditClient

    if intent_id and subject:
        raise InvalidArgument("give --intent or --subject, not both")
    f = audit_pb2.EventFilter(
        subject=f"intent:{intent_id}" if intent_id else subject, actor=o["actor"], action=o["action"]
    )
    if since or until:
        fill_range(f.time, since, until)
    req = audit_pb2.QueryEventsRequest(filter=f, page_size=o["page_size"], page_token=o["page_token"])

    resp = cli.call(AuditClient, "QueryEvents", req)
    data = {"events": [to_json(e) for e in resp.events], "next_page_token": resp.next_page_token}

    def human(d: dict[str, Any]) -> list[str]:
        rows = [
            (
                e["sequence"],
                f"{e['time'][:10]} {hhmmss(e['time'])}",
                e["actor"],
                e["action"],
                e["subject"],
                e["outcome"],
            )
            for e in d["events"]
        ]
        return table(rows, ("SEQ", "TIME", "ACTOR", "ACTION", "SUBJECT", "OUTCOME")) + page_hint(d)

    cli.emit(data, human)


@audit.command("export")
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--from", "from_sequence", type=click.IntRange(min=0), default=0, help="First sequence (0: start)."
)
@click.option("--to", "to_sequence", type=click.IntRange(min=0), default=0, help="Last sequence (0: head).")
@pass_cli
def export(cli: CliContext, out_file: Path, from_sequence: int, to_sequence: int) -> None:
    """Write the trail as JSON Lines that anyone can verify offline (custos audit verify FILE).

    The file appears only once complete.
    """
    from services.audit.client import AuditClient

    req = audit_pb2.ExportEventsRequest(from_sequence=from_sequence, to_sequence=to_sequence)
    partial = out_file.with_name(out_file.name + ".partial")

    async def go() -> dict[str, Any]:
        lines = records = 0
        try:
            async with cli.client(AuditClient) as client:
                with partial.open("w", encoding="utf-8") as f:
                    async for item in client.stream("ExportEvents", req, deadline=600):
                        f.write(item.line + "\n")
                        lines += 1
                        records += json.loads(item.line).get("type") == "record"
            os.replace(partial, out_file)
        except CustosError:  # e.g. PermissionDenied (an OSError too): the service's refusal
            raise
        except OSError as e:
            raise InvalidArgument(f"cannot write {out_file}: {e.strerror}") from None
        finally:
            partial.unlink(missing_ok=True)
        return {"file": str(out_file), "lines": lines, "records": records}

    cli.emit(run(go()), lambda d: [f"exported {d['records']} records to {d['file']}"])


def _trusted(values: tuple[str, ...]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for v in values:
        key_id, sep, hexkey = v.partition("=")
        try:
            out[key_id] = bytes.fromhex(hexkey)
        except ValueError:
            sep = ""
        if not sep or not key_id:
            raise InvalidArgument(f"--trust expects KEY_ID=HEX, got {v!r}")
    return out


@audit.command("verify")
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--trust", multiple=True, metavar="KEY_ID=HEX", help="Offline: check checkpoints with this key."
)
@click.option(
    "--allow-unsigned-tail", is_flag=True, help="Offline: accept records after the last checkpoint."
)
@click.option(
    "--from", "from_sequence", type=click.IntRange(min=0), default=0, help="Server: first sequence."
)
@click.option("--to", "to_sequence", type=click.IntRange(min=0), default=0, help="Server: last sequence.")
@pass_cli
def verify(
    cli: CliContext,
    file: Path | None,
    trust: tuple[str, ...],
    allow_unsigned_tail: bool,
    from_sequence: int,
    to_sequence: int,
) -> None:
    """Verify the trail: on the server, or offline from an export FILE. Exits 1 when it fails.

    \b
    custos --as carol audit verify
    custos audit verify audit.jsonl          (needs nothing but the file)
    """
    if file is None:
        ok = _verify_on_server(cli, from_sequence, to_sequence)
    elif cli.json:
        ok = _verify_offline_json(cli, file, _trusted(trust), allow_unsigned_tail)
    else:
        from services.audit.verify import main as verify_main

        _trusted(trust)  # one-line error for a malformed --trust before anything is read
        argv = [str(file), *(f"--trust={t}" for t in trust)]
        ok = verify_main([*argv, "--allow-unsigned-tail"] if allow_unsigned_tail else argv) == 0
    if not ok:
        sys.exit(1)


def _verify_on_server(cli: CliContext, from_sequence: int, to_sequence: int) -> bool:
    from services.audit.client import AuditClient

    req = audit_pb2.VerifyChainRequest(from_sequence=from_sequence, to_sequence=to_sequence)

    def human(d: dict[str, Any]) -> list[str]:
        cp = d["latest_checkpoint"]
        signed = f"; latest checkpoint at {cp['sequence']} by key {cp['key_id']}" if cp else ""
        if d["ok"]:
            return [f"OK: {d['records_checked']} records verified on the server{signed}"]
        return [f"FAILED at sequence {d['first_bad_sequence']}: {d['reason']}"]

    data = to_json(cli.call(AuditClient, "VerifyChain", req))
    cli.emit(data, human)
    return bool(data["ok"])


def _verify_offline_json(cli: CliContext, file: Path, trusted: dict[str, bytes], unsigned_tail: bool) -> bool:
    from services.audit.export import parse_export
    from services.audit.signing import key_fingerprint
    from services.audit.verify import verify_parsed

    try:
        with file.open(encoding="utf-8") as f:
            parsed = parse_export(f)
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"cannot read {file}: {e}") from None
    r = verify_parsed(parsed, trusted_keys=trusted or None, require_signed_head=not unsigned_tail)
    keys = trusted or parsed.public_keys
    cli.emit(
        {
            "ok": r.ok,
            "records_checked": r.records_checked,
            "first_bad_sequence": r.first_bad_sequence or 0,
            "reason": r.reason,
            "head_sequence": r.head_sequence,
            "head_hash": r.head_hash.hex(),
            "signed_through": r.signed_through,
            "keys": {k: key_fingerprint(v) for k, v in sorted(keys.items())},
            "keys_source": "trusted" if trusted else "export",
        },
        lambda d: [],
    )
    return r.ok
