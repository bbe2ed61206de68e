"""Run projections: tail the feed, apply events to read tables, move checkpoints.

Exactly-once effect: each batch is one transaction that first moves the
checkpoint row from the cursor the batch was read after (a compare-and-set: if
another runner moved it meanwhile, the batch is abandoned and nothing is
applied), then applies the events. The read-table change and the checkpoint
commit together or not at all.

A projection that owns no tables (the relay, whose "read table" is a JetStream
stream) has nothing to commit with its checkpoint: its writes are confirmed
first, then the checkpoint moves in one statement (``_apply_outside``).

One active runner per projection across replicas: a session-level advisory
lock held on a dedicated connection is the lease. The compare-and-set above
keeps a runner that lost its lease without noticing from doing harm.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Sequence
from typing import Protocol

import asyncpg

from domain.envelope import Cursor, RecordedEvent
from projections.feed import PgFeed
from schema.pg import Connection, connect

log = logging.getLogger("byteor.projections")


class Projection(Protocol):
    """A read model: its name, the tables it owns and how it applies an event."""

    name: str
    tables: Sequence[str]

    def handles(self, event_type: str) -> bool: ...

    async def apply(self, conn: Connection, event: RecordedEvent) -> None: ...


def lease_key(name: str) -> int:
    digest = hashlib.sha256(f"projection:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def load_checkpoint(conn: Connection | asyncpg.Pool, name: str) -> Cursor:
    row = await conn.fetchrow(
        "SELECT transaction_id, position FROM projection_checkpoints WHERE name = $1", name
    )
    if row is None:
        return Cursor()
    return Cursor(transaction_id=row[0], position=row[1])


async def ensure_checkpoint(pool: asyncpg.Pool, name: str) -> None:
    await pool.execute(
        "INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
        name,
    )


class CheckpointMoved(Exception):
    """Another runner advanced this projection: the batch was not applied."""


_MOVE_CHECKPOINT = """
UPDATE projection_checkpoints
SET transaction_id = $2, position = $3,
    events_applied = events_applied + $6, updated_at = now()
WHERE name = $1 AND transaction_id = $4 AND position = $5
"""


async def apply_batch(
    pool: asyncpg.Pool, projection: Projection, after: Cursor, events: Sequence[RecordedEvent]
) -> Cursor:
    """Apply ``events`` (read after ``after``) and advance the checkpoint, atomically."""
    if not projection.tables:
        return await _apply_outside(pool, projection, after, events)
    last = events[-1].cursor
    async with pool.acquire() as conn, conn.transaction():
        await _move_checkpoint(conn, projection, after, last, len(events))
        for event in events:
            if projection.handles(event.event_type):
                await projection.apply(conn, event)
    return last


async def _apply_outside(
    pool: asyncpg.Pool, projection: Projection, after: Cursor, events: Sequence[RecordedEvent]
) -> Cursor:
    """A projection that owns no tables writes outside PostgreSQL (the relay).

    Its writes are made and confirmed first (``flush``: a failure leaves the
    checkpoint where it was, and the batch is written again), then the
    checkpoint moves in one statement: no transaction around writes the
    database does not hold. If another runner moved the checkpoint meanwhile,
    this batch's writes were repeats its target must tolerate (the relay's
    JetStream drops them by message id) and the batch counts as not applied.
    """
    last = events[-1].cursor
    async with pool.acquire() as conn:
        for event in events:
            if projection.handles(event.event_type):
                await projection.apply(conn, event)
        flush = getattr(projection, "flush", None)
        if flush is not None:
            await flush()
        await _move_checkpoint(conn, projection, after, last, len(events))
    return last


async def _move_checkpoint(
    conn: Connection, projection: Projection, after: Cursor, last: Cursor, count: int
) -> None:
    moved = await conn.execute(
        _MOVE_CHECKPOINT,
        projection.name,
        last.transaction_id,
        last.position,
        after.transaction_id,
        after.position,
        count,
    )
    if moved != "UPDATE 1":
        raise CheckpointMoved(projection.name)


class ProjectionRunner:
    """Keeps every given projection caught up while it holds its lease."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        feed: PgFeed,
        projections: Sequence[Projection],
        *,
        lease_dsn: str,
        batch_size: int = 500,
        idle_wait: float = 1.0,
    ) -> None:
        self.pool = pool
        self.feed = feed
        self.projections = list(projections)
        self.lease_dsn = lease_dsn
        self.batch_size = batch_size
        self.idle_wait = idle_wait
        self._lease_conn: Connection | None = None
        self.held: set[str] = set()
        self.applied = 0

    async def acquire_leases(self) -> None:
        if self._lease_conn is None or self._lease_conn.is_closed():
            self.held.clear()
            self._lease_conn = await connect(self.lease_dsn, application_name="byteor-projector")
        for projection in self.projections:
            if projection.name in self.held:
                continue
            got = await self._lease_conn.fetchval(
                "SELECT pg_try_advisory_lock($1)", lease_key(projection.name)
            )
            if got:
                await ensure_checkpoint(self.pool, projection.name)
                self.held.add(projection.name)
                log.info("projection lease acquired", extra={"projection": projection.name})

    async def catch_up(self, projection: Projection) -> int:
        """Apply everything currently readable; returns how many events were applied."""
        done = 0
        cursor = await load_checkpoint(self.pool, projection.name)
        while True:
            applied, moved = 0, False
            async with contextlib.aclosing(self.feed.pages(cursor, self.batch_size)) as pages:
                async for events in pages:
                    try:
                        cursor = await apply_batch(self.pool, projection, cursor, events)
                    except CheckpointMoved:
                        moved = True  # another runner moved it: go on from its checkpoint
                        break
                    applied += len(events)
            done += applied
            self.applied += applied
            if moved:
                cursor = await load_checkpoint(self.pool, projection.name)
            elif applied == 0:
                return done

    async def step(self) -> int:
        await self.acquire_leases()
        total = 0
        for projection in self.projections:
            if projection.name in self.held:
                total += await self.catch_up(projection)
        return total

    async def run(self, stop: asyncio.Event) -> None:
        await self.feed.listen()
        backoff = 0.005
        while not stop.is_set():
            try:
                applied = await self.step()
            except Exception as exc:  # a daemon: log, back off, go on (nothing was applied)
                log.warning(
                    "projection step failed; retrying in 1s: %s: %s", type(exc).__name__, exc
                )
                self.held.clear()
                if self._lease_conn is not None:
                    with contextlib.suppress(Exception):
                        await self._lease_conn.close()
                self._lease_conn = None
                await _sleep_or_stop(stop, 1.0)
                continue
            if applied:
                backoff = 0.005
                continue
            # Nothing readable. A NOTIFY may have arrived for a transaction that
            # is not yet below the horizon, so after a wake-up poll briefly
            # (growing delay) instead of sleeping the full idle wait.
            started = time.monotonic()
            await self.feed.wait_for_change(min(self.idle_wait, backoff))
            if time.monotonic() - started < backoff:
                backoff = 0.005
            else:
                backoff = min(backoff * 2, self.idle_wait)

    async def close(self) -> None:
        if self._lease_conn is not None and not self._lease_conn.is_closed():
            await self._lease_conn.close()
        self._lease_conn = None
        self.held.clear()
        await self.feed.close()


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def wait_for_position(
    pool: asyncpg.Pool, feed: PgFeed, name: str, position: int, max_wait: float
) -> bool:
    """Read-your-writes: wait until projection ``name`` has applied ``position``.

    Returns False when ``max_wait`` passes first. A position that does not
    exist (yet) is waited for the same way.
    """
    deadline = time.monotonic() + max_wait
    target: Cursor | None = None
    delay = 0.002
    while True:
        if target is None:
            target = await feed.cursor_of(position)
        if target is not None and await load_checkpoint(pool, name) >= target:
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)
