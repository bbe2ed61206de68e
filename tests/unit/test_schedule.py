"""Period math of periodic jobs (domain/schedule.py), with plain values."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from domain.schedule import (
    DEFAULT_SCHEDULES,
    NAMESPACE,
    Occurrence,
    Schedule,
    due,
    job_id,
    occurrence,
    period_start,
)

HOURLY = Schedule(job_type="metering", period="hourly")
DAILY = Schedule(job_type="retention", period="daily")
US = timedelta(microseconds=1)


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


# --- boundaries -------------------------------------------------------------------


def test_an_hourly_period_runs_from_the_hour_to_the_next() -> None:
    start = at(2026, 3, 1, 10)
    for t in (start, start + timedelta(minutes=37, seconds=12), start + timedelta(hours=1) - US):
        assert period_start(HOURLY, t) == start
    assert period_start(HOURLY, start - US) == at(2026, 3, 1, 9)
    assert period_start(HOURLY, start + timedelta(hours=1)) == at(2026, 3, 1, 11)
    occ = occurrence(HOURLY, start + timedelta(minutes=1))
    assert (occ.start, occ.end) == (start, at(2026, 3, 1, 11))


def test_a_daily_period_runs_from_midnight_utc_to_the_next() -> None:
    assert period_start(DAILY, at(2026, 3, 1, 23, 59, 59)) == at(2026, 3, 1)
    assert period_start(DAILY, at(2026, 3, 2)) == at(2026, 3, 2)
    assert period_start(DAILY, at(2026, 3, 2) - US) == at(2026, 3, 1)
    # month, leap-day and year ends
    assert occurrence(DAILY, at(2028, 2, 29, 12)).end == at(2028, 3, 1)
    occ = occurrence(DAILY, at(2026, 12, 31, 23, 30))
    assert (occ.start, occ.end) == (at(2026, 12, 31), at(2027, 1, 1))


def test_periods_are_utc_whatever_the_zone_of_the_time_given() -> None:
    plus2 = timezone(timedelta(hours=2))
    local = datetime(2027, 1, 1, 1, 30, tzinfo=plus2)  # 2026-12-31 23:30 UTC
    start = period_start(DAILY, local)
    assert start == at(2026, 12, 31)
    assert start.utcoffset() == timedelta(0)
    assert occurrence(DAILY, local) == occurrence(DAILY, local.astimezone(UTC))
    minus530 = timezone(-timedelta(hours=5, minutes=30))
    assert period_start(HOURLY, datetime(2026, 6, 1, 8, 45, tzinfo=minus530)) == at(2026, 6, 1, 14)


def test_an_offset_shifts_the_boundaries() -> None:
    hourly = Schedule(job_type="metering", period="hourly", offset=timedelta(minutes=5))
    assert period_start(hourly, at(2026, 3, 1, 10, 4, 59)) == at(2026, 3, 1, 9, 5)
    assert period_start(hourly, at(2026, 3, 1, 10, 5)) == at(2026, 3, 1, 10, 5)
    assert occurrence(hourly, at(2026, 3, 1, 10, 5)).end == at(2026, 3, 1, 11, 5)

    daily = Schedule(job_type="retention", period="daily", offset=timedelta(hours=2))
    assert period_start(daily, at(2026, 3, 2, 1, 59)) == at(2026, 3, 1, 2)
    assert period_start(daily, at(2026, 3, 2, 2)) == at(2026, 3, 2, 2)
    assert period_start(daily, at(2026, 1, 1, 0, 30)) == at(2025, 12, 31, 2)


def test_bad_schedules_and_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="offset"):
        Schedule(job_type="metering", period="hourly", offset=timedelta(hours=1))
    with pytest.raises(ValueError, match="offset"):
        Schedule(job_type="metering", period="hourly", offset=timedelta(seconds=-1))
    with pytest.raises(ValueError, match="offset"):
        Schedule(job_type="retention", period="daily", offset=timedelta(days=1))
    with pytest.raises(ValueError, match="period"):
        Schedule(job_type="metering", period="weekly")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="aware"):
        period_start(HOURLY, datetime(2026, 3, 1, 10))


# --- the job of a period ------------------------------------------------------------


def test_every_instant_of_a_period_gives_the_same_job_and_payload() -> None:
    start = at(2026, 3, 1, 10)
    occurrences = {occurrence(HOURLY, start + timedelta(minutes=m)) for m in range(60)}
    assert len(occurrences) == 1
    (occ,) = occurrences
    assert occ.job_type == "metering"
    assert occ.payload == {
        "period_start": "2026-03-01T10:00:00+00:00",
        "period_end": "2026-03-01T11:00:00+00:00",
    }
    assert occurrence(HOURLY, start + timedelta(hours=1)).job_id != occ.job_id


def test_job_ids_are_uuid5_of_type_period_and_start_and_never_change() -> None:
    start = at(2026, 1, 1, 10)
    got = job_id("metering", "hourly", start)
    assert got == uuid.uuid5(NAMESPACE, "metering/hourly/2026-01-01T10:00:00+00:00")
    assert got.version == 5
    # pinned: a different value would re-enqueue every period already run
    assert got == uuid.UUID("90a2a513-03ac-51e1-a37c-603bb64f1e09")
    assert job_id("retention", "daily", at(2026, 1, 1)) == uuid.UUID(
        "4c5b911b-043b-5183-a44e-e506a6de5354"
    )
    # the same instant written in another zone is the same period
    assert job_id("metering", "hourly", start.astimezone(timezone(timedelta(hours=3)))) == got
    # type and period kind are part of the identity
    assert job_id("retention", "hourly", start) != got
    assert job_id("metering", "daily", at(2026, 1, 1)) != job_id(
        "metering", "hourly", at(2026, 1, 1)
    )


def test_due_is_the_current_period_after_a_bounded_catch_up() -> None:
    now = at(2026, 3, 1, 10, 30)
    previous, current = due(HOURLY, now)
    assert (previous.start, current.start) == (at(2026, 3, 1, 9), at(2026, 3, 1, 10))
    assert previous.end == current.start
    assert due(HOURLY, now, catch_up=0) == (current,)
    three = due(DAILY, now, catch_up=2)
    assert [o.start for o in three] == [at(2026, 2, 27), at(2026, 2, 28), at(2026, 3, 1)]
    assert all(isinstance(o, Occurrence) for o in three)
    with pytest.raises(ValueError, match="catch_up"):
        due(HOURLY, now, catch_up=-1)


def test_retention_runs_daily_and_metering_hourly_by_default() -> None:
    assert {(s.job_type, s.period) for s in DEFAULT_SCHEDULES} == {
        ("retention", "daily"),
        ("metering", "hourly"),
    }
