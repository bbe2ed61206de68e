"""Event store benchmark: our store against eventsourcing's PostgreSQL recorder and raw INSERTs.

All contenders run in one process, one after another, against the same
PostgreSQL server with the same durability (the server's defaults: fsync and
synchronous_commit on), each in its own database:

  ours   PgEventStore.append on a pool from schema.pg.create_pool, one event per
         command with the full envelope (tenant, actor, correlation, causation,
         command id); writers are asyncio tasks.
  es     eventsourcing.postgres.PostgresApplicationRecorder (psycopg pool of one
         connection per writer, no pre-ping), one StoredEvent per insert_events();
         writers are threads. It takes an EXCLUSIVE table lock per insert, which
         is how it keeps notification ids in commit order.
  es_fn  the same with enable_db_functions=True, its fastest option: one call of
         a plpgsql function per insert, which takes no table lock (so its ids
         can commit out of order); shown for information, ratios use ``es``.
  raw    a single-row INSERT into a bare (bigserial, jsonb) table, one asyncpg
         connection per writer and no pool: the ceiling for one-row
         transactions from this client on this machine.

Appends are counted over ``--seconds`` after ``--warmup``; each configuration
runs ``--repeats`` times (contenders interleaved) and the median is reported.
The tail read pre-fills ``--prefill`` events and reads them all from the start in
pages, ``--read-repeats`` times (a read takes about a second, so more runs cost
little and steady the median): ours through PgFeed.pages decoding each payload into a msgspec
Struct, eventsourcing's through select_notifications decoding each state with
json. The process runs with the services' garbage-collector settings
(ops/gc_tuning.py), for every contender alike. The last line printed is one
JSON object for the lead's report.

    python -m ops.bench.eventstore [--seconds 5] [--writers 1,8,32] [--prefill 200000]

Without BYTEOR_CLOUD_DATABASE_URL (or --dsn, a superuser DSN) a PostgreSQL server
is started in a temporary directory and removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import asyncpg
import msgspec

from commands.pgstore import PgEventStore, open_store
from domain.envelope import START, Actor, Metadata, NewEvent, StreamAppend
from ops.gc_tuning import tune_for_service
from ops.services.base import free_port
from ops.services.postgres import Postgres
from projections.feed import PgFeed
from schema.migrate import migrate_dsn
from schema.pg import connect, create_pool

ENV_DSN = "BYTEOR_CLOUD_DATABASE_URL"
TOPIC = "bench.things:ThingHappened"
ACTOR = Actor(kind="user", id="bench-user")


class Thing(msgspec.Struct):
    """The typed payload the tail read decodes into."""

    name: str
    n: int
    ok: bool


def payload(n: int) -> bytes:
    return b'{"name":"thing-%d","n":%d,"ok":true}' % (n, n)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the server and its databases ---------------------------------------------


class Server:
    """The PostgreSQL server under test: our own in a temp dir, or the one at ``dsn``."""

    def __init__(self, dsn: str | None) -> None:
        self._external = dsn
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._pg: Postgres | None = None
        self._created: list[str] = []
        self.admin_dsn = dsn or ""

    def start(self) -> None:
        if self._external:
            return
        self._tmp = tempfile.TemporaryDirectory(prefix="byteor-bench-")
        self._pg = Postgres(Path(self._tmp.name), free_port())  # default durability
        log("starting PostgreSQL (fsync on, synchronous_commit on) ...")
        self._pg.start()
        self.admin_dsn = self._pg.admin_dsn

    def dsn(self, database: str) -> str:
        parts = urlsplit(self.admin_dsn)
        return parts._replace(path=f"/{database}").geturl()

    def create_database(self, name: str) -> str:
        async def create() -> None:
            conn = await asyncpg.connect(self.admin_dsn)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()

        asyncio.run(create())
        self._created.append(name)
        return self.dsn(name)

    def describe(self) -> str:
        async def settings() -> str:
            conn = await asyncpg.connect(self.admin_dsn)
            try:
                version = await conn.fetchval("SHOW server_version")
                rows = await conn.fetch(
                    "SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])",
                    ["fsync", "synchronous_commit", "wal_sync_method", "shared_buffers"],
                )
            finally:
                await conn.close()
            return f"PostgreSQL {version}; " + ", ".join(f"{r[0]}={r[1]}" for r in rows)

        return asyncio.run(settings())

    def stop(self) -> None:
        if self._external:

            async def drop() -> None:
                conn = await asyncpg.connect(self.admin_dsn)
                try:
                    for name in self._created:
                        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                finally:
                    await conn.close()

            with contextlib.suppress(OSError, asyncpg.PostgresError):
                asyncio.run(drop())
        if self._pg is not None:
            self._pg.stop()
        if self._tmp is not None:
            self._tmp.cleanup()


def migrated(server: Server, name: str) -> str:
    dsn = server.create_database(name)
    asyncio.run(migrate_dsn(dsn))
    return dsn


# -- appends ------------------------------------------------------------------


async def _timed_tasks(
    writers: int, write: Callable[[int, int], object], warmup: float, seconds: float
) -> float:
    """Run ``writers`` tasks calling ``await write(w, i)`` in a loop; events/s after warm-up."""
    count = 0
    stopping = False

    async def writer(w: int) -> None:
        nonlocal count
        i = 0
        while not stopping:
            await write(w, i)  # type: ignore[misc]
            count += 1
            i += 1

    tasks = [asyncio.create_task(writer(w)) for w in range(writers)]
    await asyncio.sleep(warmup)
    c0, t0 = count, time.perf_counter()
    await asyncio.sleep(seconds)
    c1, t1 = count, time.perf_counter()
    stopping = True
    await asyncio.gather(*tasks)
    return (c1 - c0) / (t1 - t0)


async def ours_append(dsn: str, writers: int, warmup: float, seconds: float) -> float:
    # The store as the API runs it (commands.pgstore.open_store: its own LeanPool),
    # but one transaction per command as the issue measures it: no group commit.
    store = open_store(dsn, size=writers, group_commit=False)
    tenant = uuid.uuid4()

    async def write(w: int, i: int) -> None:
        meta = Metadata(
            actor=ACTOR,
            tenant_id=tenant,
            correlation_id=uuid.uuid4(),
            causation_id=uuid.uuid4(),
            command_id=f"cmd-{w}-{i}",
        )
        event = NewEvent(event_type="thing.happened", payload=payload(i))
        stream = StreamAppend(
            stream_id=f"thing-{uuid.uuid4()}",
            stream_type="thing",
            expected_version=0,
            events=(event,),
        )
        await store.append([stream], meta)

    try:
        return await _timed_tasks(writers, write, warmup, seconds)
    finally:
        await store.close()


async def raw_append(dsn: str, writers: int, warmup: float, seconds: float) -> float:
    # One connection per writer, no pool: the least a client can do per transaction.
    conns = [await connect(dsn, role=None) for _ in range(writers)]
    await conns[0].execute(
        "CREATE TABLE IF NOT EXISTS raw (id bigserial PRIMARY KEY, payload jsonb NOT NULL)"
    )

    async def write(w: int, i: int) -> None:
        await conns[w].execute("INSERT INTO raw (payload) VALUES ($1)", payload(i))

    try:
        return await _timed_tasks(writers, write, warmup, seconds)
    finally:
        for conn in conns:
            await conn.close()


def es_recorder(dsn: str, pool_size: int, *, db_functions: bool = False):  # type: ignore[no-untyped-def]
    from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore

    parts = urlsplit(dsn)
    datastore = PostgresDatastore(
        dbname=parts.path.lstrip("/"),
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=unquote(parts.username or "postgres"),
        password=unquote(parts.password or ""),
        pool_size=pool_size,
        max_overflow=0,
        pre_ping=False,
        enable_db_functions=db_functions,
    )
    recorder = PostgresApplicationRecorder(datastore)
    recorder.create_table()
    return datastore, recorder


def es_append(
    dsn: str, writers: int, warmup: float, seconds: float, *, db_functions: bool = False
) -> float:
    from eventsourcing.persistence import StoredEvent

    datastore, recorder = es_recorder(dsn, writers, db_functions=db_functions)
    counts = [0] * writers
    stopping = threading.Event()

    def writer(w: int) -> None:
        i = 0
        while not stopping.is_set():
            event = StoredEvent(
                originator_id=uuid.uuid4(), originator_version=1, topic=TOPIC, state=payload(i)
            )
            recorder.insert_events([event])
            counts[w] += 1
            i += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(warmup)
        c0, t0 = sum(counts), time.perf_counter()
        time.sleep(seconds)
        c1, t1 = sum(counts), time.perf_counter()
    finally:
        stopping.set()
        for thread in threads:
            thread.join()
        datastore.close()
    return (c1 - c0) / (t1 - t0)


# -- tail reads ---------------------------------------------------------------

BATCH = 1000  # events per pre-fill transaction
PER_STREAM = 10


async def ours_prefill(dsn: str, total: int) -> None:
    pool = await create_pool(dsn, min_size=4, max_size=4)
    store = PgEventStore(pool)
    tenant = uuid.uuid4()
    batches = asyncio.Queue[int]()
    for b in range(0, total, BATCH):
        batches.put_nowait(b)

    async def filler() -> None:
        while not batches.empty():
            first = batches.get_nowait()
            n = min(BATCH, total - first)
            appends = [
                StreamAppend(
                    stream_id=f"thing-{uuid.uuid4()}",
                    stream_type="thing",
                    expected_version=0,
                    events=tuple(
                        NewEvent(event_type="thing.happened", payload=payload(first + s + k))
                        for k in range(min(PER_STREAM, n - s))
                    ),
                )
                for s in range(0, n, PER_STREAM)
            ]
            meta = Metadata(
                actor=ACTOR, tenant_id=tenant, correlation_id=uuid.uuid4(), command_id="fill"
            )
            await store.append(appends, meta)

    try:
        await asyncio.gather(*(filler() for _ in range(4)))
        await pool.execute("ANALYZE events")
    finally:
        await pool.close()


async def ours_read(dsn: str, page: int) -> tuple[int, float]:
    # PgFeed.pages reads the next page while this one is decoded, exactly as the
    # projection runner (and so the relay) catches up.
    pool = await create_pool(dsn, min_size=2, max_size=2)
    feed = PgFeed(pool)
    decode = msgspec.json.Decoder(Thing).decode
    try:
        started = time.perf_counter()
        count, check = 0, 0
        async with contextlib.aclosing(feed.pages(START, page)) as pages:
            async for events in pages:
                for event in events:
                    check += decode(event.payload).n
                count += len(events)
        return count, time.perf_counter() - started
    finally:
        await pool.close()


def es_prefill(dsn: str, total: int) -> None:
    from eventsourcing.persistence import StoredEvent

    datastore, recorder = es_recorder(dsn, 4)
    try:
        for first in range(0, total, BATCH):
            n = min(BATCH, total - first)
            events: list[StoredEvent] = []
            for s in range(0, n, PER_STREAM):
                originator = uuid.uuid4()
                events.extend(
                    StoredEvent(
                        originator_id=originator,
                        originator_version=k + 1,
                        topic=TOPIC,
                        state=payload(first + s + k),
                    )
                    for k in range(min(PER_STREAM, n - s))
                )
            recorder.insert_events(events)
        with datastore.transaction(commit=True) as curs:
            curs.execute("ANALYZE stored_events")
    finally:
        datastore.close()


def es_read(dsn: str, page: int) -> tuple[int, float]:
    datastore, recorder = es_recorder(dsn, 1)
    try:
        started = time.perf_counter()
        last, count, check = None, 0, 0
        while notifications := recorder.select_notifications(
            start=last, limit=page, inclusive_of_start=last is None
        ):
            for notification in notifications:
                check += json.loads(notification.state)["n"]
            count += len(notifications)
            last = notifications[-1].id
        return count, time.perf_counter() - started
    finally:
        datastore.close()


# -- the run ------------------------------------------------------------------


@dataclass
class Results:
    append: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    read: dict[str, list[float]] = field(default_factory=dict)

    def median_append(self, who: str, writers: int) -> float | None:
        runs = self.append.get((who, writers))
        return statistics.median(runs) if runs else None

    def median_read(self, who: str) -> float | None:
        runs = self.read.get(who)
        return statistics.median(runs) if runs else None


CONTENDERS = ("ours", "es", "es_fn", "raw")
LABELS = {
    "ours": "ours (PgEventStore.append)",
    "es": "eventsourcing PostgresApplicationRecorder",
    "es_fn": "  same, enable_db_functions (no table lock)",
    "raw": "raw asyncpg INSERT (bare table)",
}


def run_appends(server: Server, args: argparse.Namespace, results: Results) -> None:
    dsns = {
        "ours": migrated(server, f"bench_ours_{os.getpid()}"),
        "es": server.create_database(f"bench_es_{os.getpid()}"),
        "es_fn": server.create_database(f"bench_es_fn_{os.getpid()}"),
        "raw": server.create_database(f"bench_raw_{os.getpid()}"),
    }
    runners: dict[str, Callable[[str, int, float, float], float]] = {
        "ours": lambda *a: asyncio.run(ours_append(*a)),
        "es": es_append,
        "es_fn": lambda *a: es_append(*a, db_functions=True),
        "raw": lambda *a: asyncio.run(raw_append(*a)),
    }
    steps = len(args.writers) * args.repeats * len(CONTENDERS)
    step = 0
    for writers in args.writers:
        for rep in range(args.repeats):
            for who in CONTENDERS:
                step += 1
                rate = runners[who](dsns[who], writers, args.warmup, args.seconds)
                results.append.setdefault((who, writers), []).append(rate)
                log(
                    f"[{step}/{steps}] append {who:5} {writers:2} writers "
                    f"run {rep + 1}: {rate:9,.0f} events/s"
                )


def run_reads(server: Server, args: argparse.Namespace, results: Results) -> None:
    ours_dsn = migrated(server, f"bench_ours_read_{os.getpid()}")
    es_dsn = server.create_database(f"bench_es_read_{os.getpid()}")
    log(f"pre-filling {args.prefill:,} events for ours ...")
    started = time.perf_counter()
    asyncio.run(ours_prefill(ours_dsn, args.prefill))
    log(f"  done in {time.perf_counter() - started:.1f} s")
    log(f"pre-filling {args.prefill:,} events for eventsourcing ...")
    started = time.perf_counter()
    es_prefill(es_dsn, args.prefill)
    log(f"  done in {time.perf_counter() - started:.1f} s")
    readers: dict[str, Callable[[], tuple[int, float]]] = {
        "ours": lambda: asyncio.run(ours_read(ours_dsn, args.page)),
        "es": lambda: es_read(es_dsn, args.page),
    }
    for rep in range(args.read_repeats):
        for who, read in readers.items():
            count, elapsed = read()
            if count != args.prefill:
                raise RuntimeError(f"{who} read {count} events, expected {args.prefill}")
            rate = count / elapsed
            results.read.setdefault(who, []).append(rate)
            log(f"tail read {who:4} run {rep + 1}: {rate:9,.0f} events/s ({elapsed:.2f} s)")


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def report(args: argparse.Namespace, results: Results, server_info: str) -> dict[str, object]:
    print(f"\nEvent store benchmark: {server_info}; {os.cpu_count()} CPUs")
    print(
        f"appends: one event per transaction, {args.seconds:g} s after {args.warmup:g} s "
        f"warm-up, median of {args.repeats}"
    )
    header = f"{'events/s':<44}" + "".join(f"{f'{w} writers':>14}" for w in args.writers)
    print(header)
    print("-" * len(header))
    for who in CONTENDERS:
        cells = "".join(f"{results.median_append(who, w) or 0:>14,.0f}" for w in args.writers)
        print(f"{LABELS[who]:<44}{cells}")
    for other in ("es", "es_fn", "raw"):
        ratios = [
            ratio(results.median_append("ours", w), results.median_append(other, w)) or 0
            for w in args.writers
        ]
        cells = "".join(f"{r:>13.2f}x" for r in ratios)
        print(f"{'ours / ' + other:<44}{cells}")

    tail = results.median_read("ours")
    es_tail = results.median_read("es")
    if results.read:
        print(
            f"\ntail read: {args.prefill:,} events from the start, pages of {args.page:,}, "
            f"decoded; median of {args.read_repeats}"
        )
        print(f"{'ours (PgFeed.pages + msgspec Struct)':<44}{tail or 0:>14,.0f} events/s")
        print(f"{'eventsourcing (select_notifications + json)':<44}{es_tail or 0:>14,.0f} events/s")
        print(f"{'ours / es':<44}{ratio(tail, es_tail) or 0:>13.2f}x")

    def m(who: str, w: int) -> float | None:
        value = results.median_append(who, w)
        return round(value, 1) if value is not None else None

    summary: dict[str, object] = {
        "bench": "eventstore",
        "ours_8w": m("ours", 8),
        "es_8w": m("es", 8),
        "raw_8w": m("raw", 8),
        "ratio_es_8w": ratio(m("ours", 8), m("es", 8)),
        "ratio_raw_8w": ratio(m("ours", 8), m("raw", 8)),
        "ratio_es_1w": ratio(m("ours", 1), m("es", 1)),
        "tail_read": round(tail, 1) if tail is not None else None,
        "ratio_es_read": ratio(tail, es_tail),
    }
    for w in args.writers:
        for who in CONTENDERS:
            summary.setdefault(f"{who}_{w}w", m(who, w))
    summary["es_tail_read"] = round(es_tail, 1) if es_tail is not None else None
    summary["seconds"] = args.seconds
    summary["repeats"] = args.repeats
    summary["read_repeats"] = args.read_repeats
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ops.bench.eventstore",
        description=(
            "Append and tail-read throughput of our event store against eventsourcing's "
            "PostgreSQL recorder and a raw INSERT loop, on one PostgreSQL server with "
            "default durability. Prints a table, then one JSON line."
        ),
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per run")
    parser.add_argument("--repeats", type=int, default=5, help="append runs per configuration")
    parser.add_argument(
        "--writers",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=[1, 8, 32],
        help="comma-separated concurrent writer counts (default 1,8,32)",
    )
    parser.add_argument("--prefill", type=int, default=200_000, help="events for the tail read")
    parser.add_argument("--page", type=int, default=1000, help="tail-read page size")
    parser.add_argument("--read-repeats", type=int, default=5, help="runs of each tail read")
    parser.add_argument("--skip-append", action="store_true", help="only the tail read")
    parser.add_argument("--skip-read", action="store_true", help="only the appends")
    parser.add_argument(
        "--dsn",
        default=os.environ.get(ENV_DSN),
        help=f"superuser DSN of a server to use (default ${ENV_DSN}; else start one)",
    )
    return parser.parse_args(argv)


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # This process runs with the services' collector settings, and so do all
    # contenders in it.
    tune_for_service()
    results = Results()
    started = time.perf_counter()
    with running(Server(args.dsn)) as server:
        info = server.describe()
        log(info)
        if not args.skip_append:
            run_appends(server, args, results)
        if not args.skip_read:
            run_reads(server, args, results)
    summary = report(args, results, info)
    log(f"\nbenchmark took {time.perf_counter() - started:.0f} s")
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
