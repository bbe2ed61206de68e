"""The reconciler: Postgres is the source of truth, NATS only the transport.

JetStream acknowledges a publish before it is on disk and a stream can be
purged, so a job's only message can vanish while the event store still says
``queued`` or ``retrying``. Nothing would ever run it. The reconciler finds
such jobs in the job index (``projections/jobs.py``: due more than ``grace_s``
ago) and sends them again:

1. it re-reads the job's stream (the index may lag) and re-checks the rule
   against the event store: still ``queued``/``retrying`` and overdue;
2. it appends ``job.republished`` (``domain.job.republish``: a new generation,
   attempts from 1, because JetStream's delivery count restarts on a new
   message; decision 0004) with the version it read. This append is the
   claim: of several reconcilers, or a worker starting the job meanwhile,
   exactly one moves the stream; the others get a ConcurrencyError and leave
   the job alone;
3. it publishes a ``JobMessage`` for the new generation to ``jobs.<type>``
   with ``Nats-Msg-Id = <job id>.<generation>``, an id no earlier message had,
   so JetStream's duplicate window does not swallow it while a second publish
   of the same generation (a retry, the relay) is dropped.

Copies of the old generation still in the stream (the message was slow, not
lost) are acked and ignored by the consume loop, so the effect stays single.
If the publish fails after the append, the job is ``queued`` in the new
generation and due from the append: the next pass past the grace sends it
again as the generation after. Running several reconcilers is safe (step 2),
so there is no lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Literal

import asyncpg
import msgspec
from nats.js import JetStreamContext

from commands.store import ConcurrencyError
from domain import job
from domain.errors import DomainError
from projections.jobs import due_at, overdue
from workers.consumer import JobStore, Loaded
from workers.streams import LOST, JobMessage, ensure_jobs_stream, job_msg_id, job_subject

log = logging.getLogger("byteor.jobs")

BY = "reconciler"

_OVERDUE = """
SELECT job_id FROM job_index
WHERE status IN ('queued', 'retrying') AND due_at <= $1
  AND ($3::text[] IS NULL OR job_type = ANY($3))
ORDER BY due_at
LIMIT $2
"""

Result = Literal["republished", "unsent", "not_due", "moved"]


def due_of(loaded: Loaded) -> datetime | None:
    """The job's due time by the event store (None: not waiting for a message)."""
    state, last = loaded.state, loaded.last
    if state is None or last is None:
        return None
    return due_at(
        state.status,
        last.recorded_at,
        not_before=state.not_before if state.generation == 0 else None,
        next_delay_s=state.next_delay_s,
    )


class Reconciler:
    """Republishes overdue ``queued``/``retrying`` jobs; ``run`` every ``interval_s``."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        jobs: JobStore,
        js: JetStreamContext,
        *,
        grace_s: float = 300.0,
        interval_s: float = 30.0,
        batch_size: int = 500,
        concurrency: int = 16,
        job_types: Collection[str] | None = None,
    ) -> None:
        """``job_types``: only these (the types some worker consumes); None = all.

        A job whose type nobody consumes would otherwise be republished every
        grace period, one ``job.republished`` event each time, for ever.
        """
        self.job_types = sorted(job_types) if job_types is not None else None
        self.pool = pool
        self.jobs = jobs
        self.js = js
        self.grace_s = grace_s
        self.interval_s = interval_s
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.republished = 0

    async def step(self, now: datetime | None = None) -> int:
        """One pass over the overdue jobs; returns how many were republished."""
        now = now or datetime.now(UTC)
        limit = now - timedelta(seconds=self.grace_s)
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(_OVERDUE, limit, self.batch_size, self.job_types)
        gate = asyncio.Semaphore(self.concurrency)

        async def one(job_id: uuid.UUID) -> Result:
            async with gate:
                return await self.reconcile(job_id, now)

        results = await asyncio.gather(*(one(r["job_id"]) for r in rows))
        done = sum(1 for r in results if r == "republished")
        self.republished += done
        if done:
            log.warning("reconciler republished %d overdue jobs", done)
        return done

    async def reconcile(self, job_id: uuid.UUID, now: datetime) -> Result:
        """Republish one job if the event store says it is still overdue."""
        loaded = await self.jobs.load(job_id)
        if not overdue(due_of(loaded), now, self.grace_s):
            return "not_due"
        try:
            events = job.republish(loaded.state, BY)
            state = await self.jobs.append(loaded, events)
        except (ConcurrencyError, DomainError):  # a worker or another reconciler moved it
            return "moved"
        try:
            await self.publish(state)
        except Exception as exc:  # NATS down: queued in the new generation, due again later
            log.warning("republished job %s not sent: %s: %s", job_id, type(exc).__name__, exc)
            if isinstance(exc, LOST):  # NATS came back without the stream: put it back
                with contextlib.suppress(Exception):
                    await ensure_jobs_stream(self.js)
            return "unsent"
        return "republished"

    async def publish(self, state: job.Job) -> None:
        job_id = str(state.id)
        body = msgspec.json.encode(
            JobMessage(job_id=job_id, job_type=state.job_type, generation=state.generation)
        )
        await self.js.publish(
            job_subject(state.job_type),
            body,
            headers={"Nats-Msg-Id": job_msg_id(job_id, state.generation)},
            timeout=5.0,
        )

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.step()
            except Exception as exc:  # a daemon: log and try again next interval
                log.warning("reconciler pass failed: %s: %s", type(exc).__name__, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)
