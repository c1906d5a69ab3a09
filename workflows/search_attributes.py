"""The search attributes of every intent workflow, so the Temporal UI and ``temporal workflow list``
filter intents: ``CustosState = 'AWAITING_APPROVALS' AND CustosVault = 'vault-1'``.

A server rejects the upsert of an attribute it does not know (the workflow task fails and
retries forever): the worker registers them before it polls (:func:`ensure_registered`), and
the dev stack starts its server with them.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

STATE = SearchAttributeKey.for_keyword("CustosState")
VAULT = SearchAttributeKey.for_keyword("CustosVault")
CHAIN = SearchAttributeKey.for_keyword("CustosChain")
ACTION = SearchAttributeKey.for_keyword("CustosAction")
KEYS = (STATE, VAULT, CHAIN, ACTION)


def dev_server_flags() -> list[str]:
    """``temporal server start-dev`` arguments that register the attributes."""
    return [arg for key in KEYS for arg in ("--search-attribute", f"{key.name}=Keyword")]
