"""The event store on PostgreSQL (asyncpg).

One append is one SQL statement, hence one implicit transaction and one round
trip: the expected-version guard, the event rows and the idempotency record
either all happen or none does. Ordering and the commit-visibility horizon are
explained in schema/migrations/0002_events.sql.

Waking tailing readers: a NOTIFY inside the append would take PostgreSQL's
notification-queue lock on every commit, through the commit's flush, and so
serialize all writers (measured: about half of all writer time at 8 writers).
Instead each process coalesces wake-ups (``Notifier``: at most one NOTIFY per
few milliseconds, sent after the appends committed). An append inside a
caller's transaction (``conn=``) keeps its NOTIFY in the statement, where
PostgreSQL delivers it only once that transaction commits. Readers also poll,
so a lost wake-up costs latency, never an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from typing import Any, NoReturn

import asyncpg

from commands.group_commit import GroupCommit
from commands.store import (
    ConcurrencyError,
    DuplicateCommand,
    IdempotencyClaim,
    StoredResponse,
    StoreUnavailable,
)
from domain.envelope import EVENT_COLUMNS, AppendResult, Metadata, RecordedEvent, StreamAppend
from schema.pg import APP_ROLE, Connection, LeanPool

StorePool = asyncpg.Pool | LeanPool

NOTIFY_CHANNEL = "byteor_events"

log = logging.getLogger("byteor.eventstore")

_APPEND = f"""
WITH guard AS MATERIALIZED (
    SELECT events_expect_version(g.stream_id, g.expected) AS v
    FROM unnest($1::text[], $2::integer[]) AS g(stream_id, expected)
),
input AS (
    SELECT t.*
    FROM unnest(
        $3::uuid[], $4::text[], $5::text[], $6::integer[], $7::text[], $8::smallint[], $9::json[]
    ) WITH ORDINALITY AS t(event_id, stream_id, stream_type, stream_version, event_type,
                           schema_version, payload, ord)
    CROSS JOIN (SELECT count(v) AS n FROM guard) AS checked
    WHERE checked.n >= 0
),
ins AS (
    INSERT INTO events (event_id, stream_id, stream_type, stream_version, event_type,
                        schema_version, payload, tenant_id, actor_kind, actor_id,
                        correlation_id, causation_id, command_id, recorded_at, recorded_us)
    SELECT event_id, stream_id, stream_type, stream_version, event_type, schema_version,
           payload, $10, $11, $12, $13, $14, $15, clock.at, events_epoch_us(clock.at)
    FROM input CROSS JOIN (SELECT coalesce($16::timestamptz, now()) AS at) AS clock
    ORDER BY ord
    RETURNING position, transaction_id
),
summary AS (
    SELECT coalesce(array_agg(position ORDER BY position), '{{}}') AS positions,
           max(transaction_id::text)::bigint AS tx,
           max(position) AS last_position
    FROM ins
),
idem AS (
    INSERT INTO command_log (principal, idempotency_key, request_hash, status_code, response,
                             last_position)
    SELECT $17, $18, $19, $20, $21, summary.last_position FROM summary
    WHERE $17::text IS NOT NULL
    RETURNING 1
),
wake AS (
    SELECT pg_notify('{NOTIFY_CHANNEL}', '') FROM summary
    WHERE $22::boolean AND summary.last_position IS NOT NULL
)
SELECT summary.positions, coalesce(summary.tx, pg_current_xact_id()::text::bigint) AS tx,
       (SELECT count(*) FROM idem) AS idem, (SELECT count(*) FROM wake) AS woke
FROM summary
"""

_READ_STREAM = f"""
SELECT {EVENT_COLUMNS} FROM events
WHERE stream_id = $1 AND stream_version > $2
ORDER BY stream_version
"""

_FIND_RESPONSE = """
SELECT request_hash, status_code, response, last_position FROM command_log
WHERE principal = $1 AND idempotency_key = $2
"""


# The common command: one new event on one stream, no idempotency key. Same
# guard and columns as _APPEND, without the arrays and CTEs.
_APPEND_ONE = """
INSERT INTO events (event_id, stream_id, stream_type, stream_version, event_type,
                    schema_version, payload, tenant_id, actor_kind, actor_id,
                    correlation_id, causation_id, command_id, recorded_at, recorded_us)
SELECT coalesce($1, gen_random_uuid()), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
       clock.at, events_epoch_us(clock.at)
FROM (SELECT coalesce($14::timestamptz, now()) AS at) AS clock
WHERE $15::integer <= 0 OR events_expect_version($2, $15) = $15
RETURNING position, transaction_id
"""


class Notifier:
    """Coalesces "events were appended" wake-ups into few NOTIFYs.

    The first poke sends at once; pokes during the next ``interval`` seconds
    are folded into one more NOTIFY at its end.
    """

    def __init__(self, pool: StorePool, interval: float = 0.02) -> None:
        self.pool = pool
        self.interval = interval
        self._pending = False
        self._task: asyncio.Task[None] | None = None

    def poke(self) -> None:
        if self._task is not None and not self._task.done():
            self._pending = True
            return
        self._task = asyncio.get_running_loop().create_task(self._send())

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _send(self) -> None:
        while True:
            self._pending = False
            try:
                await self.pool.execute(f"SELECT pg_notify('{NOTIFY_CHANNEL}', '')")
            except Exception as exc:  # best effort: readers poll anyway
                log.debug("wake-up NOTIFY failed: %s", exc)
            await asyncio.sleep(self.interval)
            if not self._pending:
                return


class PgEventStore:
    """``commands.store.EventStore`` on PostgreSQL.

    ``pool`` is a ``schema.pg.LeanPool`` in the services (the hot path), or any
    asyncpg pool from ``schema.pg.create_pool``.
    """

    def __init__(self, pool: StorePool, *, group_commit: bool = False) -> None:
        self.pool = pool
        self.notifier = Notifier(pool)
        # Services share commits between concurrent one-event appends
        # (commands/group_commit.py); without it every append is its own transaction.
        self.group = (
            GroupCommit(pool, self._append_one, lambda exc: _translate(exc, None))
            if group_commit
            else None
        )

    async def close(self) -> None:
        if self.group is not None:
            await self.group.close()
        await self.notifier.close()
        await self.pool.close()

    async def append(
        self,
        appends: Sequence[StreamAppend],
        meta: Metadata,
        *,
        idempotency: IdempotencyClaim | None = None,
        conn: Connection | None = None,
    ) -> AppendResult:
        """See ``EventStore.append``. With ``conn``, runs inside the caller's transaction."""
        if conn is None and idempotency is None and _single_event(appends):
            if self.group is not None and appends[0].expected_version >= 0:
                result = await self.group.append(appends[0], meta)
            else:
                result = await self._append_one(appends[0], meta)
        else:
            result = await self._append_many(appends, meta, idempotency, conn)
        if conn is None and result.positions:
            self.notifier.poke()
        return result

    async def _append_one(self, append: StreamAppend, meta: Metadata) -> AppendResult:
        event = append.events[0]
        try:
            row = await self.pool.fetchrow(
                _APPEND_ONE,
                event.event_id,
                append.stream_id,
                append.stream_type,
                append.expected_version + 1,
                event.event_type,
                event.schema_version,
                event.payload,
                meta.tenant_id,
                meta.actor.kind,
                meta.actor.id,
                meta.correlation_id,
                meta.causation_id,
                meta.command_id,
                meta.recorded_at,
                append.expected_version,
            )
        except Exception as exc:
            _reraise(exc, None)
        assert row is not None
        return AppendResult(positions=(row[0],), transaction_id=int(row[1]))

    async def _append_many(
        self,
        appends: Sequence[StreamAppend],
        meta: Metadata,
        idempotency: IdempotencyClaim | None,
        conn: Connection | None,
    ) -> AppendResult:
        guard_streams: list[str] = []
        guard_expected: list[int] = []
        cols: tuple[list[Any], ...] = ([], [], [], [], [], [], [])
        for append in appends:
            if append.expected_version > 0:
                guard_streams.append(append.stream_id)
                guard_expected.append(append.expected_version)
            for offset, event in enumerate(append.events, start=1):
                cols[0].append(event.event_id or uuid.uuid4())
                cols[1].append(append.stream_id)
                cols[2].append(append.stream_type)
                cols[3].append(append.expected_version + offset)
                cols[4].append(event.event_type)
                cols[5].append(event.schema_version)
                cols[6].append(event.payload)
        idem = idempotency
        args = (
            guard_streams,
            guard_expected,
            *cols,
            meta.tenant_id,
            meta.actor.kind,
            meta.actor.id,
            meta.correlation_id,
            meta.causation_id,
            meta.command_id,
            meta.recorded_at,
            idem.principal if idem else None,
            idem.key if idem else None,
            idem.request_hash if idem else None,
            idem.status_code if idem else None,
            idem.body if idem else None,
            conn is not None,
        )
        try:
            if conn is not None:
                row = await conn.fetchrow(_APPEND, *args)
            else:
                async with self.pool.acquire() as pooled:
                    row = await pooled.fetchrow(_APPEND, *args)
        except Exception as exc:
            _reraise(exc, idem)
        assert row is not None
        return AppendResult(positions=tuple(row["positions"]), transaction_id=int(row["tx"]))

    async def read_stream(self, stream_id: str, *, after_version: int = -1) -> list[RecordedEvent]:
        try:
            async with self.pool.acquire() as conn:
                rows = await conn.fetch(_READ_STREAM, stream_id, after_version)
        except (OSError, asyncpg.InterfaceError) as exc:
            raise StoreUnavailable(f"event store unreachable: {exc}") from exc
        return [RecordedEvent.from_row(r) for r in rows]

    async def find_response(self, principal: str, key: str) -> StoredResponse | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(_FIND_RESPONSE, principal, key)
        if row is None:
            return None
        return StoredResponse(
            request_hash=row["request_hash"],
            status_code=row["status_code"],
            body=bytes(row["response"]),
            last_position=row["last_position"],
        )


def open_store(
    dsn: str,
    *,
    size: int = 10,
    role: str | None = APP_ROLE,
    application_name: str = "byteor-store",
    group_commit: bool = True,
) -> PgEventStore:
    """The store as the services run it: on its own ``LeanPool``, concurrent one-event
    appends sharing commits (close with ``close``)."""
    pool = LeanPool(dsn, size=size, role=role, application_name=application_name)
    return PgEventStore(pool, group_commit=group_commit)


def _single_event(appends: Sequence[StreamAppend]) -> bool:
    return len(appends) == 1 and len(appends[0].events) == 1


def _reraise(exc: Exception, idem: IdempotencyClaim | None) -> NoReturn:
    translated = _translate(exc, idem)
    if translated is exc:
        raise exc
    raise translated from exc


def _translate(exc: Exception, idem: IdempotencyClaim | None) -> Exception:
    """Driver errors to store errors; anything unexpected passes through."""
    if isinstance(exc, asyncpg.UniqueViolationError):
        if exc.constraint_name == "command_log_pkey" and idem is not None:
            return DuplicateCommand(idem.principal, idem.key)
        if exc.constraint_name == "events_stream_version_key":
            return ConcurrencyError(_stream_of(exc), None)
        return exc
    if isinstance(exc, asyncpg.PostgresError):
        if exc.sqlstate == "BY409":
            return ConcurrencyError(None, None)
        if isinstance(exc, asyncpg.QueryCanceledError | asyncpg.CannotConnectNowError):
            return StoreUnavailable(str(exc))
        return exc
    if isinstance(exc, OSError | asyncpg.InterfaceError):
        return StoreUnavailable(f"event store unreachable: {exc}")
    return exc


def _stream_of(exc: asyncpg.UniqueViolationError) -> str | None:
    detail = getattr(exc, "detail", None) or ""
    # "Key (stream_id, stream_version)=(org-..., 2) already exists."
    if "=(" in detail:
        return detail.split("=(", 1)[1].split(",", 1)[0]
    return None
