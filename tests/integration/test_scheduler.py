"""The scheduler on real Postgres: periodic jobs are queued exactly once per period.

Two ``Scheduler`` instances, each with its own connection pool (as two worker
processes would have), run their loops concurrently against one event store
while a fake clock is driven through three periods. The event store must then
hold one job stream per period with a single ``job.queued``. NATS is not
involved: the scheduler only appends; the relay publishes (tests/integration/
test_jobs.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from commands.pgstore import PgEventStore
from domain import job
from domain.schedule import DEFAULT_SCHEDULES, Schedule, due, occurrence
from schema.pg import create_pool
from workers.consumer import JobStore, Loaded
from workers.scheduler import SCHEDULER, Scheduler
from workers.streams import DEFAULT_JOB_TYPES

SETTINGS = {s.job_type: s for s in DEFAULT_JOB_TYPES}
T0 = datetime(2026, 3, 1, 0, 20, tzinfo=UTC)


class Timeline:
    """The fake time both schedulers read; each reader counts its reads."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def clock(self) -> Clock:
        return Clock(self)


class Clock:
    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.reads = 0

    def __call__(self) -> datetime:
        self.reads += 1
        return self.timeline.now


async def passes_done(clocks: list[Clock], within: float = 10.0) -> None:
    """Wait until every scheduler finished a whole pass at the current time.

    ``step`` reads the clock once, first: a second read after the time was set
    means the pass that read the new time has ended.
    """
    marks = [c.reads for c in clocks]
    deadline = time.monotonic() + within
    while any(c.reads < m + 2 for c, m in zip(clocks, marks, strict=True)):
        if time.monotonic() > deadline:
            pytest.fail("a scheduler stopped passing")
        await asyncio.sleep(0.002)


@pytest.fixture
async def pools(database: str) -> AsyncIterator[list[asyncpg.Pool]]:
    made = [await create_pool(database, min_size=1, max_size=4) for _ in range(2)]
    yield made
    for p in made:
        await p.close()


async def job_events(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch(
            """
            SELECT stream_id, stream_version, event_type, payload, actor_id, tenant_id
            FROM events WHERE stream_type = 'job' ORDER BY position
            """
        )


@pytest.mark.parametrize("schedule", DEFAULT_SCHEDULES, ids=lambda s: s.job_type)
async def test_two_schedulers_queue_each_period_exactly_once(
    pools: list[asyncpg.Pool], schedule: Schedule
) -> None:
    timeline = Timeline(T0)
    clocks = [timeline.clock() for _ in pools]
    schedulers = [
        Scheduler(
            JobStore(PgEventStore(p)),
            [schedule],
            SETTINGS,
            interval_s=0.001,
            catch_up=0,
            clock=c,
        )
        for p, c in zip(pools, clocks, strict=True)
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(s.run(stop)) for s in schedulers]
    expected = []
    try:
        for n in range(3):
            start = occurrence(schedule, T0).start + n * schedule.length
            expected.append(occurrence(schedule, start))
            # several passes inside the period, up to its last microsecond
            for t in (
                start,
                start + schedule.length / 3,
                start + schedule.length - timedelta(microseconds=1),
            ):
                timeline.now = t
                await passes_done(clocks)
    finally:
        stop.set()
        await asyncio.gather(*tasks)

    rows = await job_events(pools[0])
    assert [r["stream_id"] for r in rows] == [job.stream_id(o.job_id) for o in expected]
    for row, occ in zip(rows, expected, strict=True):
        assert (row["stream_version"], row["event_type"]) == (1, "job.queued")
        assert (row["actor_id"], row["tenant_id"]) == (SCHEDULER.id, None)
        payload = json.loads(row["payload"])
        assert payload["job_type"] == schedule.job_type
        assert payload["max_attempts"] == SETTINGS[schedule.job_type].max_attempts
        assert payload["payload"] == occ.payload
    # per period: one scheduler's append won, the other found the job and left it
    # alone; later passes in the period remember the id and read nothing
    assert sum(s.queued for s in schedulers) == 3
    assert sum(s.existing for s in schedulers) == 3


async def test_a_lost_race_is_a_conflict_and_a_no_op(pool: asyncpg.Pool) -> None:
    """Both read "no job" before either appends: the second append conflicts."""

    class StaleJobStore(JobStore):
        async def load(self, job_id):  # type: ignore[no-untyped-def]
            return Loaded(state=None, first=None, last=None)

    store = PgEventStore(pool)
    now = T0
    first = Scheduler(StaleJobStore(store), DEFAULT_SCHEDULES, SETTINGS, clock=lambda: now)
    second = Scheduler(StaleJobStore(store), DEFAULT_SCHEDULES, SETTINGS, clock=lambda: now)
    assert await first.step() == 4  # two schedules x (previous + current period)
    assert await second.step() == 0
    assert (second.queued, second.existing) == (0, 4)
    assert len(await job_events(pool)) == 4


async def test_concurrent_passes_at_one_instant_queue_once(pool: asyncpg.Pool) -> None:
    store = PgEventStore(pool)
    now = T0 + timedelta(hours=5)
    schedulers = [
        Scheduler(JobStore(store), DEFAULT_SCHEDULES, SETTINGS, clock=lambda: now) for _ in range(8)
    ]
    results = await asyncio.gather(*(s.step() for s in schedulers))
    assert sum(results) == 4
    rows = await job_events(pool)
    assert len(rows) == 4
    assert len({r["stream_id"] for r in rows}) == 4


async def test_a_missed_period_is_caught_up_boundedly(pool: asyncpg.Pool) -> None:
    hourly = Schedule(job_type="metering", period="hourly")
    now = T0 + timedelta(hours=6)
    late = Scheduler(
        JobStore(PgEventStore(pool)), [hourly], SETTINGS, catch_up=1, clock=lambda: now
    )
    assert await late.step() == 2
    rows = await job_events(pool)
    assert [r["stream_id"] for r in rows] == [job.stream_id(o.job_id) for o in due(hourly, now)]
    # the same scheduler again, later in the period: known ids, nothing read or queued
    now += timedelta(minutes=10)
    assert await late.step() == 0
    assert len(await job_events(pool)) == 2


async def test_a_schedule_without_job_settings_is_refused(pool: asyncpg.Pool) -> None:
    with pytest.raises(ValueError, match="without settings"):
        Scheduler(
            JobStore(PgEventStore(pool)),
            [Schedule(job_type="nightly_report", period="daily")],
            SETTINGS,
        )
