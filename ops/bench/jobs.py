"""Jobs benchmark: end-to-end jobs/s against raw nats-py, and queue→start latency.

    python -m ops.bench.jobs [--jobs 3000] [--runs 5] [--rate 100] [--paced-seconds 10]

One run starts its own PostgreSQL (the server's default durability: fsync and
synchronous_commit on) and nats-server (file storage) in a temporary
directory, then measures, side by side on those servers:

  jobs    end to end: ``--jobs`` no-op jobs (the built-in ``probe`` with
          ``record: false``) enqueued through the event store by
          ``--writers`` concurrent tasks through the store as the API runs it
          (``open_store``: concurrent one-event appends share commits),
          published by a real ``byteor-cloud relay`` process and run by a real
          ``byteor-cloud worker`` process (``--concurrency`` consume loops).
          Rate = jobs / (last ``job.completed`` - first ``job.queued``), both
          ``recorded_at`` from the event store's clock.
  raw     the same number of messages through nats-py alone: ``--writers``
          tasks ``js.publish`` (each awaiting its ack, as the relay does) to a
          file-storage stream while one pull consumer fetches batches and acks
          each message. Rate = messages / (last ack - first publish).
  paced   queue→start latency: jobs enqueued at ``--rate`` per second for
          ``--paced-seconds``; latency = ``job.started.recorded_at`` -
          ``job.queued.recorded_at`` per job; p50 and p99.

Throughput runs ``--runs`` times (jobs and raw interleaved); medians are
reported. This process runs its side (the enqueuers, standing in for the API,
and the raw nats-py client) on uvloop and with the services' garbage-collector
settings (ops/gc_tuning.py), as the services run. Targets (issue 4):
>= 1,000 jobs/s, >= 25% of raw, p99 < 100 ms. The machine is shared with
whatever else runs, so figures are as measured.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import msgspec
import nats
import uvloop
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

from commands.pgstore import open_store
from commands.store import EventStore
from domain.envelope import Actor, Metadata
from ops.gc_tuning import tune_for_service
from ops.services.base import free_port
from ops.services.nats import Nats
from ops.services.postgres import Postgres
from ops.stack import free_ports
from schema.migrate import migrate_dsn
from schema.pg import create_pool
from workers.enqueue import enqueue
from workers.probe import JOB_TYPE, probe_payload

REPO = Path(__file__).resolve().parents[2]
TARGET_JOBS_PER_S = 1000
TARGET_RATIO = 0.25
TARGET_P99_MS = 100.0
NOOP = probe_payload(record=False)
META = Metadata(actor=Actor(kind="system", id="bench"), tenant_id=None, correlation_id=uuid.uuid4())


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Stack:
    """PostgreSQL + NATS in a temporary directory, and the relay and worker processes."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="byteor-bench-jobs-"))
        fast = {"fsync": "off", "synchronous_commit": "off"} if args.no_fsync else None
        self.pg = Postgres(self.tmp / "pg", free_port(), settings=fast)
        port, monitor = free_ports(2)
        self.nats = Nats(self.tmp / "nats", port, monitor)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.dsn = ""

    def start(self) -> None:
        durability = "off" if self.args.no_fsync else "on"
        log(f"starting PostgreSQL (fsync {durability}, synchronous_commit {durability}) and NATS")
        self.pg.start()
        self.nats.start()
        self.pg.create_database("bench")
        self.dsn = self.pg.dsn("bench")
        asyncio.run(migrate_dsn(self.dsn))

    def start_processes(self) -> None:
        worker_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("BYTEOR_CLOUD_")} | {
            "BYTEOR_CLOUD_DATABASE_URL": self.dsn,
            "BYTEOR_CLOUD_NATS_URL": self.nats.url,
            "BYTEOR_CLOUD_HOME": str(self.tmp / "home"),
            "BYTEOR_CLOUD_LOG_LEVEL": "WARNING",
            "BYTEOR_CLOUD_LOG_FORMAT": "text",
            "BYTEOR_CLOUD_WORKER_BIND_ADDR": f"127.0.0.1:{worker_port}",
            "BYTEOR_CLOUD_WORKER_CONCURRENCY": str(self.args.concurrency),
            "BYTEOR_CLOUD_JOB_SETTINGS": json.dumps(
                {JOB_TYPE: {"max_ack_pending": max(64, 4 * self.args.concurrency)}}
            ),
        }
        for command in ("relay", "worker"):
            out = (self.tmp / f"{command}.log").open("ab")
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "ops.cli", command],
                    cwd=REPO,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"a relay or worker exited; logs in {self.tmp}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{worker_port}/healthz").status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"the worker did not start; logs in {self.tmp}")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.nats.stop(grace=5)
        self.pg.stop(fast=True)
        import shutil

        shutil.rmtree(self.tmp, ignore_errors=True)


@contextlib.contextmanager
def running(stack: Stack) -> Iterator[Stack]:
    try:
        stack.start()
        stack.start_processes()
        yield stack
    finally:
        stack.stop()


# --- end to end --------------------------------------------------------------------------


async def enqueue_many(store: EventStore, count: int, writers: int) -> list[uuid.UUID]:
    ids: list[uuid.UUID] = []
    left = iter(range(count))

    async def writer() -> None:
        for _ in left:
            job_id, _ = await enqueue(store, META, job_type=JOB_TYPE, payload=NOOP, max_attempts=3)
            ids.append(job_id)

    await asyncio.gather(*(writer() for _ in range(writers)))
    return ids


async def completed_count(pool: asyncpg.Pool, after: int) -> int:
    return int(
        await pool.fetchval(
            "SELECT count(*) FROM events WHERE event_type = 'job.completed' AND position > $1",
            after,
        )
    )


async def wait_completed(pool: asyncpg.Pool, after: int, count: int, within: float) -> None:
    deadline = time.monotonic() + within
    # The rate comes from the events' recorded_at, not from this poll. Each poll
    # counts over every event of the run, which costs the server CPU the jobs
    # still running need, so it sleeps before the first and polls seldom.
    while True:
        await asyncio.sleep(0.25)
        if await completed_count(pool, after) >= count:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"jobs did not complete within {within:.0f}s")


async def span(pool: asyncpg.Pool, ids: list[uuid.UUID]) -> tuple[datetime, datetime]:
    """(first job.queued, last job.completed) of ``ids`` by the event store's clock."""
    row = await pool.fetchrow(
        """
        SELECT min(recorded_at) FILTER (WHERE event_type = 'job.queued') AS first,
               max(recorded_at) FILTER (WHERE event_type = 'job.completed') AS last
        FROM events WHERE stream_id = ANY($1::text[])
        """,
        [f"job-{i}" for i in ids],
    )
    assert row is not None
    return row["first"], row["last"]


async def relayed(pool: asyncpg.Pool, position: int, within: float = 300.0) -> None:
    """Wait until the relay's checkpoint is at ``position``."""
    deadline = time.monotonic() + within
    # No row yet while the relay is still starting: position 0.
    query = "SELECT coalesce(max(position), 0) FROM projection_checkpoints WHERE name = 'relay'"
    while int(await pool.fetchval(query)) < position:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the relay did not catch up within {within:.0f}s")
        await asyncio.sleep(0.02)


async def jobs_run(dsn: str, count: int, writers: int) -> float:
    pool = await create_pool(dsn, min_size=1, max_size=4)
    # Enqueued as the API enqueues: its store, where concurrent appends share commits.
    store = open_store(dsn, size=writers)
    try:
        after = int(await pool.fetchval("SELECT coalesce(max(position), 0) FROM events"))
        began = time.perf_counter()
        ids = await enqueue_many(store, count, writers)
        enqueued_s = time.perf_counter() - began
        head = int(await pool.fetchval("SELECT max(position) FROM events"))
        await relayed(pool, head)
        relayed_s = time.perf_counter() - began
        log(f"  relay had published every job.queued at {relayed_s:.2f} s")
        await wait_completed(pool, after, count, within=300)
        first, last = await span(pool, ids)
        run_ms = await pool.fetchval(
            """
            SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) FROM (
              SELECT extract(epoch FROM max(recorded_at) - min(recorded_at)) * 1000 AS ms
              FROM events WHERE stream_id = ANY($1::text[])
                AND event_type IN ('job.started', 'job.completed')
              GROUP BY stream_id) t
            """,
            [f"job-{i}" for i in ids],
        )
        log(f"  median job.started -> job.completed: {run_ms:.1f} ms")
        log(
            f"  enqueued {count} in {enqueued_s:.2f} s ({count / enqueued_s:,.0f}/s), "
            f"last completed {(last - first).total_seconds():.2f} s after the first queued"
        )
        return count / (last - first).total_seconds()
    finally:
        await store.close()
        await pool.close()


# --- raw nats-py ---------------------------------------------------------------------------


async def raw_run(url: str, count: int, writers: int) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    name = f"RAW_{uuid.uuid4().hex[:8]}"
    await js.add_stream(StreamConfig(name=name, subjects=[f"{name}.>"], storage=StorageType.FILE))
    await js.add_consumer(
        name,
        ConsumerConfig(durable_name="raw", ack_policy=AckPolicy.EXPLICIT, max_ack_pending=1024),
    )
    sub = await js.pull_subscribe_bind(durable="raw", stream=name)
    acked = 0
    left = iter(range(count))

    async def publisher() -> None:
        for i in left:
            await js.publish(f"{name}.x", b'{"job_id":"%d"}' % i)

    async def consumer() -> None:
        nonlocal acked
        while acked < count:
            with contextlib.suppress(nats.errors.TimeoutError, TimeoutError):
                for msg in await sub.fetch(100, timeout=1.0):
                    await msg.ack()
                    acked += 1

    started = time.perf_counter()
    await asyncio.gather(consumer(), *(publisher() for _ in range(writers)))
    elapsed = time.perf_counter() - started
    await js.delete_stream(name)
    await nc.close()
    return count / elapsed


# --- paced latency ---------------------------------------------------------------------------


async def paced_run(dsn: str, url: str, rate: float, seconds: float) -> list[float]:
    """queue→start latencies (ms); logs how the slow ones split between relay and worker."""
    pool = await create_pool(dsn, min_size=1, max_size=4)
    store = open_store(dsn, size=8)
    # When each job message reached NATS subscribers: splits queue→start into
    # relay (queued→published) and worker (published→started).
    nc = await nats.connect(url)
    published: dict[str, datetime] = {}

    async def seen(msg: Msg) -> None:
        published[msgspec.json.decode(msg.data)["job_id"]] = datetime.now(UTC)

    await nc.subscribe(f"jobs.{JOB_TYPE}", cb=seen)
    try:
        after = int(await pool.fetchval("SELECT coalesce(max(position), 0) FROM events"))
        count = int(rate * seconds)
        tasks = []
        started = time.perf_counter()
        for n in range(count):
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(
                asyncio.create_task(
                    enqueue(store, META, job_type=JOB_TYPE, payload=NOOP, max_attempts=3)
                )
            )
        ids = [job_id for job_id, _ in await asyncio.gather(*tasks)]
        await wait_completed(pool, after, count, within=120)
        rows = await pool.fetch(
            """
            SELECT substr(stream_id, 5) AS job_id,
                   min(recorded_at) FILTER (WHERE event_type = 'job.queued') AS queued,
                   min(recorded_at) FILTER (WHERE event_type = 'job.started') AS started
            FROM events WHERE stream_id = ANY($1::text[]) GROUP BY stream_id
            """,
            [f"job-{i}" for i in ids],
        )
        slow = [r for r in rows if r["started"] - r["queued"] > timedelta(milliseconds=100)]
        if slow:
            relay = [
                (published[r["job_id"]] - r["queued"]).total_seconds() * 1000
                for r in slow
                if r["job_id"] in published
            ]
            log(
                f"  {len(slow)} of {count} jobs waited over 100 ms; of that, relay "
                f"(queued→published) median {statistics.median(relay or [0]):.0f} ms, "
                f"worst {max(relay or [0]):.0f} ms"
            )
        return [(r["started"] - r["queued"]).total_seconds() * 1000 for r in rows]
    finally:
        await nc.close()
        await store.close()
        await pool.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ops.bench.jobs", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--jobs", type=int, default=3000, help="jobs (and raw messages) per run")
    parser.add_argument("--runs", type=int, default=5, help="throughput runs (median reported)")
    parser.add_argument("--writers", type=int, default=16, help="concurrent enqueuers/publishers")
    parser.add_argument("--concurrency", type=int, default=64, help="worker consume loops")
    parser.add_argument(
        "--no-fsync",
        action="store_true",
        help="PostgreSQL with fsync and synchronous_commit off (to see what commits cost)",
    )
    parser.add_argument("--rate", type=float, default=100.0, help="paced jobs per second")
    parser.add_argument("--paced-seconds", type=float, default=10.0, help="paced phase length")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tune_for_service()
    started = time.perf_counter()
    jobs: list[float] = []
    raw: list[float] = []
    with running(Stack(args)) as stack:
        log("warm-up ...")
        uvloop.run(jobs_run(stack.dsn, min(300, args.jobs), args.writers))
        for n in range(1, args.runs + 1):
            jobs.append(uvloop.run(jobs_run(stack.dsn, args.jobs, args.writers)))
            raw.append(uvloop.run(raw_run(stack.nats.url, args.jobs, args.writers)))
            log(f"run {n}: end to end {jobs[-1]:,.0f} jobs/s, raw nats-py {raw[-1]:,.0f} msg/s")
        latencies = uvloop.run(paced_run(stack.dsn, stack.nats.url, args.rate, args.paced_seconds))
    jobs_per_s = statistics.median(jobs)
    raw_per_s = statistics.median(raw)
    ratio = jobs_per_s / raw_per_s
    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
    met = "met" if jobs_per_s >= TARGET_JOBS_PER_S else "MISSED"
    log(
        f"\nend to end (median of {args.runs}): {jobs_per_s:,.0f} jobs/s "
        f"(target >= {TARGET_JOBS_PER_S:,}: {met})"
    )
    log(f"raw nats-py (median of {args.runs}): {raw_per_s:,.0f} msg/s")
    log(
        f"ratio: {ratio:.1%} of raw "
        f"(target >= {TARGET_RATIO:.0%}: {'met' if ratio >= TARGET_RATIO else 'MISSED'})"
    )
    log(
        f"queue->start at {args.rate:.0f} jobs/s over {len(latencies)} jobs: "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms "
        f"(target p99 < {TARGET_P99_MS:.0f} ms: {'met' if p99 < TARGET_P99_MS else 'MISSED'})"
    )
    log(f"benchmark took {time.perf_counter() - started:.0f} s")
    print(
        json.dumps(
            {
                "bench": "jobs",
                "jobs_per_s": round(jobs_per_s, 1),
                "raw_nats_per_s": round(raw_per_s, 1),
                "ratio_raw": round(ratio, 3),
                "queue_to_start_p50_ms": round(p50, 1),
                "queue_to_start_p99_ms": round(p99, 1),
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
