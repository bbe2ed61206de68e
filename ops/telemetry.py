"""Metrics beyond HTTP requests (which Litestar's Prometheus middleware counts).

Process-wide collectors in the default registry, so every process (API,
projector, relay, worker) exports the same names. Lag is refreshed when
/metrics is scraped, from the checkpoint table, so it is right in any process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import asyncpg
from litestar import Request, Response, get
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, generate_latest

from commands.store import EventStore, IdempotencyClaim
from domain.envelope import AppendResult, Metadata, RecordedEvent, StreamAppend

EVENTS_APPENDED = Counter(
    "byteor_event_store_appended_events", "Events appended to the event store", ["stream_type"]
)
APPENDS = Counter(
    "byteor_event_store_appends", "Append transactions (commands) committed", ["outcome"]
)
PROJECTION_LAG_EVENTS = Gauge(
    "byteor_projection_lag_events",
    "Events readable in the feed that the projection has not applied yet",
    ["projection"],
)
PROJECTION_LAG_SECONDS = Gauge(
    "byteor_projection_lag_seconds",
    "Age of the oldest readable event the projection has not applied yet",
    ["projection"],
)
PROJECTION_APPLIED = Gauge(
    "byteor_projection_events_applied", "Events applied by a projection in total", ["projection"]
)
JOBS = Gauge(
    "byteor_jobs",
    "Jobs in the job index by type and state (refreshed at scrape)",
    ["job_type", "state"],
)

_LAG = """
SELECT c.name, c.events_applied,
       (SELECT count(*) FROM events e
        WHERE (e.transaction_id, e.position) > (c.transaction_id, c.position)
          AND e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())) AS behind,
       (SELECT extract(epoch FROM now() - min(e.recorded_at)) FROM events e
        WHERE (e.transaction_id, e.position) > (c.transaction_id, c.position)
          AND e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())) AS age
FROM projection_checkpoints c
ORDER BY c.name
"""


async def projection_lag(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    rows = await pool.fetch(_LAG)
    out = []
    for row in rows:
        behind = int(row["behind"])
        age = float(row["age"] or 0.0)
        PROJECTION_LAG_EVENTS.labels(row["name"]).set(behind)
        PROJECTION_LAG_SECONDS.labels(row["name"]).set(age)
        PROJECTION_APPLIED.labels(row["name"]).set(int(row["events_applied"]))
        out.append({"projection": row["name"], "lag_events": behind, "lag_seconds": round(age, 3)})
    return out


async def job_counts(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    """Set ``byteor_jobs{job_type, state}`` from job_index; a pair no job is in any
    more drops out (its series would otherwise keep the last count)."""
    rows = await pool.fetch(
        "SELECT job_type, status, count(*) AS n FROM job_index GROUP BY 1, 2 ORDER BY 1, 2"
    )
    JOBS.clear()
    out = []
    for row in rows:
        JOBS.labels(row["job_type"], row["status"]).set(int(row["n"]))
        out.append({"job_type": row["job_type"], "state": row["status"], "count": int(row["n"])})
    return out


class CountingStore:
    """An EventStore that counts what it appends (the metrics decorator)."""

    def __init__(self, inner: EventStore) -> None:
        self.inner = inner

    async def append(
        self,
        appends: Sequence[StreamAppend],
        meta: Metadata,
        *,
        idempotency: IdempotencyClaim | None = None,
    ) -> AppendResult:
        try:
            result = await self.inner.append(appends, meta, idempotency=idempotency)
        except Exception:
            APPENDS.labels("failed").inc()
            raise
        APPENDS.labels("committed").inc()
        for append in appends:
            if append.events:
                EVENTS_APPENDED.labels(append.stream_type).inc(len(append.events))
        return result

    async def read_stream(self, stream_id: str, *, after_version: int = -1) -> list[RecordedEvent]:
        return await self.inner.read_stream(stream_id, after_version=after_version)

    async def find_response(self, principal: str, key: str) -> Any:
        return await self.inner.find_response(principal, key)


@get("/metrics", include_in_schema=False)
async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Prometheus text format; projection lag and job counts are refreshed from the
    database first."""
    pool = getattr(request.app.state, "pool", None)
    if pool is not None:
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            await projection_lag(pool)
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            await job_counts(pool)
    return Response(
        content=generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST, status_code=200
    )
