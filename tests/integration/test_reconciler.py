"""The reconciler: jobs whose NATS message was lost still run, each effect once.

Postgres is the source of truth; these tests purge the JOBS stream under
queued and retrying jobs and check that the reconciler (with the job index
projection feeding it) gets every job done. The first tests are plain-value
checks of the overdue rule and the ``republish`` decision (no services).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import nats
import pytest
from nats.js import JetStreamContext

from commands.pgstore import PgEventStore
from domain import job
from domain.backoff import Backoff
from domain.envelope import Actor, Metadata
from domain.errors import NotFound
from projections.feed import PgFeed
from projections.jobs import JobIndexProjection, due_at, overdue
from projections.runner import ProjectionRunner, load_checkpoint
from workers.consumer import JobContext, JobStore, JobWorker
from workers.enqueue import enqueue
from workers.errors import Retryable
from workers.reconciler import Reconciler
from workers.relay import JetStreamPublisher, ensure_events_stream
from workers.streams import DEAD_LETTER_STREAM, JOBS_STREAM, JobTypeSettings, ensure

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
JOB = uuid.UUID(int=9)
ORG = uuid.UUID("33333333-3333-4333-8333-333333333333")
TYPES = {
    s.job_type: s
    for s in (
        JobTypeSettings(job_type="effect", max_attempts=3, ack_wait_s=5.0, max_ack_pending=256),
        # a retry 60 s out: the test purges its message while it waits
        JobTypeSettings(
            job_type="later", max_attempts=3, ack_wait_s=5.0, backoff=Backoff(base_s=60.0)
        ),
    )
}


# --- the overdue rule and the decision, with plain values ---------------------------


def test_a_queued_job_is_due_when_queued_or_at_its_not_before() -> None:
    assert due_at("queued", T0) == T0
    assert due_at("queued", T0, not_before=T0 + timedelta(minutes=5)) == T0 + timedelta(minutes=5)
    assert due_at("queued", T0, not_before=T0 - timedelta(minutes=5)) == T0


def test_a_retrying_job_is_due_when_its_delay_ends_and_others_never() -> None:
    assert due_at("retrying", T0, next_delay_s=30.0) == T0 + timedelta(seconds=30)
    for status in ("running", "completed", "failed", "dead_letter"):
        assert due_at(status, T0) is None


def test_overdue_means_due_longer_ago_than_the_grace() -> None:
    assert not overdue(T0, T0 + timedelta(seconds=59), grace_s=60.0)
    assert overdue(T0, T0 + timedelta(seconds=60), grace_s=60.0)
    assert overdue(T0, T0, grace_s=0.0)
    assert not overdue(None, T0 + timedelta(days=1), grace_s=0.0)


def _then(state: job.Job | None, events: tuple[job.JobEvent, ...]) -> job.Job:
    for event in events:
        state = job.evolve(state, event)
    assert state is not None
    return state


def test_republish_sends_a_queued_or_retrying_job_as_a_new_generation() -> None:
    queued = _then(None, job.queue(None, job_id=JOB, job_type="effect", max_attempts=3))
    again = _then(queued, job.republish(queued, "reconciler"))
    assert (again.status, again.generation, again.attempt, again.version) == ("queued", 1, 0, 2)
    assert job.start(again, 1) == (job.JobStarted(attempt=1),)

    running = _then(again, job.start(again, 1))
    retrying = _then(running, job.fail_transient(running, 1, "Retryable", "x", 5.0))
    (event,) = job.republish(retrying, "reconciler")
    assert event == job.JobRepublished(
        by="reconciler", job_type="effect", generation=2, was="retrying"
    )
    after = _then(retrying, (event,))
    assert (after.status, after.generation, after.attempt, after.next_delay_s) == (
        "queued",
        2,
        0,
        None,
    )
    with pytest.raises(job.IllegalJobTransition):
        job.republish(running, "reconciler")
    done = _then(running, job.complete(running, 1))
    with pytest.raises(job.JobFinished):
        job.republish(done, "reconciler")
    with pytest.raises(NotFound):
        job.republish(None, "reconciler")


# --- with Postgres and NATS ------------------------------------------------------------


def meta() -> Metadata:
    return Metadata(
        actor=Actor(kind="system", id="test"), tenant_id=ORG, correlation_id=uuid.uuid4()
    )


@pytest.fixture
async def js(nats_server) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_server.url)
    jsc = nc.jetstream()
    for name in (JOBS_STREAM, DEAD_LETTER_STREAM):
        with contextlib.suppress(Exception):
            await jsc.delete_stream(name)
    await ensure(jsc, TYPES.values())
    await ensure_events_stream(jsc)
    yield jsc
    await nc.close()


@pytest.fixture
async def effects(database: str) -> None:
    """The handlers' effect: one row per job, a duplicate is a unique violation."""
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(
            """
            CREATE TABLE reconcile_effects (job_id uuid PRIMARY KEY, generation integer NOT NULL);
            GRANT SELECT, INSERT ON reconcile_effects TO byteor_app;
            """
        )
    finally:
        await conn.close()


class Stack:
    """Relay, job index projection, reconcilers and workers in this event loop."""

    def __init__(self, pool: asyncpg.Pool, database: str, js: JetStreamContext) -> None:
        self.pool = pool
        self.database = database
        self.js = js
        self.store = PgEventStore(pool)
        self.jobs = JobStore(self.store)
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.runners: list[ProjectionRunner] = []

    def runner(self, projection: Any) -> ProjectionRunner:
        runner = ProjectionRunner(
            self.pool,
            PgFeed(self.pool, listen_dsn=self.database),
            [projection],
            lease_dsn=self.database,
            idle_wait=0.2,
        )
        self.runners.append(runner)
        self.tasks.append(asyncio.create_task(runner.run(self.stop)))
        return runner

    def start(self, coro: Any) -> None:
        self.tasks.append(asyncio.create_task(coro))

    async def caught_up(self, name: str, within: float = 20.0) -> None:
        head = await PgFeed(self.pool).head()
        deadline = time.monotonic() + within
        while await load_checkpoint(self.pool, name) < head:
            assert time.monotonic() < deadline, f"{name} did not catch up"
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        self.stop.set()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, 10)
        for runner in self.runners:
            await runner.close()
        await self.store.notifier.close()


@pytest.fixture
async def stack(pool, database, js, effects) -> AsyncIterator[Stack]:
    s = Stack(pool, database, js)
    yield s
    await s.close()


async def _stream_messages(js: JetStreamContext) -> int:
    info = await js.stream_info(JOBS_STREAM)
    return info.state.messages


async def _wait_until(check: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


async def test_purging_the_job_stream_under_500_queued_jobs_loses_none(stack: Stack) -> None:
    started = time.monotonic()
    calls: list[tuple[uuid.UUID, int]] = []

    async def handler(ctx: JobContext) -> None:
        calls.append((ctx.job_id, ctx.generation))
        await stack.pool.execute(
            "INSERT INTO reconcile_effects (job_id, generation) VALUES ($1, $2)",
            ctx.job_id,
            ctx.generation,
        )

    async def enqueue_one(_: int) -> uuid.UUID:
        job_id, _ = await enqueue(stack.store, meta(), job_type="effect", max_attempts=3)
        return job_id

    ids: list[uuid.UUID] = []
    for chunk in range(10):
        ids += await asyncio.gather(*(enqueue_one(i) for i in range(50 * chunk, 50 * chunk + 50)))
    queued_by = time.monotonic()

    # The relay publishes all 500, then the stream is purged before any worker pulls.
    stack.runner(JetStreamPublisher(stack.js))
    await stack.caught_up("relay")
    assert await _stream_messages(stack.js) == 500
    await stack.js.purge_stream(JOBS_STREAM)
    assert await _stream_messages(stack.js) == 0

    # Job index, two reconcilers (safe together) and the workers.
    stack.runner(JobIndexProjection())
    grace = 1.0
    reconcilers = [
        Reconciler(stack.pool, stack.jobs, stack.js, grace_s=grace, interval_s=0.3)
        for _ in range(2)
    ]
    await asyncio.sleep(max(0.0, queued_by + grace - time.monotonic()))
    for reconciler in reconcilers:
        stack.start(reconciler.run(stack.stop))
    worker = JobWorker(stack.jobs, stack.js, TYPES["effect"], handler, concurrency=16)
    stack.start(worker.run(stack.stop))

    async def all_completed() -> bool:
        done = await stack.pool.fetchval(
            "SELECT count(*) FROM job_index WHERE status = 'completed'"
        )
        return bool(done == 500)

    await _wait_until(all_completed, 45.0, "not every job completed")

    # Each effect once, each job completed once, by the event store.
    assert await stack.pool.fetchval("SELECT count(*) FROM reconcile_effects") == 500
    assert sorted(job_id for job_id, _ in calls) == sorted(ids)
    republished = 0
    for job_id in ids:
        history = [r.event_type for r in await stack.store.read_stream(job.stream_id(job_id))]
        assert history[0] == "job.queued"
        assert history[-2:] == ["job.started", "job.completed"]
        assert history.count("job.completed") == history.count("job.started") == 1
        republished += history.count("job.republished")
        assert history.count("job.republished") >= 1
    assert sum(r.republished for r in reconcilers) == republished
    # Nothing overdue is left behind, and a further pass does nothing.
    assert await reconcilers[0].step(datetime.now(UTC) + timedelta(hours=1)) == 0
    print(f"500 jobs after a purge: {time.monotonic() - started:.1f}s, {republished} republished")


async def test_a_retrying_job_whose_message_was_purged_runs_again_as_a_new_generation(
    stack: Stack,
) -> None:
    calls: list[tuple[int, int]] = []

    async def handler(ctx: JobContext) -> None:
        calls.append((ctx.generation, ctx.attempt))
        if ctx.generation == 0:
            raise Retryable("first try fails")
        await stack.pool.execute(
            "INSERT INTO reconcile_effects (job_id, generation) VALUES ($1, $2)",
            ctx.job_id,
            ctx.generation,
        )

    stack.runner(JetStreamPublisher(stack.js))
    stack.runner(JobIndexProjection())
    worker = JobWorker(stack.jobs, stack.js, TYPES["later"], handler, fetch_timeout=0.5)
    stack.start(worker.run(stack.stop))
    job_id, _ = await enqueue(stack.store, meta(), job_type="later", max_attempts=3)

    async def retrying() -> bool:
        state = (await stack.jobs.load(job_id)).state
        return state is not None and state.status == "retrying"

    await _wait_until(retrying, 10.0, "the first attempt did not fail")
    await stack.js.purge_stream(JOBS_STREAM)  # the nak'd message (60 s out) is gone
    await stack.caught_up(JobIndexProjection.name)

    reconciler = Reconciler(stack.pool, stack.jobs, stack.js, grace_s=5.0)
    assert await reconciler.step() == 0  # not due: the retry is a minute out
    assert await reconciler.step(datetime.now(UTC) + timedelta(seconds=66)) == 1

    async def completed() -> bool:
        state = (await stack.jobs.load(job_id)).state
        return state is not None and state.status == "completed"

    await _wait_until(completed, 10.0, "the republished job did not complete")
    assert calls == [(0, 1), (1, 1)]
    history = [r.event_type for r in await stack.store.read_stream(job.stream_id(job_id))]
    assert history == [
        "job.queued",
        "job.started",
        "job.retry_scheduled",
        "job.republished",
        "job.started",
        "job.completed",
    ]
    assert await stack.pool.fetchval("SELECT generation FROM reconcile_effects") == 1


async def test_a_reconciler_leaves_alone_job_types_it_was_not_given(stack: Stack) -> None:
    """A job nobody consumes is not republished every grace period for ever."""
    stack.runner(JobIndexProjection())
    job_id, _ = await enqueue(stack.store, meta(), job_type="later", max_attempts=3)
    await stack.caught_up(JobIndexProjection.name)
    later = datetime.now(UTC) + timedelta(seconds=600)

    others_only = Reconciler(stack.pool, stack.jobs, stack.js, grace_s=5.0, job_types={"other"})
    assert await others_only.step(later) == 0
    versions = [r.event_type for r in await stack.store.read_stream(job.stream_id(job_id))]
    assert versions == ["job.queued"]

    everything = Reconciler(stack.pool, stack.jobs, stack.js, grace_s=5.0)
    assert await everything.step(later) == 1
