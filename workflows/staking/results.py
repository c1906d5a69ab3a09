"""An intent workflow's result, read by a client: completed (CONFIRMED) or failed with the result."""

from __future__ import annotations

from typing import Any

from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError

from workflows.staking.types import IntentResult


async def intent_result(handle: Any) -> IntentResult:
    """Waits for the intent workflow behind ``handle`` and returns how it ended, whichever way.

    An ending other than CONFIRMED fails the workflow with an ``Intent<State>`` error whose
    first detail is the :class:`IntentResult`; a workflow recorded before that completes with it.

    Raises:
        WorkflowFailureError: the workflow failed otherwise (terminated, timed out, a bug).
    """
    try:
        result = await handle.result()  # typed by the handle (a handle of the run method's)
        return result if isinstance(result, IntentResult) else IntentResult(**result)
    except WorkflowFailureError as e:
        cause = e.cause
        if isinstance(cause, ApplicationError) and (cause.type or "").startswith("Intent") and cause.details:
            detail = cause.details[0]  # the converter gives the dataclass back as a dict
            return detail if isinstance(detail, IntentResult) else IntentResult(**detail)
        raise
