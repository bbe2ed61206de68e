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

Latency: an append that finds fewer than ``max_inflight`` groups being written
is sent at once, alone; batching happens only while writes are already
waiting on the database, so it costs nothing when the store is idle.
Decision 0015 weighs it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from commands.store import ConcurrencyError, StoreUnavailable
from domain.envelope import AppendResult, Metadata, StreamAppend
from schema.pg import AnyPool

_GROUP_APPEND = """
WITH input AS (
    SELECT * FROM unnest(
        $1::uuid[], $2::text[], $3::text[], $4::integer[], $5::text[], $6::smallint[],
        $7::json[], $8::uuid[], $9::text[], $10::text[], $11::uuid[], $12::uuid[],
        $13::uuid[], $14::timestamptz[]
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
        try:
            async with self.pool.acquire() as conn:
                rows = await conn.fetch(_GROUP_APPEND, *_columns(group))
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


def _columns(group: list[_Waiting]) -> tuple[list[Any], ...]:
    cols: tuple[list[Any], ...] = tuple([] for _ in range(14))
    for w in group:
        a, m = w.append, w.meta
        event = a.events[0]
        for col, value in zip(
            cols,
            (
                event.event_id,  # None: the database draws it (gen_random_uuid)
                a.stream_id,
                a.stream_type,
                a.expected_version + 1,
                event.event_type,
                event.schema_version,
                event.payload,
                m.tenant_id,
                m.actor.kind,
                m.actor.id,
                m.correlation_id,
                m.causation_id,
                m.command_id,
                m.recorded_at,
            ),
            strict=True,
        ):
            col.append(value)
    return cols
