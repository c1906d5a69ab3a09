"""The edge conversions bound what reaches the domain: times a datetime holds, integers a database holds."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.orm import Session, sessionmaker

from services.audit import repository as audit_repository
from services.runtime.convert import MAX_INT64, bounded_int, datetime_to_ts, optional_datetime, ts_to_datetime
from services.runtime.errors import InvalidArgument
from services.staking import repository as staking_repository
from services.staking.servicer import MAX_SEQUENCE

FIRST = -62_135_596_800  # 0001-01-01T00:00:00Z
LAST = 253_402_300_799  # 9999-12-31T23:59:59Z


def test_the_first_and_last_instants_convert_exactly() -> None:
    assert ts_to_datetime(Timestamp(seconds=FIRST), "at") == datetime(1, 1, 1, tzinfo=UTC)
    last = ts_to_datetime(Timestamp(seconds=LAST, nanos=999_999_999), "at")
    assert last == datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(FIRST - 1, 0), (LAST + 1, 0), (2**63 - 1, 0), (-(2**63), 0), (0, -1), (0, 1_000_000_000)],
)
def test_a_time_outside_the_calendar_is_refused_naming_the_field(seconds: int, nanos: int) -> None:
    with pytest.raises(InvalidArgument, match=r"^approval\.expires_at must be a time from 0001-01-01"):
        ts_to_datetime(Timestamp(seconds=seconds, nanos=nanos), "approval.expires_at")


def test_a_time_round_trips_to_the_microsecond() -> None:
    """What an approver signs (a microsecond time) must come back the same, or the signature fails."""
    for value in (
        datetime(2026, 11, 30, 12, 34, 56, 789_012, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2262, 4, 11, 23, 47, 16, 854_775, tzinfo=UTC),
    ):
        assert ts_to_datetime(datetime_to_ts(value), "t") == value
    # nanoseconds below a microsecond are dropped, as protobuf's own ToDatetime does
    ts = Timestamp(seconds=1, nanos=1_999)
    assert ts_to_datetime(ts, "t") == ts.ToDatetime(tzinfo=UTC)


def test_an_unset_time_is_none_and_a_set_one_is_checked() -> None:
    from services.pb.custos.common.v1 import common_pb2

    empty = common_pb2.TimeRange()
    assert optional_datetime(empty, "start", "created.start") is None
    with pytest.raises(InvalidArgument, match=r"^created\.end "):
        optional_datetime(common_pb2.TimeRange(end=Timestamp(seconds=LAST + 1)), "end", "created.end")


def test_integers_are_bounded_to_what_the_database_holds() -> None:
    assert bounded_int(MAX_INT64, "after_sequence") == MAX_INT64
    for value in (MAX_INT64 + 1, 2**64 - 1, -1):
        with pytest.raises(
            InvalidArgument, match=r"^after_sequence must be between 0 and 9223372036854775807"
        ):
            bounded_int(value, "after_sequence")
    assert bounded_int(5, "page", minimum=1, maximum=5) == 5


def _audit_records(s: Session, sequence: int) -> list[Any]:
    return audit_repository.records_between(s, sequence, sequence)


def _intent_events(s: Session, sequence: int) -> list[Any]:
    return list(staking_repository.events_of(s, "int-none", sequence))


@pytest.mark.parametrize(
    ("query", "bound"),
    [(_audit_records, MAX_INT64), (_intent_events, MAX_SEQUENCE)],
    ids=["audit-sequence-bigint", "intent-sequence-integer"],
)
def test_each_bound_is_what_its_column_takes_on_both_databases(
    session_factory: sessionmaker[Session], query: Callable[[Session, int], list[Any]], bound: int
) -> None:
    """The bound goes through a query on SQLite and PostgreSQL; one past it fails in the database
    (PostgreSQL's INTEGER, or either past int64) with an error that would be INTERNAL."""
    with session_factory() as s:
        assert query(s, bound) == []
    with session_factory() as s, pytest.raises(Exception, match=r"(?i)too large|out of range"):
        query(s, MAX_INT64 + 1)
    if bound < MAX_INT64 and session_factory.kw["bind"].dialect.name == "postgresql":
        with session_factory() as s, pytest.raises(Exception, match=r"(?i)out of range"):
            query(s, bound + 1)
