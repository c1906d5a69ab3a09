"""Verification of the trail as stored: one streaming walk, and the check against the HSM's memory.

The walk reads records and checkpoints in keyset batches, so millions of rows never
sit in memory at once; ``AuditService.verify`` walks from genesis, checkpointing walks
from where it already stands (:class:`Position`). :func:`signed_head_problem` compares
the trail with the last checkpoint this installation signed, as the audit token
remembers it: the one thing a chain of checkpoints cannot show by itself is that its
newest links were cut off, or an older copy of the database put back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass

from sqlalchemy.orm import Session

from services.audit import repository
from services.audit.chain import CHAINED, GENESIS, LEGACY, ChainVerifier, Checkpoint, Link, VerifyResult
from services.audit.records import GENESIS_HASH
from services.audit.repository import Head
from services.audit.signing import SignedHead

BATCH = 1000

Sessions = Callable[[], AbstractContextManager[Session]]
"""Opens a session to read with (a fresh one per batch, or the caller's own)."""


@dataclass(frozen=True)
class Position:
    """How far the trail is verified: the last record checked and the last checkpoint at or before it."""

    sequence: int = 0
    record_hash: bytes = GENESIS_HASH
    link: Link = GENESIS

    @classmethod
    def of(cls, head: SignedHead) -> Position:
        return cls(head.sequence, head.record_hash, Link(head.sequence, head.checkpoint_digest))


def walk(
    sessions: Sessions,
    keys: Mapping[str, bytes],
    *,
    start: Position,
    last: int,
    head: Head,
    first: int | None = None,
    legacy: bool = False,
    require_chain: bool = False,
) -> tuple[VerifyResult, Position]:
    """Verifies records ``first..last`` (default: from ``start``) against the checkpoint chain.

    The chain is taken up at ``start.link``: checkpoints after it and before the records
    count for the chain and are matched against the stored records; those after the
    first record are matched as the records are read. Up to the head, checkpoints past
    the last record mean truncation. ``legacy`` checks first-format checkpoints, each
    on its own, instead of the chain (once, to adopt an old trail).
    """
    first = start.sequence + 1 if first is None else first
    anchor = start.record_hash if first == start.sequence + 1 else None
    verifier = ChainVerifier(
        (), keys, first_sequence=first, anchor_hash=anchor, chain_start=None if legacy else start.link
    )
    version = LEGACY if legacy else CHAINED
    done = start.link.sequence
    with sessions() as s:
        if anchor is not None and start.sequence > 0:
            stored = repository.record_at(s, start.sequence)
            if stored is None or stored.hash != anchor:
                verifier.note(start.sequence, f"record {start.sequence} changed while it was being verified")
        while done < first - 1:  # the chain up to the first record
            cps = repository.checkpoints_between(s, done + 1, first - 1, limit=BATCH, version=version)
            if not cps:
                break
            if anchor is not None:
                _match_stored(s, verifier, cps, first - 1)
            verifier.add_checkpoints(cps)
            done = cps[-1].sequence
    done = max(done, first - 1)
    after = first - 1
    while after < last:
        with sessions() as s:
            batch = repository.records_between(s, after + 1, last, limit=BATCH)
            if not batch:
                break
            verifier.add_checkpoints(
                repository.checkpoints_between(s, done + 1, batch[-1].sequence, version=version)
            )
        done = batch[-1].sequence
        if not all(verifier.feed(r) for r in batch):
            break
        after = batch[-1].sequence
    at_head = last == head.sequence
    with sessions() as s:
        now = repository.read_head(s)  # with what follows, one view of the trail
        later = repository.checkpoints_between(s, done + 1, None, limit=1, version=version)
    if at_head and later and later[0].sequence > now.sequence:
        # A checkpoint past the head: records were cut off. (One between ``last`` and
        # ``now`` was signed over records appended since ``head`` was read.)
        verifier.add_checkpoints(later)
    result = verifier.finish(
        head_sequence=last,
        head_hash=head.hash if at_head else None,
        # A range that ends before the head may be covered by a checkpoint after it.
        require_chain=require_chain and (at_head or not later),
    )
    chain_last = verifier.chain.last if verifier.chain is not None else GENESIS
    return result, Position(result.head_sequence, result.head_hash, chain_last)


def _match_stored(s: Session, verifier: ChainVerifier, cps: list[Checkpoint], anchor_at: int) -> None:
    """Checkpoints made between two looks at the trail must match the records already verified."""
    for cp in cps:
        if cp.sequence < anchor_at:
            stored = repository.record_at(s, cp.sequence)
            if stored is None or stored.hash != cp.head_hash:
                verifier.note(cp.sequence, f"record {cp.sequence} does not match checkpoint {cp.sequence}")


def signed_head_problem(
    s: Session, signed: SignedHead, head: Head, signed_through: int
) -> tuple[int, str] | None:
    """``(first bad sequence, reason)`` unless the trail still holds the last checkpoint signed.

    ``signed_through`` is how far the trail's own checkpoints were found good: when the
    record under the remembered checkpoint was rewritten, the records after that are
    the ones in doubt.
    """
    s0 = signed.sequence
    record = repository.record_at(s, s0)
    if record is None:
        end = min(head.sequence, s0 - 1)
        return end + 1, (
            f"this installation signed a checkpoint at record {s0} but the trail ends at {head.sequence}: "
            "records were cut off or an older copy of the database restored"
        )
    if record.hash != signed.record_hash:
        lo = min(signed_through, s0 - 1) + 1
        return lo, (
            f"record {s0} is not the one this installation signed at checkpoint {s0}: "
            f"records {lo}..{s0} were rewritten or an older copy restored"
        )
    cp = repository.checkpoint_at(s, s0)
    if cp is None or cp.version != CHAINED or cp.digest() != signed.checkpoint_digest:
        what = "dropped" if cp is None else "replaced"
        return s0, f"checkpoint {s0}, the last this installation signed, was {what}"
    return None
