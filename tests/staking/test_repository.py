"""The staking read model's queries: what a caller can put in them."""

from __future__ import annotations

import base64

import pytest
from sqlalchemy.orm import Session, sessionmaker

from services.runtime.errors import InvalidArgument
from services.staking import repository
from services.staking.repository import IntentFilter


@pytest.mark.parametrize(
    "token",
    [
        # json.loads: a RecursionError (INTERNAL), or a crash where py_ecc has raised the recursion limit
        base64.urlsafe_b64encode(b"[" * 100_000).decode(),
        base64.urlsafe_b64encode(b'{"c": 1, "i": "x"}').decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        "not base64 at all!",
    ],
    ids=["deep", "wrong-type", "not-utf8", "not-base64"],
)
def test_a_page_token_this_service_did_not_issue_is_invalid_argument(
    session_factory: sessionmaker[Session], token: str
) -> None:
    with session_factory() as s, pytest.raises(InvalidArgument, match="page_token is not one"):
        repository.list_intents(s, IntentFilter(), 10, token)
