"""Governed changes anchored in the signer before the admin hears "applied".

The signer verifies the governance log on its own and keeps the head it verified on
its HSM token, but an entry it has not read yet could be cut from the log by whoever
can write the database (a key revocation deleted before the next Sign). So once the
transaction that appended an entry has committed, the policy service hands the entry's
sequence and hash to the signer (``AnchorGovernance``, with its ``svc:policy``
certificate); the signer reads the log through it and keeps that head on its token.

The change is applied either way (the log is the truth): the answer says whether the
signer anchored it, and the audit trail records the outcome (``governance.anchored``,
``governance.anchor_failed``). A change the signer could not be reached for is anchored
by the next change's anchoring (an entry's hash covers every entry before it), or by
:meth:`AnchoredGovernance.anchor_log` (``custos admin anchor``). Never imports grpc.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from typing import Any

from services.audit.writer import AuditWriter
from services.policy.changes import ChangeView, Governance
from services.policy.governance import ChangeRequest, ChangeState, TrustRoot
from services.policy.log import Head
from services.runtime.errors import CustosError, Unavailable
from services.runtime.intent import Approval
from services.signer.client import SignerClient

log = logging.getLogger("custos.policy")

ACTION_ANCHORED = "governance.anchored"
ACTION_ANCHOR_FAILED = "governance.anchor_failed"


@dataclass(frozen=True)
class LogAnchor:
    """What asking the signer to anchor the log's head gave."""

    #: The head of the log as this service verified it (genesis for an empty log).
    head: Head
    anchored: bool
    #: The head the signer last said it holds (0: not heard from it).
    signer_head: int
    #: Why the signer did not anchor it ("" when it did).
    error: str = ""


class AnchoredGovernance:
    """:class:`~services.policy.changes.Governance` whose applied changes the signer anchors.

    Args:
        governance: The governed changes and their log.
        signer: The signer's client, calling with this service's ``svc:policy``
            certificate (None: nothing is anchored, and every answer says so).
        audit: Records each anchoring's outcome.
    """

    def __init__(
        self, governance: Governance, signer: SignerClient | None, *, audit: AuditWriter | None = None
    ) -> None:
        self.governance = governance
        self._signer = signer
        self._audit = audit
        #: The furthest entry the signer confirmed holding exactly as this service appended it.
        self._anchored = 0
        self._signer_head = 0

    @property
    def trust(self) -> TrustRoot:
        return self.governance.trust

    async def propose(self, request: ChangeRequest, approval: Approval, *, caller: str) -> ChangeView:
        """``Governance.propose``, then the signer anchors the change if it applied."""
        view = await asyncio.to_thread(self.governance.propose, request, approval, caller=caller)
        return await self._settled(view, caller)

    async def decide(self, change_id: str, approval: Approval, *, caller: str) -> ChangeView:
        """``Governance.decide``, then the signer anchors the change if it applied."""
        view = await asyncio.to_thread(self.governance.decide, change_id, approval, caller=caller)
        return await self._settled(view, caller)

    async def get(self, change_id: str) -> ChangeView:
        return self.marked(await asyncio.to_thread(self.governance.get, change_id))

    async def list_changes(
        self, *, state: ChangeState | None, page_size: int, offset: int
    ) -> list[ChangeView]:
        views = await asyncio.to_thread(
            self.governance.list_changes, state=state, page_size=page_size, offset=offset
        )
        return [self.marked(v) for v in views]

    def marked(self, view: ChangeView) -> ChangeView:
        """``view`` saying whether the signer confirmed its entry, as this service last heard."""
        anchored = view.entry_seq is not None and view.entry_seq <= self._anchored
        return replace(view, anchored=anchored, signer_head=self._signer_head)

    async def anchor_log(self, *, caller: str) -> LogAnchor:
        """Has the signer anchor the log through the head this service verified: every change
        applied so far, those applied while the signer could not be reached included."""
        current = await asyncio.to_thread(self.governance.current)
        head = Head(current.head_seq, current.head_hash)
        if head.seq == 0:
            return LogAnchor(head, anchored=True, signer_head=self._signer_head)
        error = await self._anchor(head, subject=f"governance:{head.seq}", caller=caller)
        return LogAnchor(head, error is None, self._signer_head, error or "")

    async def _settled(self, view: ChangeView, caller: str) -> ChangeView:
        """``view``, once the signer anchored its entry if it applied (or said why not)."""
        seq = view.entry_seq
        if view.state is not ChangeState.APPLIED or seq is None or seq <= self._anchored:
            return self.marked(view)
        if view.entry_hash is not None:
            at = Head(seq, view.entry_hash)
        else:  # applied by an earlier call: the head this service verified covers it, if it reaches it
            current = await asyncio.to_thread(self.governance.current)
            at = Head(current.head_seq, current.head_hash)
        error = await self._anchor(at, subject=f"change:{view.request.change_id}", caller=caller)
        return replace(self.marked(view), anchor_error=error or "")

    async def _anchor(self, at: Head, *, subject: str, caller: str) -> str | None:
        """Asks the signer to anchor ``at``, and records the outcome; returns why it failed (None
        when anchored)."""
        payload: dict[str, Any] = {"entry": at.seq, "entry_hash": at.hash.hex()}
        if self._signer is None:
            error, kind = "this policy service has no signer to anchor the change at", "NoSigner"
        else:
            try:
                held = await self._signer.anchor_governance(at.seq, at.hash)
            except CustosError as e:
                error, kind = e.message, getattr(e, "remote_type", "") or type(e).__name__
                if isinstance(e, Unavailable):
                    log.warning("governance entry %d is not anchored yet: %s", at.seq, error)
                else:  # the signer read the log and it does not hold what was appended
                    log.error("ALERT governance entry %d refused by the signer: %s", at.seq, error)
            else:
                self._anchored = max(self._anchored, at.seq)
                self._signer_head = max(self._signer_head, held.seq)
                await self._record(
                    ACTION_ANCHORED, subject, "ok", {**payload, "signer_head": held.seq}, caller
                )
                return None
        failed = {**payload, "error": kind, "reason": error[:300]}
        await self._record(ACTION_ANCHOR_FAILED, subject, "failed", failed, caller)
        return error

    async def _record(
        self, action: str, subject: str, outcome: str, payload: dict[str, Any], caller: str
    ) -> None:
        if self._audit is None:
            return
        try:
            await self._audit.arecord(action, subject, outcome, payload, actor=caller)
        except CustosError:  # the change is applied and the admin hears how it stands regardless
            log.exception("could not audit the anchoring of governance entry %s", payload["entry"])
