"""Periodic jobs: which period a time falls in, and the job that stands for it.

A schedule says "run ``job_type`` once per hour (or day), starting ``offset``
into each period". Periods are aligned to the Unix epoch in UTC, so every
process computes the same boundaries from the same instant, whatever its
local time zone::

    hourly, offset 5 min:   … 09:05 ─┬─ 10:05 ─┬─ 11:05 …
                                     └ period [10:05, 11:05)

Each period has one deterministic job id: ``uuid5(NAMESPACE, "<job type>/
<period>/<period start ISO>")``. Every scheduler replica that decides to
enqueue that period's job appends ``job.queued`` to the same stream
``job-<id>`` with expected version 0, so exactly one append wins; the others
get a conflict (or the queue decision's no-op) and move on. That is the whole
of "exactly once per period across all replicas": no lease, no leader.

The period kind is part of the id's name, so changing a schedule from hourly
to daily never collides with a job queued under the old schedule (a daily
period starting at 00:00 would otherwise share its id with that hour's job).

Pure: the clock is an argument.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

import msgspec

Period = Literal["hourly", "daily"]
PERIODS: Final[tuple[Period, ...]] = ("hourly", "daily")
PERIOD_LENGTH: Final[dict[Period, timedelta]] = {
    "hourly": timedelta(hours=1),
    "daily": timedelta(days=1),
}

# Fixed forever: changing it would re-enqueue every period already run.
NAMESPACE: Final = uuid.UUID("6f0c2f5e-8a53-5b1c-9d2e-3c4b7a1e0f42")
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class Schedule(msgspec.Struct, frozen=True, kw_only=True):
    """Run ``job_type`` once per ``period``, each period starting ``offset`` into the hour/day."""

    job_type: str
    period: Period
    offset: timedelta = timedelta(0)

    def __post_init__(self) -> None:
        if self.period not in PERIOD_LENGTH:
            raise ValueError(f"unknown period {self.period!r}; one of {', '.join(PERIODS)}")
        if not timedelta(0) <= self.offset < self.length:
            raise ValueError(
                f"offset {self.offset} is outside [0, {self.length}) for a {self.period} schedule"
            )

    @property
    def length(self) -> timedelta:
        return PERIOD_LENGTH[self.period]


class Occurrence(msgspec.Struct, frozen=True, kw_only=True):
    """One period of one schedule, and the job that runs for it."""

    job_type: str
    period: Period
    start: datetime  # UTC, inclusive
    end: datetime  # UTC, exclusive
    job_id: uuid.UUID

    @property
    def payload(self) -> dict[str, str]:
        return {"period_start": self.start.isoformat(), "period_end": self.end.isoformat()}


DEFAULT_SCHEDULES: Final[tuple[Schedule, ...]] = (
    Schedule(job_type="retention", period="daily"),
    Schedule(job_type="metering", period="hourly"),
)


def period_start(schedule: Schedule, at: datetime) -> datetime:
    """The start (UTC) of the period of ``schedule`` that contains the instant ``at``."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("a schedule needs an aware datetime (UTC), not a naive one")
    since = at.astimezone(UTC) - EPOCH - schedule.offset
    return EPOCH + schedule.offset + (since // schedule.length) * schedule.length


def job_id(job_type: str, period: Period, start: datetime) -> uuid.UUID:
    """The deterministic id of the job for the period of ``job_type`` starting at ``start``."""
    return uuid.uuid5(NAMESPACE, f"{job_type}/{period}/{start.astimezone(UTC).isoformat()}")


def occurrence(schedule: Schedule, at: datetime) -> Occurrence:
    """The period containing ``at``, with its job id."""
    start = period_start(schedule, at)
    return _occurrence(schedule, start)


def due(schedule: Schedule, now: datetime, catch_up: int = 1) -> tuple[Occurrence, ...]:
    """The periods whose job should exist at ``now``, oldest first.

    The current period, preceded by up to ``catch_up`` finished ones (a job a
    scheduler missed because no worker ran at the boundary). Bounded on
    purpose: after a long outage only the recent periods are run again.
    """
    if catch_up < 0:
        raise ValueError("catch_up cannot be negative")
    start = period_start(schedule, now)
    return tuple(
        _occurrence(schedule, start - back * schedule.length) for back in range(catch_up, -1, -1)
    )


def _occurrence(schedule: Schedule, start: datetime) -> Occurrence:
    return Occurrence(
        job_type=schedule.job_type,
        period=schedule.period,
        start=start,
        end=start + schedule.length,
        job_id=job_id(schedule.job_type, schedule.period, start),
    )
