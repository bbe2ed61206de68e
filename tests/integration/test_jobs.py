"""Jobs end to end on real Postgres and NATS: enqueue through the event store,
the relay publishes to ``jobs.<type>``, the consume loop records every attempt.

Each test runs the relay (a projection runner) and the workers it needs in
this event loop; every job type has its own durable consumer, recreated per test.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import msgspec
import nats
import pytest
from nats.js import JetStreamContext

from commands.pgstore import PgEventStore
from domain.backoff import Backoff
from domain.codec import default_codec
from domain.envelope import Actor, Metadata, NewEvent, RecordedEvent, StreamAppend
from domain.job import Job
from projections.feed import PgFeed
from projections.runner import ProjectionRunner
from workers.consumer import (
    DeadLetterListener,
    Handler,
    HandlerRegistry,
    JobContext,
    JobStore,
    JobWorker,
    run_workers,
)
from workers.enqueue import enqueue, requeue
from workers.errors import Permanent, Retryable
from workers.relay import JetStreamPublisher, ensure_events_stream
from workers.streams import (
    DEAD_LETTER_STREAM,
    JOBS_STREAM,
    JobMessage,
    JobTypeSettings,
    ensure,
)

ORG = uuid.UUID("22222222-2222-4222-8222-222222222222")
FAST = Backoff(base_s=0.2, factor=2.0, cap_s=1.0)
TYPES = {
    s.job_type: s
    for s in (
        JobTypeSettings(job_type="noop", max_attempts=3, ack_wait_s=5.0, backoff=FAST),
        JobTypeSettings(job_type="flaky", max_attempts=3, ack_wait_s=5.0, backoff=FAST),
        JobTypeSettings(job_type="broken", max_attempts=3, ack_wait_s=5.0, backoff=FAST),
        JobTypeSettings(job_type="dup", max_attempts=3, ack_wait_s=5.0, backoff=FAST),
        JobTypeSettings(job_type="again", max_attempts=2, ack_wait_s=5.0, backoff=FAST),
        JobTypeSettings(job_type="hang", max_attempts=2, ack_wait_s=1.0, backoff=FAST),
        JobTypeSettings(job_type="slow", max_attempts=2, ack_wait_s=1.0, backoff=FAST),
    )
}
CODEC = default_codec()


def meta() -> Metadata:
    return Metadata(
        actor=Actor(kind="system", id="test"), tenant_id=ORG, correlation_id=uuid.uuid4()
    )


class Harness:
    def __init__(self, pool: asyncpg.Pool, js: JetStreamContext) -> None:
        self.store = PgEventStore(pool)
        self.jobs = JobStore(self.store)
        self.js = js
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def worker(
        self, job_type: str, handler: Handler, **kwargs: Any
    ) -> tuple[JobWorker, asyncio.Task[None]]:
        worker = JobWorker(
            self.jobs, self.js, TYPES[job_type], handler, fetch_timeout=0.5, **kwargs
        )
        task = asyncio.create_task(worker.run(self.stop))
        self.tasks.append(task)
        return worker, task

    def dead_letter_listener(self) -> DeadLetterListener:
        listener = DeadLetterListener(self.jobs, self.js, fetch_timeout=0.5)
        self.tasks.append(asyncio.create_task(listener.run(self.stop)))
        return listener

    async def enqueue(self, job_type: str, **kwargs: Any) -> uuid.UUID:
        max_attempts = kwargs.pop("max_attempts", TYPES[job_type].max_attempts)
        job_id, _ = await enqueue(
            self.store, meta(), job_type=job_type, max_attempts=max_attempts, **kwargs
        )
        return job_id

    async def wait_for(
        self, job_id: uuid.UUID, done: Callable[[Job], bool], within: float = 20.0
    ) -> Job:
        deadline = time.monotonic() + within
        while True:
            state = (await self.jobs.load(job_id)).state
            if state is not None and done(state):
                return state
            if time.monotonic() > deadline:
                pytest.fail(f"job {job_id} stuck at {state}")
            await asyncio.sleep(0.05)

    async def history(self, job_id: uuid.UUID) -> list[tuple[RecordedEvent, Any]]:
        recorded = await self.store.read_stream(f"job-{job_id}")
        return [(r, CODEC.decode_recorded(r)) for r in recorded]

    async def types(self, job_id: uuid.UUID) -> list[str]:
        return [r.event_type for r, _ in await self.history(job_id)]


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
async def harness(pool, database, js) -> AsyncIterator[Harness]:
    h = Harness(pool, js)
    relay = ProjectionRunner(
        pool, PgFeed(pool, listen_dsn=database), [JetStreamPublisher(js)], lease_dsn=database
    )
    relay_task = asyncio.create_task(relay.run(h.stop))
    yield h
    h.stop.set()
    for task in [*h.tasks, relay_task]:
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, 10)
    await relay.close()
    await h.store.notifier.close()


async def test_a_job_queued_with_its_domain_event_runs_once_and_completes(harness) -> None:
    seen: list[JobContext] = []

    async def handler(ctx: JobContext) -> dict[str, Any]:
        seen.append(ctx)
        return {"echo": ctx.payload["n"]}

    cause = StreamAppend(
        stream_id="thing-1",
        stream_type="thing",
        expected_version=0,
        events=(NewEvent(event_type="thing.happened", payload=b"{}"),),
    )
    job_id = await harness.enqueue("noop", payload={"n": 7}, also=(cause,))
    # one transaction: the domain event and job.queued share it
    (thing,) = await harness.store.read_stream("thing-1")
    (queued, _), *_ = await harness.history(job_id)
    assert thing.transaction_id == queued.transaction_id

    harness.worker("noop", handler)
    state = await harness.wait_for(job_id, lambda j: j.status == "completed")
    assert state.result == {"echo": 7}
    assert await harness.types(job_id) == ["job.queued", "job.started", "job.completed"]
    assert [(c.attempt, c.tenant_id, c.payload) for c in seen] == [(1, ORG, {"n": 7})]
    started, _ = (await harness.history(job_id))[1]
    assert (started.tenant_id, started.actor_kind, started.causation_id) == (
        ORG,
        "system",
        queued.event_id,
    )


async def test_a_retryable_error_retries_with_backoff_then_dead_letters(harness) -> None:
    async def handler(ctx: JobContext) -> None:
        raise Retryable(f"flaked on attempt {ctx.attempt}")

    job_id = await harness.enqueue("flaky")
    worker, _ = harness.worker("flaky", handler)
    state = await harness.wait_for(job_id, lambda j: j.status == "dead_letter")
    assert (state.attempt, state.last_error_class) == (3, "Retryable")
    history = await harness.history(job_id)
    assert [r.event_type for r, _ in history] == [
        "job.queued",
        "job.started",
        "job.retry_scheduled",
        "job.started",
        "job.retry_scheduled",
        "job.started",
        "job.dead_lettered",
    ]
    retries = [(r, e) for r, e in history if r.event_type == "job.retry_scheduled"]
    assert [(e.attempt, e.next_delay_s, e.error_message) for _, e in retries] == [
        (1, 0.2, "flaked on attempt 1"),
        (2, 0.4, "flaked on attempt 2"),
    ]
    # The next attempt starts no sooner than the delay (JetStream holds the nak)
    # and soon after: ±20% of it plus 1.5 s of slack for a loaded CI machine.
    starts = [r for r, _ in history if r.event_type == "job.started"]
    for (retry, event), started in zip(retries, starts[1:], strict=True):
        waited = (started.recorded_us - retry.recorded_us) / 1e6
        assert event.next_delay_s * 0.8 <= waited <= event.next_delay_s * 1.2 + 1.5
    assert worker.outcomes == {"retrying": 2, "dead_letter": 1}
    info = await harness.js.consumer_info(JOBS_STREAM, "jobs_flaky")
    assert info.num_ack_pending == 0


async def test_a_permanent_error_fails_the_job_after_one_attempt(harness) -> None:
    class BadSpec(Permanent):
        pass

    async def handler(ctx: JobContext) -> None:
        raise BadSpec("spec 3 does not parse")

    job_id = await harness.enqueue("broken")
    harness.worker("broken", handler)
    state = await harness.wait_for(job_id, lambda j: j.status == "failed")
    assert (state.attempt, state.last_error_class, state.last_error_message) == (
        1,
        "BadSpec",
        "spec 3 does not parse",
    )
    assert await harness.types(job_id) == ["job.queued", "job.started", "job.failed"]


async def test_an_unexpected_exception_counts_as_retryable(harness) -> None:
    calls: list[int] = []

    async def handler(ctx: JobContext) -> None:
        calls.append(ctx.attempt)
        if ctx.attempt == 1:
            raise KeyError("boom")

    job_id = await harness.enqueue("noop")
    harness.worker("noop", handler)
    await harness.wait_for(job_id, lambda j: j.status == "completed")
    assert calls == [1, 2]
    history = await harness.history(job_id)
    assert [e.error_class for r, e in history if r.event_type == "job.retry_scheduled"] == [
        "KeyError"
    ]


async def test_a_duplicate_delivery_has_its_effect_once(harness, pool, database) -> None:
    admin = await asyncpg.connect(database)
    try:
        await admin.execute(
            "CREATE TABLE job_effects (job_id uuid PRIMARY KEY, attempt int NOT NULL);"
            "GRANT SELECT, INSERT ON job_effects TO byteor_app"
        )
    finally:
        await admin.close()
    calls: list[int] = []

    async def handler(ctx: JobContext) -> None:
        calls.append(ctx.attempt)
        await asyncio.sleep(0.5)  # both copies are in flight together
        await pool.execute(
            "INSERT INTO job_effects (job_id, attempt) VALUES ($1, $2)", ctx.job_id, ctx.attempt
        )

    job_id = await harness.enqueue("dup")
    # A second copy under another Nats-Msg-Id: JetStream cannot de-duplicate it.
    await harness.js.publish(
        "jobs.dup",
        msgspec.json.encode(JobMessage(job_id=str(job_id), job_type="dup")),
        headers={"Nats-Msg-Id": f"copy-{job_id}"},
    )
    worker, _ = harness.worker("dup", handler, concurrency=2)
    await harness.wait_for(job_id, lambda j: j.status == "completed")
    for _ in range(200):  # the second copy settles soon after
        if sum(worker.outcomes.values()) >= 2:
            break
        await asyncio.sleep(0.05)
    assert worker.outcomes == {"completed": 1, "skipped": 1}
    assert calls == [1]
    assert await pool.fetchval("SELECT count(*) FROM job_effects") == 1
    assert await harness.types(job_id) == ["job.queued", "job.started", "job.completed"]
    info = await harness.js.consumer_info(JOBS_STREAM, "jobs_dup")
    assert (info.num_ack_pending, info.num_pending) == (0, 0)


async def test_requeue_from_dead_letter_runs_the_job_again(harness) -> None:
    broken = True
    calls: list[tuple[int, int]] = []

    async def handler(ctx: JobContext) -> dict[str, Any]:
        calls.append((ctx.generation, ctx.attempt))
        if broken:
            raise Retryable("dependency down")
        return {"ok": True}

    job_id = await harness.enqueue("again")
    harness.worker("again", handler)
    await harness.wait_for(job_id, lambda j: j.status == "dead_letter")
    broken = False
    requeued = await requeue(harness.jobs, job_id, by="user:operator")
    assert (requeued.status, requeued.generation) == ("queued", 1)
    state = await harness.wait_for(job_id, lambda j: j.status == "completed")
    assert (state.generation, state.attempt, state.result) == (1, 1, {"ok": True})
    assert calls == [(0, 1), (0, 2), (1, 1)]
    assert (await harness.types(job_id))[-3:] == ["job.requeued", "job.started", "job.completed"]


async def test_a_worker_dying_on_every_delivery_ends_in_dead_letter_via_the_advisory(
    harness,
) -> None:
    """Workers abandon the message (cancelled mid-handler: no heartbeat, no ack);
    after the last delivery the captured advisory records the dead letter."""
    started = asyncio.Event()

    async def handler(ctx: JobContext) -> None:
        started.set()
        await asyncio.Event().wait()  # hangs until its worker dies

    job_id = await harness.enqueue("hang")
    for attempt in (1, 2):
        started.clear()
        _, task = harness.worker("hang", handler)
        await asyncio.wait_for(started.wait(), 15)
        await harness.wait_for(job_id, lambda j, n=attempt: j.attempt == n)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # A waiting pull makes the server notice the spent budget and send the advisory.
    harness.worker("hang", handler)
    listener = harness.dead_letter_listener()
    state = await harness.wait_for(job_id, lambda j: j.status == "dead_letter")
    assert (state.attempt, state.last_error_class) == (2, "MaxDeliveriesExceeded")
    assert listener.recorded == 1
    assert await harness.types(job_id) == [
        "job.queued",
        "job.started",
        "job.started",
        "job.dead_lettered",
    ]


async def test_run_workers_consumes_every_registered_type(harness) -> None:
    registry = HandlerRegistry()

    @registry.handler("noop")
    async def noop(ctx: JobContext) -> None:
        return None

    @registry.handler("broken")
    async def not_a_dict(ctx: JobContext) -> Any:
        return "oops"  # a handler bug: recorded as a permanent failure

    first = await harness.enqueue("noop")
    second = await harness.enqueue("broken")
    harness.tasks.append(
        asyncio.create_task(
            run_workers(harness.jobs, harness.js, TYPES, registry, harness.stop, concurrency=2)
        )
    )
    assert (await harness.wait_for(first, lambda j: j.status == "completed")).result is None
    failed = await harness.wait_for(second, lambda j: j.status == "failed")
    assert failed.last_error_class == "Permanent"
    with pytest.raises(ValueError):
        registry.register("noop", noop)


async def test_a_job_longer_than_its_ack_wait_is_kept_alive_and_runs_once(harness) -> None:
    """in_progress every ack_wait / 3 keeps JetStream from redelivering a busy attempt."""
    runs = 0

    async def handler(ctx: JobContext) -> dict[str, Any]:
        nonlocal runs
        runs += 1
        await asyncio.sleep(2.6)  # more than twice the 1 s ack wait
        return {}

    job_id = await harness.enqueue("slow")
    worker, _ = harness.worker("slow", handler, concurrency=2)
    await harness.wait_for(job_id, lambda j: j.status == "completed")
    await asyncio.sleep(1.2)  # a redelivery, had there been one, would be here by now
    assert runs == 1
    assert await harness.types(job_id) == ["job.queued", "job.started", "job.completed"]
    assert worker.outcomes == {"completed": 1}
