"""Group commit: concurrent one-event appends of a process share one transaction.

Every append of one event to one stream (the common command, and every job
transition a worker records) otherwise costs a transaction of its own: a
commit, a WAL flush and a round trip. Under load a process has many of them
waiting at once; ``GroupCommit`` writes those that are waiting in one
statement, so they share the commit, and the caller of each still gets its own
answer: its position, or ``ConcurrencyError`` for its stream alone.

How one append stays independent of the others in its group:

- Its expected version is checked on its own (the event at that version must
  exist: one index probe per row, a LATERAL ``LIMIT 1`` so the planner cannot
  swap it for a hashed scan of the whole table, as it did for ``EXISTS``), and
  a concurrent writer of the same version is absorbed by
  ``ON CONFLICT (stream_id, stream_version) DO NOTHING``, which waits for that
  writer and skips the row if it committed. A row not written is that
  append's conflict and nobody else's.
- A group never holds two appends to one stream; a second waits for the next
  group, so it sees the first's row.
- If the group statement fails for any reason other than the database being
  unreachable, each of its appends is written again alone, so an error lands
  on the append that caused it.

The group travels as one JSON document (``json_to_recordset``), not as
fourteen arrays: asyncpg checks every array element against abstract base
classes as it encodes it, and the arrays cost the client 54 µs a row in
groups of 4 and 24 µs in groups of 16, against 33 and 13 for the document
(measured on one connection, PostgreSQL's CPU about the same either way).
Payloads are spliced into the document as they are, so each must be exactly
one JSON value: one that is not (it could close its own row and open a
forged one) is written alone, where PostgreSQL refuses it.

Latency: an append that finds fewer than ``max_inflight`` groups being written
is sent at once, alone; batching happens only while writes are already
waiting on the database, so it costs nothing when the store is idle.
Decision 0015 weighs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import msgspec

from commands.store import ConcurrencyError, StoreUnavailable
from domain.envelope import AppendResult, Metadata, StreamAppend
from schema.pg import AnyPool

_GROUP_APPEND = """
WITH input AS (
    SELECT * FROM ROWS FROM (
        json_to_recordset($1::json) AS (
            event_id uuid, stream_id text, stream_type text, stream_version integer,
            event_type text, schema_version smallint, payload json, tenant_id uuid,
            actor_kind text, actor_id text, correlation_id uuid, causation_id uuid,
            command_id text, recorded_at timestamptz
        )
    ) WITH ORDINALITY AS t(event_id, stream_id, stream_type, stream_version, event_type,
                           schema_version, payload, tenant_id, actor_kind, actor_id,
                           correlation_id, causation_id, command_id, recorded_at, ord)
)
INSERT INTO events (event_id, stream_id, stream_type, stream_version, event_type,
                    schema_version, payload, tenant_id, actor_kind, actor_id,
                    correlation_id, causation_id, command_id, recorded_at, recorded_us)
SELECT coalesce(i.event_id, gen_random_uuid()), i.stream_id, i.stream_type, i.stream_version,
       i.event_type, i.schema_version, i.payload, i.tenant_id, i.actor_kind, i.actor_id,
       i.correlation_id, i.causation_id, i.command_id, clock.at, events_epoch_us(clock.at)
FROM input i
CROSS JOIN LATERAL (SELECT coalesce(i.recorded_at, now()) AS at) AS clock
LEFT JOIN LATERAL (
    SELECT true AS found FROM events e
    WHERE e.stream_id = i.stream_id AND e.stream_version = i.stream_version - 1
    LIMIT 1
) AS previous ON true
WHERE i.stream_version = 1 OR previous.found
ORDER BY i.ord
ON CONFLICT ON CONSTRAINT events_stream_version_key DO NOTHING
RETURNING stream_id, position, transaction_id
"""

Solo = Callable[[StreamAppend, Metadata], Awaitable[AppendResult]]
Translate = Callable[[Exception], Exception]


class _Waiting:
    __slots__ = ("append", "done", "meta")

    def __init__(
        self, append: StreamAppend, meta: Metadata, done: asyncio.Future[AppendResult]
    ) -> None:
        self.append = append
        self.meta = meta
        self.done = done


class GroupCommit:
    """Writes waiting one-event appends together; see the module docstring.

    ``solo`` writes one append in its own transaction (the store's own path);
    ``translate`` maps a driver error to the store's errors.
    """

    def __init__(
        self,
        pool: AnyPool,
        solo: Solo,
        translate: Translate,
        *,
        max_inflight: int = 1,
        max_group: int = 256,
    ) -> None:
        self.pool = pool
        self.solo = solo
        self.translate = translate
        self.max_inflight = max_inflight
        self.max_group = max_group
        self._waiting: deque[_Waiting] = deque()
        self._inflight = 0
        self._writers: set[asyncio.Task[None]] = set()
        self.groups = 0  # statements that wrote more than one append
        self.grouped = 0  # appends written in those

    async def append(self, append: StreamAppend, meta: Metadata) -> AppendResult:
        """Write one append of exactly one event; its own result or error."""
        if self._inflight < self.max_inflight and not self._waiting:
            self._inflight += 1
            try:
                return await self.solo(append, meta)
            finally:
                self._inflight -= 1
                self._start_writer()
        done: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(append, meta, done))
        self._start_writer()
        return await done

    async def close(self) -> None:
        for task in list(self._writers):
            task.cancel()
        for task in list(self._writers):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while self._waiting:
            _failed(self._waiting.popleft(), StoreUnavailable("the event store is closed"))

    def _start_writer(self) -> None:
        if self._waiting and self._inflight < self.max_inflight:
            self._inflight += 1
            task = asyncio.get_running_loop().create_task(self._write_waiting())
            self._writers.add(task)
            task.add_done_callback(self._writers.discard)

    async def _write_waiting(self) -> None:
        try:
            while self._waiting:
                group = self._take_group()
                try:
                    await self._write(group)
                except BaseException:
                    for w in group:
                        _failed(w, StoreUnavailable("the append was interrupted"))
                    raise
        finally:
            self._inflight -= 1
            self._start_writer()

    def _take_group(self) -> list[_Waiting]:
        """The oldest waiting appends, at most one per stream; the rest keep their place."""
        group: list[_Waiting] = []
        streams: set[str] = set()
        later: list[_Waiting] = []
        while self._waiting and len(group) < self.max_group:
            w = self._waiting.popleft()
            if w.done.done():  # its caller was cancelled while it waited
                continue
            if w.append.stream_id in streams:
                later.append(w)
            else:
                streams.add(w.append.stream_id)
                group.append(w)
        self._waiting.extendleft(reversed(later))
        return group

    async def _write(self, group: list[_Waiting]) -> None:
        if not group:  # every one waiting had been cancelled
            return
        if len(group) == 1:
            await self._write_alone(group[0])
            return
        document, group, malformed = _rows(group)
        for w in malformed:  # the database gives each its own error
            await self._write_alone(w)
        if not group:
            return
        try:
            async with self.pool.acquire() as conn:
                rows = await conn.fetch(_GROUP_APPEND, document)
        except Exception as exc:
            translated = self.translate(exc)
            if isinstance(translated, StoreUnavailable):
                for w in group:
                    _failed(w, translated)
                return
            for w in group:  # find whose append it was
                await self._write_alone(w)
            return
        self.groups += 1
        self.grouped += len(group)
        written = {row[0]: row for row in rows}
        for w in group:
            row = written.get(w.append.stream_id)
            if row is None:
                _failed(w, ConcurrencyError(w.append.stream_id, w.append.expected_version))
            else:
                _written(w, AppendResult(positions=(row[1],), transaction_id=int(row[2])))

    async def _write_alone(self, w: _Waiting) -> None:
        try:
            result = await self.solo(w.append, w.meta)
        except Exception as exc:
            _failed(w, exc)
        else:
            _written(w, result)


def _written(w: _Waiting, result: AppendResult) -> None:
    if not w.done.done():
        w.done.set_result(result)


def _failed(w: _Waiting, error: Exception) -> None:
    if not w.done.done():
        w.done.set_exception(error)


class _Row(msgspec.Struct):
    """One append of a group, as a JSON object of ``_GROUP_APPEND``'s record."""

    event_id: uuid.UUID | None  # None: the database draws it (gen_random_uuid)
    stream_id: str
    stream_type: str
    stream_version: int
    event_type: str
    schema_version: int
    payload: msgspec.Raw
    tenant_id: uuid.UUID | None
    actor_kind: str
    actor_id: str
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None
    command_id: str | None
    recorded_at: datetime | None


_encode_rows = msgspec.json.Encoder().encode


def _as_json(payload: bytes) -> msgspec.Raw:
    """``payload`` checked to be exactly one JSON value (else DecodeError).

    It is spliced into the group's document as is: a malformed one must fail
    here, alone, not run into its neighbours' rows.
    """
    return msgspec.json.decode(payload, type=msgspec.Raw)


def _rows(group: list[_Waiting]) -> tuple[bytes, list[_Waiting], list[_Waiting]]:
    """The group's document; the appends in it; those left out (payload not one JSON value)."""
    rows: list[_Row] = []
    included: list[_Waiting] = []
    malformed: list[_Waiting] = []
    for w in group:
        a, m = w.append, w.meta
        event = a.events[0]
        try:
            payload = _as_json(event.payload)
        except msgspec.DecodeError:
            malformed.append(w)
            continue
        included.append(w)
        rows.append(
            _Row(
                event.event_id,
                a.stream_id,
                a.stream_type,
                a.expected_version + 1,
                event.event_type,
                event.schema_version,
                payload,
                m.tenant_id,
                m.actor.kind,
                m.actor.id,
                m.correlation_id,
                m.causation_id,
                m.command_id,
                # As asyncpg sends a timestamptz: a naive time is local time.
                m.recorded_at.astimezone(UTC) if m.recorded_at is not None else None,
            )
        )
    return _encode_rows(rows), included, malformed
