"""An ``eventsourcing`` application recorder on top of our event store.

A thin adapter, for two uses: running the ``eventsourcing`` library's own
recorder test suite against our store (tests/contract/test_eventsourcing_recorder.py),
and letting an ``eventsourcing`` ``Application`` persist into our ``events`` table:

    app = MyApplication(env={
        "PERSISTENCE_MODULE": "ops.esrecorder",
        "BYTEOR_CLOUD_DATABASE_URL": "postgresql://...",
    })

The library's API is synchronous and ours is asyncio, so each recorder runs its
own event loop in a background thread, with its own pool from
``schema.pg.create_pool``; every call is handed to that loop and waited for.

Mapping. A stored event becomes one row appended by ``PgEventStore.append``:
stream id = originator id, stream version = originator version, event type =
topic, stream type ``eventsourcing``, actor ``system``, payload
``{"b64": <state>}`` (the state is arbitrary bytes: JSON, or compressed and
encrypted). Notification ids are our global ``position``. A conflict on a stream
version becomes ``eventsourcing.persistence.IntegrityError``.

Ordering differs from the library's own PostgreSQL recorder, which takes a table
lock per insert so that ids are handed out in commit order. We take no lock;
ids from concurrent transactions interleave, and only the commit-ordered feed
(transaction id, position) is gap-safe. ``select_notifications`` answers the
library's id-range question below the commit horizon; ``subscribe`` follows the
feed. See docs/decisions/0003-eventsourcing-recorder-conformance.md.

Not supported: snapshots (the store rejects version gaps), tracking and
process recorders.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import deque
from collections.abc import Coroutine, Sequence
from typing import Any, Literal, TypeVar

import asyncpg
import msgspec
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    DatabaseError,
    DataError,
    InfrastructureFactory,
    InfrastructureFactoryError,
    IntegrityError,
    InterfaceError,
    Notification,
    OperationalError,
    ProcessRecorder,
    StoredEvent,
    Subscription,
    TrackingRecorder,
)

from commands.pgstore import PgEventStore
from commands.store import ConcurrencyError, StoreUnavailable
from domain.envelope import START, Actor, Metadata, NewEvent, StreamAppend
from projections.feed import PgFeed
from schema.pg import APP_ROLE, create_pool

T = TypeVar("T")

STREAM_TYPE = "eventsourcing"
ACTOR = Actor(kind="system", id="eventsourcing")

OriginatorIdType = Literal["uuid", "text"]


class _State(msgspec.Struct, frozen=True):
    """The payload of an adapted event: the library's state bytes, base64 in JSON."""

    b64: bytes


_encode = msgspec.json.Encoder().encode
_decode_state = msgspec.json.Decoder(_State).decode

# Below the commit horizon every writing transaction has finished (see
# schema/migrations/0002_events.sql), so what is read here is settled.
_SELECT_NOTIFICATIONS = """
SELECT position, stream_id, stream_version, event_type, payload FROM events
WHERE stream_type = $1 AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
"""
_MAX_NOTIFICATION_ID = """
SELECT max(position) FROM events
WHERE stream_type = $1 AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
"""
_SELECT_EVENTS = """
SELECT stream_version, event_type, payload FROM events
WHERE stream_id = $1 AND stream_type = $2
"""


class _LoopThread:
    """An asyncio loop in a daemon thread; ``run`` blocks the caller until done."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.run(self.loop.shutdown_asyncgens())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class ByteorApplicationRecorder(ApplicationRecorder):
    """``eventsourcing.persistence.ApplicationRecorder`` over ``PgEventStore``."""

    def __init__(
        self,
        dsn: str,
        *,
        role: str | None = APP_ROLE,
        pool_size: int = 10,
        stream_type: str = STREAM_TYPE,
        originator_id_type: OriginatorIdType = "uuid",
        actor: Actor = ACTOR,
        tenant_id: uuid.UUID | None = None,
    ) -> None:
        self.dsn = dsn
        self.role = role
        self.stream_type = stream_type
        self.originator_id_type = originator_id_type
        self.actor = actor
        self.tenant_id = tenant_id
        self._runner = _LoopThread("esrecorder")
        self._subscriptions: set[FeedSubscription] = set()
        self._lock = threading.Lock()
        try:
            self.pool = self._runner.run(
                create_pool(dsn, role=role, min_size=1, max_size=pool_size)
            )
        except BaseException:
            self._runner.close()
            raise
        self.store = PgEventStore(self.pool)

    # -- plumbing ------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on this recorder's loop, translating errors to the library's."""
        try:
            return self._runner.run(coro)
        except ConcurrencyError as exc:
            raise IntegrityError(str(exc)) from exc
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise IntegrityError(str(exc)) from exc
        except asyncpg.DataError as exc:
            raise DataError(str(exc)) from exc
        except StoreUnavailable as exc:
            raise OperationalError(str(exc)) from exc
        except (OSError, asyncpg.InterfaceError) as exc:
            raise InterfaceError(str(exc)) from exc
        except asyncpg.PostgresError as exc:
            raise DatabaseError(str(exc)) from exc

    def close(self) -> None:
        """Stop subscriptions, close the pool and the loop (idempotent)."""
        with self._lock:
            subscriptions, self._subscriptions = list(self._subscriptions), set()
        for subscription in subscriptions:
            subscription.stop()
        if self._runner.loop.is_closed():
            return
        self._runner.run(self.pool.close())
        self._runner.close()

    def __enter__(self) -> ByteorApplicationRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _originator_id(self, stream_id: str) -> uuid.UUID | str:
        return uuid.UUID(stream_id) if self.originator_id_type == "uuid" else stream_id

    # -- AggregateRecorder ---------------------------------------------------

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> list[int] | None:
        """Append all events in one transaction; returns their notification ids."""
        if not stored_events:
            return None
        appends, order = self._appends(stored_events)
        meta = Metadata(actor=self.actor, tenant_id=self.tenant_id, correlation_id=uuid.uuid4())
        result = self.run(self.store.append(appends, meta))
        # Positions come back in append order; give each input event its own.
        return [result.positions[i] for i in order]

    def _appends(
        self, stored_events: Sequence[StoredEvent]
    ) -> tuple[list[StreamAppend], list[int]]:
        """Group by originator into runs of consecutive versions (one StreamAppend each).

        ``order[i]`` is the index, in the appended rows, of ``stored_events[i]``.
        A repeated or missing version starts a new run, whose expected version
        the store then rejects: that is the library's IntegrityError.
        """
        by_stream: dict[str, list[int]] = {}
        for i, event in enumerate(stored_events):
            by_stream.setdefault(str(event.originator_id), []).append(i)
        appends: list[StreamAppend] = []
        order = [0] * len(stored_events)
        row = 0
        for stream_id, indexes in by_stream.items():
            indexes.sort(key=lambda i: stored_events[i].originator_version)
            run: list[int] = []
            for i in indexes:
                if run and stored_events[i].originator_version != (
                    stored_events[run[-1]].originator_version + 1
                ):
                    appends.append(self._stream_append(stream_id, stored_events, run))
                    run = []
                run.append(i)
                order[i] = row
                row += 1
            appends.append(self._stream_append(stream_id, stored_events, run))
        return appends, order

    def _stream_append(
        self, stream_id: str, stored_events: Sequence[StoredEvent], run: list[int]
    ) -> StreamAppend:
        return StreamAppend(
            stream_id=stream_id,
            stream_type=self.stream_type,
            expected_version=stored_events[run[0]].originator_version - 1,
            events=tuple(
                NewEvent(
                    event_type=stored_events[i].topic,
                    payload=_encode(_State(b64=stored_events[i].state)),
                )
                for i in run
            ),
        )

    def select_events(
        self,
        originator_id: uuid.UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> list[StoredEvent]:
        sql = _SELECT_EVENTS
        args: list[Any] = [str(originator_id), self.stream_type]
        if gt is not None:
            args.append(gt)
            sql += f" AND stream_version > ${len(args)}"
        if lte is not None:
            args.append(lte)
            sql += f" AND stream_version <= ${len(args)}"
        sql += " ORDER BY stream_version DESC" if desc else " ORDER BY stream_version"
        if limit is not None:
            args.append(limit)
            sql += f" LIMIT ${len(args)}"
        rows = self.run(self._fetch(sql, *args))
        return [
            StoredEvent(
                originator_id=originator_id,
                originator_version=r[0],
                topic=r[1],
                state=_decode_state(r[2]).b64,
            )
            for r in rows
        ]

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self.pool.acquire() as conn:
            return await conn.fetch(sql, *args)

    # -- ApplicationRecorder -------------------------------------------------

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> list[Notification]:
        """Settled notifications in id (position) order, from ``start`` to ``stop``."""
        sql = _SELECT_NOTIFICATIONS
        args: list[Any] = [self.stream_type]
        if start is not None:
            args.append(start)
            sql += f" AND position {'>=' if inclusive_of_start else '>'} ${len(args)}"
        if stop is not None:
            args.append(stop)
            sql += f" AND position <= ${len(args)}"
        if topics:
            args.append(list(topics))
            sql += f" AND event_type = ANY(${len(args)}::text[])"
        args.append(limit)
        sql += f" ORDER BY position LIMIT ${len(args)}"
        rows = self.run(self._fetch(sql, *args))
        return [
            Notification(
                id=r[0],
                originator_id=self._originator_id(r[1]),
                originator_version=r[2],
                topic=r[3],
                state=_decode_state(r[4]).b64,
            )
            for r in rows
        ]

    def max_notification_id(self) -> int | None:
        rows = self.run(self._fetch(_MAX_NOTIFICATION_ID, self.stream_type))
        return rows[0][0]  # type: ignore[no-any-return]

    def subscribe(self, gt: int | None = None, topics: Sequence[str] = ()) -> FeedSubscription:
        """Follow the commit-ordered feed after notification ``gt`` (see FeedSubscription)."""
        subscription = FeedSubscription(self, gt=gt, topics=topics)
        with self._lock:
            self._subscriptions.add(subscription)
        return subscription

    def _forget(self, subscription: FeedSubscription) -> None:
        with self._lock:
            self._subscriptions.discard(subscription)


class FeedSubscription(Subscription[ByteorApplicationRecorder]):
    """Notifications in feed order, (transaction id, position), never skipping one.

    Unlike an id-ordered follower, this never passes over an event whose
    transaction drew a lower position but committed later: such an event comes
    after the ones already yielded, so ids are ascending within a transaction
    but not necessarily across transactions. ``gt`` is resumed from the feed
    cursor of that notification; if no such event exists, the feed is read from
    its start and only ids above ``gt`` are yielded. NOTIFY wakes the reader;
    it polls every ``poll_interval`` seconds otherwise.
    """

    def __init__(
        self,
        recorder: ByteorApplicationRecorder,
        gt: int | None = None,
        topics: Sequence[str] = (),
        *,
        page_size: int = 500,
        poll_interval: float = 0.2,
    ) -> None:
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        self._page_size = page_size
        self._poll_interval = poll_interval
        self._topics_set = frozenset(topics)
        self._buffer: deque[Notification] = deque()
        self._feed = PgFeed(recorder.pool, listen_dsn=recorder.dsn)
        self._above = 0
        self._cursor = START
        if gt:
            found = recorder.run(self._feed.cursor_of(gt))
            if found is None:
                self._above = gt
            else:
                self._cursor = found

    def stop(self) -> None:
        first = not self._has_been_stopped
        super().stop()
        if first:
            self._close_feed()
            self._recorder._forget(self)

    def _close_feed(self) -> None:
        if not self._recorder._runner.loop.is_closed():
            self._recorder.run(self._feed.close())

    def __next__(self) -> Notification:
        recorder = self._recorder
        while not self._has_been_stopped:
            if self._buffer:
                return self._buffer.popleft()
            events = recorder.run(self._feed.read_after(self._cursor, self._page_size))
            if events:
                self._cursor = events[-1].cursor
                self._buffer.extend(
                    Notification(
                        id=e.position,
                        originator_id=recorder._originator_id(e.stream_id),
                        originator_version=e.stream_version,
                        topic=e.event_type,
                        state=_decode_state(e.payload).b64,
                    )
                    for e in events
                    if e.stream_type == recorder.stream_type
                    and e.position > self._above
                    and (not self._topics_set or e.event_type in self._topics_set)
                )
            else:
                recorder.run(self._feed.wait_for_change(self._poll_interval))
        # stop() may have raced with a wait that reopened the LISTEN connection.
        self._close_feed()
        raise StopIteration


class Factory(InfrastructureFactory[TrackingRecorder]):
    """Lets an ``eventsourcing`` Application persist into our store.

    Selected with ``PERSISTENCE_MODULE=ops.esrecorder``; reads the database from
    ``BYTEOR_CLOUD_DATABASE_URL`` (optionally prefixed with the application's
    name, as the library does for every setting), the stream type from
    ``BYTEOR_ES_STREAM_TYPE`` and ``ORIGINATOR_ID_TYPE`` (``uuid`` or ``text``).
    """

    DATABASE_URL = "BYTEOR_CLOUD_DATABASE_URL"
    STREAM_TYPE = "BYTEOR_ES_STREAM_TYPE"
    ORIGINATOR_ID_TYPE = "ORIGINATOR_ID_TYPE"

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        self._recorders: list[ByteorApplicationRecorder] = []

    def application_recorder(self) -> ByteorApplicationRecorder:
        dsn = self.env.get(self.DATABASE_URL)
        if not dsn:
            raise InfrastructureFactoryError(f"{self.DATABASE_URL} is not set")
        id_type = self.env.get(self.ORIGINATOR_ID_TYPE, "uuid").lower()
        if id_type not in ("uuid", "text"):
            raise InfrastructureFactoryError(f"{self.ORIGINATOR_ID_TYPE} must be uuid or text")
        recorder = ByteorApplicationRecorder(
            dsn,
            stream_type=self.env.get(self.STREAM_TYPE, STREAM_TYPE),
            originator_id_type="uuid" if id_type == "uuid" else "text",
        )
        self._recorders.append(recorder)
        return recorder

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        if purpose == "events":
            return self.application_recorder()
        raise InfrastructureFactoryError(
            f"{purpose} are not supported: the event store rejects stream version gaps"
        )

    def tracking_recorder(
        self, tracking_recorder_class: type[TrackingRecorder] | None = None
    ) -> TrackingRecorder:
        raise InfrastructureFactoryError("tracking recorders are not supported by ops.esrecorder")

    def process_recorder(self) -> ProcessRecorder:
        raise InfrastructureFactoryError("process recorders are not supported by ops.esrecorder")

    def close(self) -> None:
        for recorder in self._recorders:
            recorder.close()
        self._recorders.clear()


__all__ = ["ByteorApplicationRecorder", "Factory", "FeedSubscription"]
