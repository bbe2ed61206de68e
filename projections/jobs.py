"""The job index: one row per job with its status and when it is due to run.

The reconciler (``workers/reconciler.py``) asks it which jobs are ``queued``
or ``retrying`` past their due time without reading every job stream. It is
an ordinary projection (checkpoint moved in the batch's transaction) and every
update is guarded by the job stream's version, so replays change nothing.

When a job is due (``due_at``, the plain rule the reconciler re-checks against
the event store before it acts):

- ``queued`` (first queued, requeued or republished): when the event was
  recorded, or ``not_before`` if that is later;
- ``retrying``: when the retry was scheduled plus its delay;
- any other status: never (NULL), a worker or nobody owns it.

A job is overdue once ``due_at + grace`` has passed: the grace covers the
relay's lag and ordinary queueing, so a healthy system never republishes.

For operators (``projections/job_routes.py``, ``byteor-cloud jobs``) it also
records the job's tenant (the ``tenant_id`` of its ``job.queued`` envelope) and
when it was queued, and keeps ``job_attempts``: one row per attempt with when
it started and finished, its outcome and error. Attempt rows are written only
by an event that moved ``job_index`` (its version guard), so replays change
nothing there either.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Final

from domain import job
from domain.codec import EventCodec, default_codec
from domain.envelope import RecordedEvent
from schema.pg import Connection

NAME: Final = "job_index"

_STATUS: Final[dict[type[job.JobEvent], job.JobStatus]] = {
    job.JobStarted: "running",
    job.JobCompleted: "completed",
    job.JobRetryScheduled: "retrying",
    job.JobFailed: "failed",
    job.JobDeadLettered: "dead_letter",
    job.JobRequeued: "queued",
    job.JobRepublished: "queued",
}


def due_at(
    status: job.JobStatus,
    at: datetime,
    *,
    not_before: datetime | None = None,
    next_delay_s: float | None = None,
) -> datetime | None:
    """When a job whose last event was recorded ``at`` should run (None: not waiting)."""
    if status == "queued":
        return at if not_before is None or not_before < at else not_before
    if status == "retrying":
        return at + timedelta(seconds=next_delay_s or 0.0)
    return None


def overdue(due: datetime | None, now: datetime, grace_s: float) -> bool:
    """Due more than ``grace_s`` seconds ago."""
    return due is not None and due + timedelta(seconds=grace_s) <= now


class JobIndexProjection:
    name: str = NAME
    tables: Sequence[str] = ("job_index", "job_attempts")

    def __init__(self, codec: EventCodec | None = None) -> None:
        self.codec = codec or default_codec()

    def handles(self, event_type: str) -> bool:
        return event_type.startswith(f"{job.STREAM_TYPE}.")

    async def apply(self, conn: Connection, event: RecordedEvent) -> None:
        decoded = self.codec.decode_recorded(event)
        at = event.recorded_at
        version = event.stream_version
        if isinstance(decoded, job.JobQueued):
            await conn.execute(
                """
                INSERT INTO job_index (job_id, job_type, status, generation, version,
                                       due_at, updated_at, org_id, created_at)
                VALUES ($1, $2, 'queued', 0, $3, $4, $5, $6, $5)
                ON CONFLICT (job_id) DO NOTHING
                """,
                decoded.job_id,
                decoded.job_type,
                version,
                due_at("queued", at, not_before=decoded.not_before),
                at,
                event.tenant_id,
            )
            return
        if not isinstance(decoded, job.JobEvent):
            return
        status = _STATUS[type(decoded)]
        generation = (
            decoded.generation
            if isinstance(decoded, job.JobRequeued | job.JobRepublished)
            else None
        )
        delay = decoded.next_delay_s if isinstance(decoded, job.JobRetryScheduled) else None
        job_id = uuid.UUID(event.stream_id.removeprefix(f"{job.STREAM_TYPE}-"))
        current = await conn.fetchval(
            """
            UPDATE job_index SET status = $2, generation = coalesce($3, generation),
                version = $4, due_at = $5, updated_at = $6
            WHERE job_id = $1 AND version < $4
            RETURNING generation
            """,
            job_id,
            status,
            generation,
            version,
            due_at(status, at, next_delay_s=delay),
            at,
        )
        if current is not None:
            await _record_attempt(conn, job_id, current, decoded, at)


_OUTCOME: Final[dict[type[job.JobEvent], str]] = {
    job.JobCompleted: "completed",
    job.JobRetryScheduled: "retry",
    job.JobFailed: "failed",
    job.JobDeadLettered: "dead_letter",
}


async def _record_attempt(
    conn: Connection, job_id: uuid.UUID, generation: int, event: job.JobEvent, at: datetime
) -> None:
    """The attempt row an event of generation ``generation`` starts or finishes."""
    if isinstance(event, job.JobStarted):
        await conn.execute(
            """
            INSERT INTO job_attempts (job_id, generation, attempt, started_at)
            VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING
            """,
            job_id,
            generation,
            event.attempt,
            at,
        )
        return
    outcome = _OUTCOME.get(type(event))
    if outcome is None:
        return
    error_class = getattr(event, "error_class", None)
    error_message = getattr(event, "error_message", None)
    await conn.execute(
        """
        INSERT INTO job_attempts (job_id, generation, attempt, finished_at, outcome,
                                  error_class, error_message)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (job_id, generation, attempt) DO UPDATE
        SET finished_at = excluded.finished_at, outcome = excluded.outcome,
            error_class = excluded.error_class, error_message = excluded.error_message
        """,
        job_id,
        generation,
        getattr(event, "attempt", 0),
        at,
        outcome,
        error_class,
        error_message,
    )
