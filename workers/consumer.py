"""The consume loop: JetStream deliveries in, job events out.

For one job type, ``JobWorker.run`` pulls from the type's durable consumer as
many messages as it has idle slots (``concurrency`` in all; never more, so a
long job never holds fetched-but-unstarted messages whose ack timers are
already running) and runs each in its own task, which:

1. reads the job's stream from the event store and folds it;
2. decides ``start(attempt)`` with attempt = JetStream's delivery count and
   appends it with the expected version. This append is the claim: of two
   deliveries of the same job (a duplicate publish, or a redelivery racing a
   slow worker) exactly one appends ``job.started`` for an attempt; the other
   gets a ConcurrencyError, re-reads, and then finds the attempt already
   running (``start`` answers ``()``), stale, or the job finished. It acks its
   copy and walks away without running the handler. The owner's copy stays
   unacked, so if the owner dies JetStream still redelivers it.
3. runs the handler, sending ``in_progress`` every ``ack_wait / 3`` so a long
   attempt is not redelivered under it;
4. records the outcome on the job stream with the expected version, then
   settles the message: completed → ack; Retryable with attempts left →
   ``retrying`` + ``nak(delay)``; the last attempt → ``dead_letter`` + term;
   Permanent → ``failed`` + term. Any other exception counts as Retryable.

The outcome is recorded before the message is settled: a crash in between
redelivers a finished job, and the next delivery finds it finished and acks.
If the outcome append conflicts, another delivery took the job over (this
attempt overran its ack wait); the late result is dropped and the message is
left to the delivery that owns it.

A worker that dies mid-attempt is redelivered after the ack wait (the
consumer's ``backoff``); after the last delivery JetStream sends the
MAX_DELIVERIES advisory, which ``DeadLetterListener`` turns into
``dead_letter`` from the stream it was captured in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

import msgspec
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from commands.pgstore import PgEventStore
from commands.store import ConcurrencyError
from domain import job
from domain.codec import EventCodec, default_codec
from domain.envelope import Actor, Metadata, RecordedEvent, StreamAppend
from domain.errors import DomainError
from workers.errors import Permanent
from workers.nats_wire import WirePublisher, delivery_count
from workers.streams import (
    DEAD_LETTER_CONSUMER,
    DEAD_LETTER_STREAM,
    JOBS_STREAM,
    LOST,
    JobMessage,
    JobTypeSettings,
    recreate,
)

log = logging.getLogger("byteor.jobs")

_CLOSED: list[Msg] = []  # _fetch's answer when the connection is closed for good
BATCH_WAIT_S = 0.02  # the longest a batch fetch waits when nothing is there after all

WORKER = Actor(kind="system", id="byteor-worker")
CLAIM_TRIES = 3

Outcome = Literal[
    "completed",
    "retrying",
    "failed",
    "dead_letter",
    "skipped",  # another delivery owns the job, or it is finished: acked, handler not run
    "abandoned",  # the job moved on while the handler ran: message left alone
    "rejected",  # not a job message, or no such job: terminated
]


class JobContext(msgspec.Struct, frozen=True, kw_only=True):
    """What a handler gets: the job as queued, and which attempt this is."""

    job_id: uuid.UUID
    job_type: str
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    generation: int
    tenant_id: uuid.UUID | None


Handler = Callable[[JobContext], Awaitable[dict[str, Any] | None]]
"""An idempotent async function; its return value (a small JSON object) is the result."""


class HandlerRegistry:
    """Which handler runs each job type; a worker process consumes the types registered."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, job_type: str, handler: Handler) -> None:
        if job_type in self._handlers:
            raise ValueError(f"a handler for {job_type!r} is registered already")
        self._handlers[job_type] = handler

    def handler(self, job_type: str) -> Callable[[Handler], Handler]:
        """Decorator form of ``register``."""

        def add(fn: Handler) -> Handler:
            self.register(job_type, fn)
            return fn

        return add

    def __getitem__(self, job_type: str) -> Handler:
        return self._handlers[job_type]

    def __contains__(self, job_type: object) -> bool:
        return job_type in self._handlers

    def items(self) -> list[tuple[str, Handler]]:
        return list(self._handlers.items())


class Loaded(msgspec.Struct, frozen=True, kw_only=True):
    state: job.Job | None
    first: RecordedEvent | None
    last: RecordedEvent | None

    def meta(self) -> Metadata:
        """Worker events keep the job's tenant and correlation and follow its last event."""
        assert self.first is not None and self.last is not None
        return Metadata(
            actor=WORKER,
            tenant_id=self.first.tenant_id,
            correlation_id=self.first.correlation_id,
            causation_id=self.last.event_id,
        )


class JobStore:
    """Reads and appends job streams through the write side's event store."""

    def __init__(self, store: PgEventStore, codec: EventCodec | None = None) -> None:
        self.store = store
        self.codec = codec or default_codec()

    async def load(self, job_id: uuid.UUID) -> Loaded:
        recorded = await self.store.read_stream(job.stream_id(job_id))
        state = job.fold(self.codec.decode_recorded(r) for r in recorded)
        return Loaded(
            state=state,
            first=recorded[0] if recorded else None,
            last=recorded[-1] if recorded else None,
        )

    def from_queued(self, job_id: uuid.UUID, queued: RecordedEvent | None) -> Loaded | None:
        """The job as its ``job.queued`` event alone makes it, if that is what ``queued`` is."""
        if (
            queued is None
            or queued.stream_id != job.stream_id(job_id)
            or queued.event_type != "job.queued"
            or queued.stream_version != 1
        ):
            return None
        state = job.fold([self.codec.decode_recorded(queued)])
        return Loaded(state=state, first=queued, last=queued)

    async def append(
        self, loaded: Loaded, events: tuple[job.JobEvent, ...], meta: Metadata | None = None
    ) -> job.Job:
        """Append after the version ``loaded`` was read at; ConcurrencyError if it moved."""
        state = loaded.state
        assert state is not None and loaded.first is not None
        await self.store.append(
            [
                StreamAppend(
                    stream_id=loaded.first.stream_id,  # as read: no UUID formatting
                    stream_type=job.STREAM_TYPE,
                    expected_version=state.version,
                    events=tuple(self.codec.encode(e) for e in events),
                )
            ],
            meta or loaded.meta(),
        )
        for event in events:
            state = job.evolve(state, event)
        return state


class JobWorker:
    """The consume loop for one job type."""

    def __init__(
        self,
        jobs: JobStore,
        js: JetStreamContext,
        settings: JobTypeSettings,
        handler: Handler,
        *,
        concurrency: int = 1,
        fetch_timeout: float = 1.0,
        heartbeat_s: float | None = None,
    ) -> None:
        self.jobs = jobs
        self.js = js
        self.settings = settings
        self.handler = handler
        self.concurrency = concurrency
        self.fetch_timeout = fetch_timeout
        self.heartbeat_s = heartbeat_s or settings.ack_wait_s / 3
        self.outcomes: dict[str, int] = {}
        self.wire = WirePublisher(js._nc)  # acks framed for less CPU (workers/nats_wire.py)

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch up to as many messages as there are idle slots; run each in a task.

        One fetch per batch instead of one per message per loop: concurrent
        ``fetch(1)`` calls on one subscription cost tens of milliseconds each
        (measured with ops/bench/jobs). Only idle slots are fetched for, so no
        message waits unstarted while its ack timer runs. nats-py's ``fetch(n)``
        waits for all ``n`` (up to its timeout) once the stream is empty, so a
        batch is only asked for while the last fetch found messages, with a
        short timeout; otherwise ``fetch(1)`` waits and returns on the first.
        """
        sub = await self.js.pull_subscribe_bind(durable=self.settings.durable, stream=JOBS_STREAM)
        slots = asyncio.Semaphore(self.concurrency)
        running: set[asyncio.Task[None]] = set()
        backlog = False
        try:
            while not stop.is_set():
                await slots.acquire()
                idle = 1
                while not slots.locked():  # and every other idle one, without waiting
                    await slots.acquire()
                    idle += 1
                if backlog and idle > 1:
                    # Whatever is there now, without lingering for a full batch.
                    msgs = await self._fetch(sub, idle, stop, BATCH_WAIT_S)
                else:  # wait for the next message, returning as soon as it is here
                    msgs = await self._fetch(sub, 1, stop, self.fetch_timeout)
                backlog = bool(msgs)
                for _ in range(idle - len(msgs)):
                    slots.release()
                if msgs is _CLOSED:
                    return
                for msg in msgs:
                    task = asyncio.create_task(self._run_one(msg, slots))
                    running.add(task)
                    task.add_done_callback(running.discard)
        finally:
            # Stopping: attempts under way finish. Cancelled (a dying worker):
            # they are abandoned unsettled, and JetStream redelivers them.
            if running:
                if not stop.is_set():
                    for task in running:
                        task.cancel()
                await asyncio.gather(*running, return_exceptions=True)
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _fetch(
        self,
        sub: JetStreamContext.PullSubscription,
        batch: int,
        stop: asyncio.Event,
        wait_s: float,
    ) -> list[Msg]:
        try:
            return await sub.fetch(batch, timeout=wait_s)
        except (NatsTimeout, TimeoutError):  # nats-py raises both kinds
            return []
        except ConnectionClosedError:
            return _CLOSED
        except Exception as exc:  # NATS reconnecting: back off, the messages wait
            log.warning(
                "fetch failed for %s: %s: %s", self.settings.job_type, type(exc).__name__, exc
            )
            if isinstance(exc, LOST):
                await recreate(self.js, [self.settings])
            await _sleep_or_stop(stop, 1.0)
            return []

    async def _run_one(self, msg: Msg, slots: asyncio.Semaphore) -> None:
        try:
            await self.process(msg)
        except Exception:  # store down etc.: unsettled, JetStream redelivers
            log.exception("job message not processed; it will be redelivered")
        finally:
            slots.release()

    async def process(self, msg: Msg) -> Outcome:
        outcome = await self._process(msg)
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        return outcome

    async def _process(self, msg: Msg) -> Outcome:
        attempt = delivery_count(msg)
        try:
            message = msgspec.json.decode(msg.data, type=JobMessage)
            job_id = uuid.UUID(message.job_id)
        except (msgspec.DecodeError, ValueError):
            log.error("not a job message on %s; terminated", msg.subject)
            await msg.term()
            return "rejected"

        claimed = await self._claim(msg, job_id, message.generation, attempt, message.queued)
        if isinstance(claimed, str):
            return claimed
        loaded, state = claimed

        result: dict[str, Any] | None = None
        error: BaseException | None = None
        heartbeat = _Heartbeat(msg, self.heartbeat_s)
        try:
            result = await self.handler(
                JobContext(
                    job_id=state.id,
                    job_type=state.job_type,
                    payload=state.payload,
                    attempt=attempt,
                    max_attempts=state.max_attempts,
                    generation=state.generation,
                    tenant_id=loaded.meta().tenant_id,
                )
            )
        except Exception as exc:
            error = exc
        finally:
            await heartbeat.stop()
        if error is None and result is not None and not isinstance(result, dict):
            error = Permanent(f"handler returned {type(result).__name__}, not a dict or None")
            result = None

        delay = self.settings.backoff.delay(attempt)
        decided: tuple[job.JobEvent, ...]
        if error is None:
            decided = job.complete(state, attempt, result)
        elif isinstance(error, Permanent):
            decided = job.fail_permanent(state, attempt, _error_class(error), str(error))
        else:
            decided = job.fail_transient(state, attempt, _error_class(error), str(error), delay)
        after = Loaded(state=state, first=loaded.first, last=loaded.last)
        try:
            await self.jobs.append(after, decided)
        except ConcurrencyError:
            log.warning("job %s moved on during attempt %d; result dropped", job_id, attempt)
            return "abandoned"

        match decided:
            case (job.JobCompleted(),):
                await self.wire.ack(msg)
                return "completed"
            case (job.JobRetryScheduled(next_delay_s=next_delay),):
                await msg.nak(delay=next_delay)
                return "retrying"
            case (job.JobFailed(),):
                await msg.term()
                return "failed"
            case _:
                await msg.term()
                return "dead_letter"

    async def _claim(
        self,
        msg: Msg,
        job_id: uuid.UUID,
        generation: int,
        attempt: int,
        queued: RecordedEvent | None = None,
    ) -> tuple[Loaded, job.Job] | Outcome:
        """Record ``job.started`` for this delivery, or say why it is not ours to run.

        The first try of a first delivery that carries its ``job.queued`` event
        folds that event instead of reading the stream (JobMessage says why this
        is safe); any conflict falls back to reading.
        """
        first = self.jobs.from_queued(job_id, queued) if attempt == 1 else None
        for _ in range(CLAIM_TRIES):
            loaded, first = first or await self.jobs.load(job_id), None
            state = loaded.state
            if state is None:
                log.error("job %s is not in the event store; message terminated", job_id)
                await msg.term()
                return "rejected"
            if state.generation != generation:  # a copy from before a requeue
                await self.wire.ack(msg)
                return "skipped"
            try:
                events = job.start(state, attempt)
            except DomainError:  # finished, or a stale attempt: nothing to do
                await self.wire.ack(msg)
                return "skipped"
            if not events:  # this attempt is running under another delivery
                await self.wire.ack(msg)
                return "skipped"
            try:
                started = await self.jobs.append(loaded, events)
            except ConcurrencyError:
                continue  # someone else moved the job: look again
            # The claimed state's version is the stream's version after job.started;
            # its last event is not re-read (causation stays the event before).
            return loaded, started
        log.warning("job %s kept moving while claiming attempt %d", job_id, attempt)
        return "abandoned"


class _Heartbeat:
    """Sends ``in_progress`` for ``msg`` every ``every_s`` until stopped.

    A timer rather than a task per attempt: most attempts end long before the
    first beat, and a timer costs a fraction of a task to start and cancel.
    """

    def __init__(self, msg: Msg, every_s: float) -> None:
        self.msg = msg
        self.every_s = every_s
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(every_s, self._due)
        self._sending: asyncio.Task[None] | None = None

    def _due(self) -> None:
        self._sending = self._loop.create_task(self._send())

    async def _send(self) -> None:
        try:
            await self.msg.in_progress()
        except Exception as exc:  # best effort; the next beat may get through
            log.warning("in-progress ack failed: %s", exc)
        if self._timer is not None:  # not stopped meanwhile
            self._timer = self._loop.call_later(self.every_s, self._due)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sending is not None and not self._sending.done():
            self._sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sending


class DeadLetterListener:
    """Turns captured MAX_DELIVERIES advisories into ``dead_letter`` on the job stream."""

    def __init__(self, jobs: JobStore, js: JetStreamContext, *, fetch_timeout: float = 1.0) -> None:
        self.jobs = jobs
        self.js = js
        self.fetch_timeout = fetch_timeout
        self.recorded = 0

    async def run(self, stop: asyncio.Event) -> None:
        sub = await self.js.pull_subscribe_bind(
            durable=DEAD_LETTER_CONSUMER, stream=DEAD_LETTER_STREAM
        )
        try:
            while not stop.is_set():
                try:
                    msgs = await sub.fetch(10, timeout=self.fetch_timeout)
                except (NatsTimeout, TimeoutError):  # nats-py raises both kinds
                    continue
                except ConnectionClosedError:
                    return
                except Exception as exc:
                    log.warning("dead-letter fetch failed: %s: %s", type(exc).__name__, exc)
                    if isinstance(exc, LOST):
                        await recreate(self.js, [])
                    await _sleep_or_stop(stop, 1.0)
                    continue
                for msg in msgs:
                    try:
                        await self.process(msg)
                    except Exception:
                        log.exception("advisory not processed; it will be redelivered")
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def process(self, msg: Msg) -> None:
        advisory = msgspec.json.decode(msg.data, type=_MaxDeliveries)
        if advisory.stream != JOBS_STREAM:
            await msg.ack()
            return
        try:
            raw = await self.js.get_msg(JOBS_STREAM, advisory.stream_seq)
            message = msgspec.json.decode(raw.data or b"", type=JobMessage)
            job_id = uuid.UUID(message.job_id)
        except (NotFoundError, msgspec.DecodeError, ValueError) as exc:
            log.error(
                "dead letter at %s seq %d unreadable: %s", JOBS_STREAM, advisory.stream_seq, exc
            )
            await msg.ack()
            return
        for _ in range(CLAIM_TRIES):
            loaded = await self.jobs.load(job_id)
            state = loaded.state
            if state is None or state.generation != message.generation:
                break
            try:
                events = job.dead_letter(
                    state,
                    advisory.deliveries,
                    "MaxDeliveriesExceeded",
                    f"no outcome recorded after {advisory.deliveries} deliveries "
                    f"(consumer {advisory.consumer})",
                )
            except DomainError:  # finished meanwhile: the outcome stands
                break
            if not events:
                break
            try:
                await self.jobs.append(loaded, events)
            except ConcurrencyError:
                continue
            self.recorded += 1
            log.warning("job %s dead-lettered from the MAX_DELIVERIES advisory", job_id)
            break
        await msg.ack()


class _MaxDeliveries(msgspec.Struct, kw_only=True):
    """The fields of ``io.nats.jetstream.advisory.v1.max_deliver`` we use."""

    stream: str
    consumer: str
    stream_seq: int
    deliveries: int


async def run_workers(
    jobs: JobStore,
    js: JetStreamContext,
    settings: Mapping[str, JobTypeSettings],
    handlers: HandlerRegistry | Mapping[str, Handler],
    stop: asyncio.Event,
    *,
    concurrency: int = 4,
) -> None:
    """Every registered handler's consume loop, plus the dead-letter listener, until ``stop``."""
    async with asyncio.TaskGroup() as group:
        for job_type, handler in handlers.items():
            worker = JobWorker(jobs, js, settings[job_type], handler, concurrency=concurrency)
            group.create_task(worker.run(stop))
        group.create_task(DeadLetterListener(jobs, js).run(stop))


def _error_class(exc: BaseException) -> str:
    return type(exc).__name__


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
