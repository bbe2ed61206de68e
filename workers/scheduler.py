"""The scheduler: periodic jobs (``retention`` daily, ``metering`` hourly), once per period.

Every worker process runs one; there is no leader and no lease. Every
``interval_s`` it asks ``domain.schedule.due`` which periods' jobs should
exist now (the current period, and up to ``catch_up`` finished ones a
scheduler may have missed while no worker ran) and, for each one not yet
seen, it:

1. loads the job's stream ``job-<id>`` (the id is deterministic per period:
   ``domain.schedule.job_id``);
2. decides with ``domain.job.queue``: a job that exists is a no-op;
3. appends ``job.queued`` with expected version 0.

Of several schedulers (or one looping), exactly one append per period wins;
the others read an existing stream (the no-op) or lose the race on the
unique (stream, version) index (a ConcurrencyError) and move on. The relay
publishes the winner's ``job.queued`` to ``jobs.<type>`` like any job, and
the reconciler covers a lost message, so nothing here touches NATS.

Job ids already confirmed are remembered, so a pass between boundaries reads
nothing; the memory is pruned to the periods still due.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Literal

from commands.store import ConcurrencyError
from domain import job
from domain.envelope import Actor, Metadata, StreamAppend
from domain.schedule import DEFAULT_SCHEDULES, Occurrence, Schedule, due
from workers.consumer import JobStore
from workers.streams import DEFAULT_JOB_TYPES, JobTypeSettings

log = logging.getLogger("byteor.jobs")

SCHEDULER = Actor(kind="system", id="byteor-scheduler")

Result = Literal["queued", "exists"]
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Scheduler:
    """Enqueues each schedule's job once per period; ``run`` every ``interval_s``."""

    def __init__(
        self,
        jobs: JobStore,
        schedules: Iterable[Schedule] = DEFAULT_SCHEDULES,
        settings: Mapping[str, JobTypeSettings] | None = None,
        *,
        interval_s: float = 5.0,
        catch_up: int = 1,
        clock: Clock = utc_now,
    ) -> None:
        self.jobs = jobs
        self.schedules = tuple(schedules)
        self.settings = dict(settings) if settings else {s.job_type: s for s in DEFAULT_JOB_TYPES}
        missing = sorted({s.job_type for s in self.schedules} - set(self.settings))
        if missing:
            raise ValueError(f"scheduled job types without settings: {', '.join(missing)}")
        if catch_up < 0:
            raise ValueError("catch_up cannot be negative")
        self.interval_s = interval_s
        self.catch_up = catch_up
        self.clock = clock
        self.queued = 0  # appends this scheduler won
        self.existing = 0  # periods another scheduler (or an earlier pass) had queued
        self._known: set[uuid.UUID] = set()

    def due(self, now: datetime) -> list[Occurrence]:
        return [o for s in self.schedules for o in due(s, now, self.catch_up)]

    async def step(self) -> int:
        """One pass at the clock's current time; returns how many jobs this pass queued."""
        occurrences = self.due(self.clock())
        self._known &= {o.job_id for o in occurrences}
        done = 0
        for occ in occurrences:
            if occ.job_id in self._known:
                continue
            result = await self.enqueue(occ)
            self._known.add(occ.job_id)
            if result == "queued":
                done += 1
                log.info(
                    "scheduled %s for %s",
                    occ.job_type,
                    occ.start.isoformat(),
                    extra={"job_id": str(occ.job_id), "job_type": occ.job_type},
                )
        self.queued += done
        return done

    async def enqueue(self, occ: Occurrence) -> Result:
        """Queue the period's job unless it exists; a lost race is "exists" too."""
        loaded = await self.jobs.load(occ.job_id)
        events = job.queue(
            loaded.state,
            job_id=occ.job_id,
            job_type=occ.job_type,
            payload=dict(occ.payload),
            max_attempts=self.settings[occ.job_type].max_attempts,
        )
        if not events:
            self.existing += 1
            return "exists"
        append = StreamAppend(
            stream_id=job.stream_id(occ.job_id),
            stream_type=job.STREAM_TYPE,
            expected_version=0,
            events=tuple(self.jobs.codec.encode(e) for e in events),
        )
        meta = Metadata(actor=SCHEDULER, tenant_id=None, correlation_id=occ.job_id)
        try:
            await self.jobs.store.append([append], meta)
        except ConcurrencyError:  # another scheduler queued it first
            self.existing += 1
            return "exists"
        return "queued"

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.step()
            except Exception as exc:  # a daemon: log and try again next interval
                log.warning("scheduler pass failed: %s: %s", type(exc).__name__, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)
