"""Job: one unit of background work, its attempts and how it ended.

State machine (stream ``job-<id>``; ``n`` is the attempt, i.e. JetStream's
delivery count within the current generation)::

    (none) ──queue──► queued ──start(1)──► running ──complete(n)──► completed
                                   ▲          │
                                   │          ├─fail_transient(n), n < max ──► retrying
                                   │          │                                  │
                                   │          │      start(m > n) ◄──────────────┘
                                   │          │
                                   │          ├─fail_transient(n), n = max ──► dead_letter
                                   │          ├─fail_permanent(n) ──────────► failed
                                   │          └─start(m > n) ──► running (the worker of
                                   │                             attempt n died; redelivered)
                                   │
                                   ├──requeue (generation + 1, attempt 0)── dead_letter | failed
                                   └──republish (generation + 1, attempt 0)── queued | retrying

    dead_letter(n) from queued | running | retrying (the MAX_DELIVERIES advisory:
    every delivery was spent without an outcome being recorded).

Idempotency, because JetStream redelivers and duplicates are normal:

- ``start(n)`` while already running attempt ``n`` → ``()`` (another delivery owns it);
- ``complete`` on a completed job, ``dead_letter`` on a dead-lettered one → ``()``;
- ``queue`` of a job that exists → ``()`` (periodic jobs use deterministic ids);
- ``start(n)`` with ``n`` at or below an attempt already recorded → StaleAttempt;
- anything on completed / failed / dead_letter other than the above → JobFinished;
- other illegal moves → IllegalJobTransition.

``republish`` is the reconciler's: a ``queued`` or ``retrying`` job whose message
was lost in NATS (a purged stream, unsynced writes) goes out again as a new
generation, because attempt numbers restart at 1 on a new message (decision
0004). The new generation gets a fresh attempt budget, as a requeue does.

Every transition is an event, so the audit log shows each attempt, its error
class and message and the delay chosen before the next one.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final, Literal, assert_never

import msgspec
from msgspec.structs import replace

from domain.codec import CODEC, Event
from domain.envelope import StreamAppend
from domain.errors import Conflict, InvalidHistory, InvalidInput, NotFound

STREAM_TYPE: Final = "job"
MAX_PAYLOAD_BYTES: Final = 64 * 1024
MAX_ERROR_MESSAGE: Final = 2000
_JOB_TYPE: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")

JobStatus = Literal["queued", "running", "completed", "failed", "retrying", "dead_letter"]
STATUSES: Final[tuple[JobStatus, ...]] = (
    "queued",
    "running",
    "completed",
    "failed",
    "retrying",
    "dead_letter",
)
FINISHED: Final[frozenset[JobStatus]] = frozenset({"completed", "failed", "dead_letter"})


def stream_id(job_id: uuid.UUID) -> str:
    return f"{STREAM_TYPE}-{job_id}"


# --- state -----------------------------------------------------------------------


class Job(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    job_type: str
    payload: dict[str, Any]
    max_attempts: int
    not_before: datetime | None
    status: JobStatus
    attempt: int  # the latest attempt started in this generation (0: none yet)
    generation: int  # 0 when first queued; +1 per requeue
    last_error_class: str | None
    last_error_message: str | None
    next_delay_s: float | None
    result: dict[str, Any] | None
    version: int


# --- events ----------------------------------------------------------------------


class JobQueued(Event, tag="job.queued", frozen=True, kw_only=True):
    job_id: uuid.UUID
    job_type: str
    payload: dict[str, Any] = {}
    max_attempts: int
    not_before: datetime | None = None


class JobStarted(Event, tag="job.started", frozen=True, kw_only=True):
    attempt: int


class JobCompleted(Event, tag="job.completed", frozen=True, kw_only=True):
    attempt: int
    result: dict[str, Any] | None = None


class JobRetryScheduled(Event, tag="job.retry_scheduled", frozen=True, kw_only=True):
    attempt: int
    error_class: str
    error_message: str
    next_delay_s: float


class JobFailed(Event, tag="job.failed", frozen=True, kw_only=True):
    attempt: int
    error_class: str
    error_message: str


class JobDeadLettered(Event, tag="job.dead_lettered", frozen=True, kw_only=True):
    attempt: int
    error_class: str
    error_message: str


class JobRequeued(Event, tag="job.requeued", frozen=True, kw_only=True):
    """``job_type`` and ``generation`` let the relay republish without reading the stream."""

    by: str
    job_type: str = ""
    generation: int = 1


class JobRepublished(Event, tag="job.republished", frozen=True, kw_only=True):
    """The reconciler sent a ``queued``/``retrying`` job again, as generation ``generation``."""

    by: str
    job_type: str
    generation: int
    was: JobStatus


JobEvent = (
    JobQueued
    | JobStarted
    | JobCompleted
    | JobRetryScheduled
    | JobFailed
    | JobDeadLettered
    | JobRequeued
    | JobRepublished
)
EVENTS: Final = (
    JobQueued,
    JobStarted,
    JobCompleted,
    JobRetryScheduled,
    JobFailed,
    JobDeadLettered,
    JobRequeued,
    JobRepublished,
)
CODEC.register(*EVENTS)


# --- errors ----------------------------------------------------------------------


class IllegalJobTransition(Conflict):
    """The job's status does not allow this action."""

    code = "job_illegal_transition"

    def __init__(self, job: Job, action: str, attempt: int | None = None) -> None:
        super().__init__(
            f"cannot {action} a {job.status} job",
            context={
                "job_id": str(job.id),
                "status": job.status,
                "action": action,
                "attempt": attempt,
                "current_attempt": job.attempt,
            },
        )
        self.job_id = job.id
        self.job_status = job.status
        self.action = action
        self.attempt = attempt


class JobFinished(IllegalJobTransition):
    """The job is completed, failed or dead-lettered: a late delivery has nothing to do."""

    code = "job_finished"


class StaleAttempt(IllegalJobTransition):
    """The attempt is at or below one already recorded (a duplicate or late delivery)."""

    code = "job_stale_attempt"


# --- evolve ----------------------------------------------------------------------


def evolve(state: Job | None, event: JobEvent) -> Job:
    if isinstance(event, JobQueued):
        if state is not None:
            raise InvalidHistory("job queued twice", context={"job_id": str(state.id)})
        return Job(
            id=event.job_id,
            job_type=event.job_type,
            payload=dict(event.payload),
            max_attempts=event.max_attempts,
            not_before=event.not_before,
            status="queued",
            attempt=0,
            generation=0,
            last_error_class=None,
            last_error_message=None,
            next_delay_s=None,
            result=None,
            version=1,
        )
    if state is None:
        raise InvalidHistory(f"{type(event).__name__} before job.queued")
    version = state.version + 1
    match event:
        case JobStarted(attempt=attempt):
            return replace(
                state, status="running", attempt=attempt, next_delay_s=None, version=version
            )
        case JobCompleted(result=result):
            return replace(state, status="completed", result=result, version=version)
        case JobRetryScheduled(error_class=cls, error_message=message, next_delay_s=delay):
            return replace(
                state,
                status="retrying",
                last_error_class=cls,
                last_error_message=message,
                next_delay_s=delay,
                version=version,
            )
        case JobFailed(error_class=cls, error_message=message):
            return replace(
                state,
                status="failed",
                last_error_class=cls,
                last_error_message=message,
                version=version,
            )
        case JobDeadLettered(attempt=attempt, error_class=cls, error_message=message):
            return replace(
                state,
                status="dead_letter",
                attempt=max(attempt, state.attempt),
                last_error_class=cls,
                last_error_message=message,
                version=version,
            )
        case JobRequeued(generation=generation) | JobRepublished(generation=generation):
            return replace(
                state,
                status="queued",
                attempt=0,
                generation=generation,
                next_delay_s=None,
                result=None,
                version=version,
            )
        case _:
            assert_never(event)


def fold(events: Iterable[Event]) -> Job | None:
    state: Job | None = None
    for event in events:
        if not isinstance(event, JobEvent):
            raise InvalidHistory(f"{type(event).__name__} is not a job event")
        state = evolve(state, event)
    return state


# --- decisions -------------------------------------------------------------------


def queue(
    state: Job | None,
    *,
    job_id: uuid.UUID,
    job_type: str,
    payload: dict[str, Any] | None = None,
    max_attempts: int,
    not_before: datetime | None = None,
) -> tuple[JobEvent, ...]:
    """A new job; queueing a job id that exists already is a no-op."""
    if state is not None:
        return ()
    return (_queued(job_id, job_type, payload or {}, max_attempts, not_before),)


def start(state: Job | None, attempt: int) -> tuple[JobEvent, ...]:
    job = _require(state)
    if job.status in FINISHED:
        raise JobFinished(job, "start", attempt)
    if attempt < 1:
        raise InvalidInput("attempt numbers start at 1", context={"attempt": attempt})
    if job.status == "running" and attempt == job.attempt:
        return ()
    if attempt <= job.attempt:
        raise StaleAttempt(job, "start", attempt)
    return (JobStarted(attempt=attempt),)


def complete(
    state: Job | None, attempt: int, result: dict[str, Any] | None = None
) -> tuple[JobEvent, ...]:
    job = _require(state)
    if job.status == "completed":
        return ()
    _require_running(job, "complete", attempt)
    return (JobCompleted(attempt=attempt, result=result),)


def fail_transient(
    state: Job | None, attempt: int, error_class: str, error_message: str, delay_s: float
) -> tuple[JobEvent, ...]:
    """A retryable failure: ``retrying`` with attempts left, else ``dead_letter``."""
    job = _require(state)
    _require_running(job, "fail", attempt)
    message = _clip(error_message)
    if attempt >= job.max_attempts:
        return (JobDeadLettered(attempt=attempt, error_class=error_class, error_message=message),)
    if delay_s < 0:
        raise InvalidInput("a retry delay cannot be negative", context={"delay_s": delay_s})
    return (
        JobRetryScheduled(
            attempt=attempt,
            error_class=error_class,
            error_message=message,
            next_delay_s=delay_s,
        ),
    )


def fail_permanent(
    state: Job | None, attempt: int, error_class: str, error_message: str
) -> tuple[JobEvent, ...]:
    job = _require(state)
    _require_running(job, "fail", attempt)
    return (
        JobFailed(attempt=attempt, error_class=error_class, error_message=_clip(error_message)),
    )


def dead_letter(
    state: Job | None, attempt: int, error_class: str, error_message: str
) -> tuple[JobEvent, ...]:
    """The delivery budget is spent without a recorded outcome (MAX_DELIVERIES advisory)."""
    job = _require(state)
    if job.status == "dead_letter":
        return ()
    if job.status in FINISHED:
        raise JobFinished(job, "dead_letter", attempt)
    return (
        JobDeadLettered(
            attempt=max(attempt, job.attempt),
            error_class=error_class,
            error_message=_clip(error_message),
        ),
    )


def requeue(state: Job | None, by: str) -> tuple[JobEvent, ...]:
    """An operator runs a dead-lettered or failed job again, as a new generation."""
    job = _require(state)
    if job.status not in ("dead_letter", "failed"):
        raise IllegalJobTransition(job, "requeue")
    return (JobRequeued(by=by, job_type=job.job_type, generation=job.generation + 1),)


def requeue_append(state: Job | None, version: int, by: str) -> tuple[Job, StreamAppend]:
    """``requeue`` as an append at the ``version`` the state was read at, with the new state.

    Shared by the API's retry route and the operator CLI (``byteor-cloud jobs retry``).
    """
    events = requeue(state, by)
    job = _require(state)
    for event in events:
        job = evolve(job, event)
    append = StreamAppend(
        stream_id=stream_id(job.id),
        stream_type=STREAM_TYPE,
        expected_version=version,
        events=tuple(CODEC.encode(e) for e in events),
    )
    return job, append


REPUBLISHABLE: Final[frozenset[JobStatus]] = frozenset({"queued", "retrying"})


def republish(state: Job | None, by: str) -> tuple[JobEvent, ...]:
    """Send a ``queued`` or ``retrying`` job again as a new generation (the reconciler).

    The caller appends this with the version it read: of several reconcilers
    (or a worker starting the job meanwhile) exactly one moves the stream.
    """
    job = _require(state)
    if job.status in FINISHED:
        raise JobFinished(job, "republish")
    if job.status not in REPUBLISHABLE:
        raise IllegalJobTransition(job, "republish")
    return (
        JobRepublished(by=by, job_type=job.job_type, generation=job.generation + 1, was=job.status),
    )


def queued_append(
    *,
    job_id: uuid.UUID,
    job_type: str,
    payload: dict[str, Any] | None = None,
    max_attempts: int,
    not_before: datetime | None = None,
) -> StreamAppend:
    """The new job's stream, for the write side to include in its own append.

    Appending it with the domain event that caused it makes enqueueing part of
    that transaction (no dual write); the relay publishes it to ``jobs.<type>``.
    """
    event = _queued(job_id, job_type, payload or {}, max_attempts, not_before)
    return StreamAppend(
        stream_id=stream_id(job_id),
        stream_type=STREAM_TYPE,
        expected_version=0,
        events=(CODEC.encode(event),),
    )


# --- helpers ---------------------------------------------------------------------


def _queued(
    job_id: uuid.UUID,
    job_type: str,
    payload: dict[str, Any],
    max_attempts: int,
    not_before: datetime | None,
) -> JobQueued:
    if max_attempts < 1:
        raise InvalidInput(
            "a job needs at least one attempt", context={"max_attempts": max_attempts}
        )
    if not _JOB_TYPE.fullmatch(job_type):
        raise InvalidInput("job types are lower_snake_case", context={"job_type": job_type})
    size = len(msgspec.json.encode(payload))
    if size > MAX_PAYLOAD_BYTES:
        raise InvalidInput(
            "job payload too large", context={"bytes": size, "limit": MAX_PAYLOAD_BYTES}
        )
    return JobQueued(
        job_id=job_id,
        job_type=job_type,
        payload=payload,
        max_attempts=max_attempts,
        not_before=not_before,
    )


def _require(state: Job | None) -> Job:
    if state is None:
        raise NotFound("job not found", code="job_not_found")
    return state


def _require_running(job: Job, action: str, attempt: int) -> None:
    if job.status in FINISHED:
        raise JobFinished(job, action, attempt)
    if job.status != "running":
        raise IllegalJobTransition(job, action, attempt)
    if attempt != job.attempt:
        raise StaleAttempt(job, action, attempt)


def _clip(message: str) -> str:
    return message if len(message) <= MAX_ERROR_MESSAGE else message[: MAX_ERROR_MESSAGE - 1] + "…"
