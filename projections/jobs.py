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
    tables: Sequence[str] = ("job_index",)

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
                                       due_at, updated_at)
                VALUES ($1, $2, 'queued', 0, $3, $4, $5) ON CONFLICT (job_id) DO NOTHING
                """,
                decoded.job_id,
                decoded.job_type,
                version,
                due_at("queued", at, not_before=decoded.not_before),
                at,
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
        await conn.execute(
            """
            UPDATE job_index SET status = $2, generation = coalesce($3, generation),
                version = $4, due_at = $5, updated_at = $6
            WHERE job_id = $1 AND version < $4
            """,
            uuid.UUID(event.stream_id.removeprefix(f"{job.STREAM_TYPE}-")),
            status,
            generation,
            version,
            due_at(status, at, next_delay_s=delay),
            at,
        )
