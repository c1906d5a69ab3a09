"""The workflow's approval book: which refusal an approval gets, in the order a retrying client needs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from temporalio.exceptions import ApplicationError

from tests.staking.workflow_helpers import Person, make_input
from workflows.approvals import ApprovalBook

ALICE, O1, O2, O3 = (Person(n) for n in ("alice", "olivia", "oscar", "otto"))
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_retried_accepted_approval_is_accepted_again_after_the_gate_closed() -> None:
    """The crash test's case: the answer to an accepted approval is lost, the quorum closes the
    gate, and the approver's retry of the same signed approval is accepted again (the handler
    answers it as the first), while another decision of theirs says "already decided"."""
    inp = make_input("alice", [p.data(["operations"], T0) for p in (ALICE, O1, O2, O3)], T0)
    book = ApprovalBook(inp)
    now, exp = T0 + timedelta(hours=1), T0 + timedelta(days=1)
    for person in (O1, O2):
        approval = person.decide(inp, expires_at=exp)
        book.validate(approval, "APPROVE", now)
        book.add(approval)
    book.open = False  # the quorum was met: the workflow closes the gate
    book.validate(O1.decide(inp, expires_at=exp), "APPROVE", now)  # the same signature: a retry
    with pytest.raises(ApplicationError, match="olivia has already decided on this intent"):
        book.validate(O1.decide(inp, expires_at=exp - timedelta(hours=1)), "APPROVE", now)
    with pytest.raises(ApplicationError, match="no longer accepts approvals"):
        book.validate(O3.decide(inp, expires_at=exp), "APPROVE", now)


def test_an_approval_claiming_to_count_past_the_window_is_refused() -> None:
    """The workflow refuses what the signer would not count: an expiry past submission + the rule's expiry."""
    from workflows.approvals import requirement_from_outcome
    from workflows.staking.types import GroupData, PolicyOutcome

    inp = make_input("alice", [p.data(["operations"], T0) for p in (ALICE, O1, O2, O3)], T0)
    book = ApprovalBook(inp)
    outcome = PolicyOutcome(True, [], [GroupData("ops", 2, ["olivia", "oscar", "otto"])], 3600, "r")
    book.set_requirement(requirement_from_outcome(outcome, inp.policy_version), T0 + timedelta(minutes=5))
    now = T0 + timedelta(minutes=10)
    with pytest.raises(ApplicationError, match="approval window ends"):
        book.validate(O1.decide(inp, expires_at=T0 + timedelta(days=3650)), "APPROVE", now)
    book.validate(O1.decide(inp, expires_at=T0 + timedelta(hours=1)), "APPROVE", now)
