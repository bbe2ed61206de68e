"""Enqueue and re-queue jobs through the event store (never by publishing to NATS).

The write side includes ``domain.job.queued_append(...)`` in its own append so a
job is queued in the transaction of the domain event that caused it; these
helpers are for callers whose only event is the job's (the scheduler, tests,
operator tools). The relay publishes what they append.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from commands.store import EventStore
from domain import job
from domain.envelope import AppendResult, Metadata, StreamAppend
from workers.consumer import JobStore


async def enqueue(
    store: EventStore,
    meta: Metadata,
    *,
    job_type: str,
    payload: dict[str, Any] | None = None,
    max_attempts: int,
    job_id: uuid.UUID | None = None,
    not_before: datetime | None = None,
    also: tuple[StreamAppend, ...] = (),
) -> tuple[uuid.UUID, AppendResult]:
    """Append ``job.queued`` (with ``also``, in one transaction); returns the job id."""
    job_id = job_id or uuid.uuid4()
    append = job.queued_append(
        job_id=job_id,
        job_type=job_type,
        payload=payload,
        max_attempts=max_attempts,
        not_before=not_before,
    )
    return job_id, await store.append([*also, append], meta)


async def requeue(
    jobs: JobStore, job_id: uuid.UUID, by: str, meta: Metadata | None = None
) -> job.Job:
    """Run a dead-lettered or failed job again (a new generation, attempts from 1).

    ``meta`` names the operator; without it the worker's system actor is recorded.
    A concurrent change raises ConcurrencyError (the caller answers 409).
    """
    loaded = await jobs.load(job_id)
    events = job.requeue(loaded.state, by)
    return await jobs.append(loaded, events, meta)
