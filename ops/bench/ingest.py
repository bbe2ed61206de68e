"""spec_ingest end to end: draft save over HTTP → validation visible in a read.

Real services, started here in a temporary directory: PostgreSQL (default
durability: fsync and synchronous_commit on) and NATS with JetStream. In one
process and one event loop run the API (``ops.app.create_app`` through httpx's
ASGI transport, so no socket and no uvicorn), the projector (tenancy and
drafts), the relay and one ``spec_ingest`` consume loop, each built as the
``byteor-cloud`` processes build theirs.

One sample: ``POST …/drafts`` with a small SingleRing spec, then
``GET …/drafts/{id}`` every millisecond until ``validation.status`` is no longer
``pending``. The latency runs from just before the POST to the read that shows
the validation, so it covers the API's append, the relay's publish to
``jobs.spec_ingest``, the worker's claim, validation and append, the projection
and the read. Samples are sequential (a latency, not a throughput figure).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import nats

from commands.bootstrap import create_user
from commands.pgstore import open_store
from commands.ratelimit import RateLimits
from ops.app import create_app
from ops.processes import POOL_HANDLERS
from ops.services.base import free_port
from ops.services.nats import Nats
from ops.services.postgres import Postgres
from projections.drafts import DraftProjection
from projections.feed import PgFeed
from projections.runner import ProjectionRunner
from projections.tenancy import TenancyProjection
from schema.migrate import migrate_dsn
from schema.pg import create_pool
from workers.consumer import JobStore, JobWorker
from workers.relay import JetStreamPublisher, ensure_events_stream
from workers.streams import DEFAULT_JOB_TYPES, ensure

POLL_S = 0.001


def percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def _create_database(admin: str, name: str) -> str:
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    dsn = urlsplit(admin)._replace(path=f"/{name}").geturl()
    await migrate_dsn(dsn)
    return dsn


_PARTS = """
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM s.at - c.at)),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM v.at - s.at))
FROM (SELECT *, recorded_at AS at FROM events) c
JOIN (SELECT *, recorded_at AS at FROM events) v
  ON v.stream_id = c.stream_id AND v.event_type = 'draft.validated'
JOIN (SELECT *, recorded_at AS at FROM events) s
  ON s.stream_id = 'job-' || (c.payload->>'job_id') AND s.event_type = 'job.started'
WHERE c.event_type = 'draft.created'
"""


async def _measure(
    dsn: str, nats_url: str, spec: bytes, samples: int, warmup: int
) -> tuple[list[float], dict[str, float]]:
    settings = {s.job_type: s for s in DEFAULT_JOB_TYPES}["spec_ingest"]
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure(js, [settings])
    await ensure_events_stream(js)
    pool = await create_pool(dsn, min_size=2, max_size=12)
    api_store = open_store(dsn, size=4)
    worker_store = open_store(dsn, size=4)
    stop = asyncio.Event()
    projector = ProjectionRunner(
        pool,
        PgFeed(pool, listen_dsn=dsn),
        [TenancyProjection(), DraftProjection()],
        lease_dsn=dsn,
    )
    relay = ProjectionRunner(
        pool, PgFeed(pool, listen_dsn=dsn), [JetStreamPublisher(js)], lease_dsn=dsn
    )
    handler: Any = POOL_HANDLERS["spec_ingest"](worker_store.pool)  # type: ignore[arg-type]
    worker = JobWorker(JobStore(worker_store), js, settings, handler, fetch_timeout=1.0)
    tasks = [
        asyncio.create_task(projector.run(stop)),
        asyncio.create_task(relay.run(stop)),
        asyncio.create_task(worker.run(stop)),
    ]
    latencies: list[float] = []
    parts: dict[str, float] = {}
    try:
        made = await create_user(
            pool, email="bench@example.com", org_name="Bench", now=datetime.now(UTC)
        )
        auth = {"Authorization": f"Bearer {made.token}"}
        app = create_app(
            pool,
            PgFeed(pool),
            store=api_store,
            rate_limits=RateLimits(default=1_000_000, auth=1_000_000),
        )
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            r = await client.post(
                f"/api/v1/orgs/{made.org_id}/projects", json={"name": "bench"}, headers=auth
            )
            r.raise_for_status()
            drafts = f"{r.json()['links']['self']}/drafts"
            text = spec.decode()
            for i in range(warmup + samples):
                body = {"name": f"d{i}", "target": "SingleRing", "spec_kv": text}
                started = time.perf_counter()
                r = await client.post(drafts, json=body, headers=auth)
                r.raise_for_status()
                position = r.headers["X-ByteOr-Position"]
                url = r.json()["links"]["self"]
                # The first read waits for the draft itself (read-your-writes).
                got = await client.get(f"{url}?min_position={position}", headers=auth)
                while got.json()["validation"]["status"] == "pending":
                    await asyncio.sleep(POLL_S)
                    got = await client.get(url, headers=auth)
                    if time.perf_counter() - started > 30:
                        raise RuntimeError(f"draft {url} not validated within 30 s")
                elapsed = time.perf_counter() - started
                if got.json()["validation"]["status"] != "valid":
                    raise RuntimeError(f"the benchmark spec did not validate: {got.text}")
                if i >= warmup:
                    latencies.append(elapsed * 1000)
        # Where the time goes, from the events' recorded_at (median over all saves).
        row = await pool.fetchrow(_PARTS)
        assert row is not None
        to_start, to_validated = row
        parts = {
            "saved_to_job_started_ms": float(to_start) * 1000,
            "job_started_to_validated_ms": float(to_validated) * 1000,
        }
    finally:
        stop.set()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, 10)
        await projector.close()
        await relay.close()
        await api_store.close()
        await worker_store.close()
        await pool.close()
        with contextlib.suppress(Exception):
            await nc.close()
    return latencies, parts


def ingest_latency(spec: bytes, samples: int = 200, warmup: int = 20) -> dict[str, float]:
    """p50/p99/max in ms of draft save → validation visible, on fresh real services."""
    with tempfile.TemporaryDirectory(prefix="byteor-bench-ingest-") as tmp:
        root = Path(tmp)
        pg = Postgres(root / "pg", free_port())
        broker = Nats(root / "nats", free_port(), free_port())
        try:
            pg.start()
            broker.start()
            dsn = asyncio.run(_create_database(pg.admin_dsn, "bench_ingest"))
            measured, parts = asyncio.run(_measure(dsn, broker.url, spec, samples, warmup))
            values = sorted(measured)
        finally:
            broker.stop()
            pg.stop()
    return {
        "samples": len(values),
        "p50_ms": percentile(values, 0.50),
        "p99_ms": percentile(values, 0.99),
        "max_ms": values[-1],
        **parts,
    }
