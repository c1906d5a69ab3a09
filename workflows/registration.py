"""Registering the intent workflows' search attributes with the Temporal namespace (client side)."""

from __future__ import annotations

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from services.runtime.errors import FailedPrecondition
from workflows.search_attributes import KEYS


async def ensure_registered(client: Client) -> None:
    """Adds the attributes the namespace lacks (none when they are there).

    Raises:
        FailedPrecondition: the server refused to add them (a cluster whose operators add them).
    """
    known: set[str] = set()
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
        known = set(listed.custom_attributes) | set(listed.system_attributes)
    except RPCError as e:
        if e.status != RPCStatusCode.UNIMPLEMENTED:  # the time-skipping test server lists none
            raise
    missing = {k.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for k in KEYS if k.name not in known}
    if not missing:
        return
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )
    except RPCError as e:
        names = ", ".join(f"{n}=Keyword" for n in missing)
        raise FailedPrecondition(
            f"Temporal namespace {client.namespace} lacks the search attributes {names} and refused to add "
            f"them ({e.message[:120]}): add them (temporal operator search-attribute create) and start again"
        ) from None
