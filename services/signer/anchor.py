"""The signing ledger's head on the HSM token: what the database writer cannot cut or rewrite.

Before a group commit stores its signing records, the committing signer writes to its
token the head the batch ends at, the head it extends, and the batch's records (without
their signatures). A signer compares the database's chain with the token's heads whenever
it takes the ledger lock, and at start-up. Each head is

* *committed*: the chain holds its record at its sequence, with its hash;
* *lost*: the chain holds the head it extends but not its batch. The batch never reached the
  database (the signer stopped between the two writes, a commit failed, or a process lost the
  database lock to another), or someone removed it after reading its signatures. The ledger
  cannot tell which, so it keeps the batch's records as *lost*
  (:class:`~services.signer.entries.Entry`): their steps stay bound to their transactions,
  and their amounts count, for ever (lost entries are carried in every later head);
* anything else: records were removed or rewritten, and the signer signs nothing. The chain
  must also end at a committed head, or where a lost one began.

Writers serialise on the database's ledger lock, which the database's owner can break (end the
session holding it). So a writer never destroys a head it did not read: two writes that raced
both stay on the token, and the next reader settles both.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Protocol

from services.signer.entries import Entry

#: The token data object holding the ledger head this installation anchored.
HEAD_LABEL = "custos.signer.ledger-head"
FORMAT = "custos.signer.ledger-head/v2"
log = logging.getLogger(__name__)


class DataStore(Protocol):
    def load_all_data(self, label: str) -> list[bytes]: ...

    def replace_data(self, label: str, value: bytes, replaces: Collection[bytes]) -> None: ...


@dataclass(frozen=True)
class TokenHead:
    """What the token remembers of the ledger.

    ``prev_seq``/``prev_hash`` and ``batch`` are None/empty for a head written by a signer
    before this format (only its sequence and hash are known).
    """

    seq: int
    hash: bytes
    prev_seq: int | None = None
    prev_hash: bytes | None = None
    batch: tuple[Entry, ...] = ()
    lost: tuple[Entry, ...] = ()

    def to_bytes(self) -> bytes:
        data: dict[str, Any] = {"format": FORMAT, "seq": self.seq, "hash": self.hash.hex()}
        if self.prev_seq is not None and self.prev_hash is not None:
            data |= {"prev_seq": self.prev_seq, "prev_hash": self.prev_hash.hex()}
        data["batch"] = [e.to_json() for e in self.batch]
        data["lost"] = [e.to_json() for e in self.lost]
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> TokenHead:
        data = json.loads(raw)
        prev_seq, prev_hash = data.get("prev_seq"), data.get("prev_hash")
        return cls(
            seq=int(data["seq"]),
            hash=bytes.fromhex(data["hash"]),
            prev_seq=int(prev_seq) if prev_seq is not None else None,
            prev_hash=bytes.fromhex(prev_hash) if prev_hash is not None else None,
            batch=tuple(Entry.from_json(e) for e in data.get("batch", ())),
            lost=tuple(Entry.from_json(e) for e in data.get("lost", ())),
        )


class HeadAnchor:
    """Reads and writes the :class:`TokenHead` under one label (one per installation)."""

    #: Token writes tried before the batch is refused (SoftHSM's file store, written by
    #: several processes, sometimes fails one).
    ATTEMPTS = 3

    def __init__(self, store: DataStore, *, label: str = HEAD_LABEL) -> None:
        self._store = store
        self._label = label
        self._lock = threading.Lock()

    def read(self) -> list[tuple[bytes, TokenHead]]:
        """Every head on the token (usually one), with the stored value it was read from."""
        return [(raw, TokenHead.from_bytes(raw)) for raw in self._store.load_all_data(self._label)]

    def write(self, head: TokenHead, replaces: Collection[bytes]) -> None:
        """Stores ``head`` in place of the values ``replaces`` (the heads it settled); raises the
        HSM's error when it cannot (the batch is then not committed)."""
        value = head.to_bytes()
        with self._lock:
            for attempt in range(1, self.ATTEMPTS + 1):
                try:
                    self._store.replace_data(self._label, value, replaces)
                    return
                except Exception as e:
                    log.warning(
                        "could not write the signing ledger's head to the HSM (attempt %d of %d): %s",
                        attempt,
                        self.ATTEMPTS,
                        type(e).__name__,
                    )
                    if attempt == self.ATTEMPTS:
                        raise
