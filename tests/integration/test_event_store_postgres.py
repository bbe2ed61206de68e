"""Postgres-only guarantees of the event store: append-only, the commit horizon,
bounded transactions."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import asyncpg
import msgspec
import pytest

from commands.pgstore import PgEventStore
from domain.envelope import START, Actor, Metadata, NewEvent, StreamAppend
from projections.feed import PgFeed
from schema.pg import connect


def meta() -> Metadata:
    return Metadata(
        actor=Actor(kind="system", id="test"), tenant_id=None, correlation_id=uuid.uuid4()
    )


def put(stream: str, expected: int = 0, n: int = 1) -> StreamAppend:
    events = tuple(NewEvent(event_type="t.e", payload=b'{"i":%d}' % i) for i in range(n))
    return StreamAppend(stream_id=stream, stream_type="t", expected_version=expected, events=events)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET payload = '{}'",
        "DELETE FROM events",
        "TRUNCATE events",
    ],
)
async def test_the_application_role_cannot_change_stored_events(pool, statement: str) -> None:
    await PgEventStore(pool).append([put("s")], meta())
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement)


async def test_even_the_owner_cannot_update_or_delete_events(pool, database: str) -> None:
    await PgEventStore(pool).append([put("s")], meta())
    owner = await asyncpg.connect(database)
    try:
        for statement in ("UPDATE events SET payload = '{}'", "DELETE FROM events"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await owner.execute(statement)
    finally:
        await owner.close()


async def test_feed_waits_for_an_earlier_transaction_that_commits_late(pool, database) -> None:
    """The reason for the horizon: position order is not commit order."""
    store = PgEventStore(pool)
    feed = PgFeed(pool)
    slow = await connect(database)
    try:
        tx = slow.transaction()
        await tx.start()
        early = await store.append([put("early")], meta(), conn=slow)
        late = await store.append([put("late")], meta())
        assert early.last_position < late.last_position
        # "late" has committed, but an older transaction is still open: the feed
        # must not hand out "late" yet, or a reader would later miss "early".
        assert await feed.read_after(START, 10) == []
        await tx.commit()
        seen = await feed.read_after(START, 10)
        assert [e.stream_id for e in seen] == ["early", "late"]
    finally:
        await slow.close()


async def test_feed_never_returns_events_of_a_rolled_back_transaction(pool, database) -> None:
    store = PgEventStore(pool)
    feed = PgFeed(pool)
    conn = await connect(database)
    try:
        tx = conn.transaction()
        await tx.start()
        await store.append([put("doomed")], meta(), conn=conn)
        await tx.rollback()
    finally:
        await conn.close()
    await store.append([put("kept")], meta())
    assert [e.stream_id for e in await feed.read_after(START, 10)] == ["kept"]


class _CountingFeed(PgFeed):
    """Notes each page query as it is sent (the fetch runs up to its first wait)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.sent: list[int] = []

    async def _rows_after(self, cursor, limit):  # type: ignore[no-untyped-def]
        self.sent.append(cursor.position)
        return await super()._rows_after(cursor, limit)


async def test_pages_ask_for_the_next_page_before_handing_out_this_one(pool) -> None:
    """A catching-up reader's page is decoded while the server reads the next one.

    The caller works through a page without suspending, so the read-ahead must
    have run before the page is handed out, or it only starts once the caller
    is done with the page and the pipelining is lost.
    """
    await PgEventStore(pool).append([put(f"s{i}", n=3) for i in range(10)], meta())
    feed = _CountingFeed(pool)
    async with contextlib.aclosing(feed.pages(START, 10)) as pages:
        first = await anext(pages)
        assert len(first) == 10
        assert feed.sent == [START.position, first[-1].position]
        rest = [event async for page in pages for event in page]
    assert [e.position for e in first + rest] == sorted({e.position for e in first + rest})
    assert len(rest) == 20
    # The third page is full too, so one more (empty) page is asked for.
    assert len(feed.sent) == 4


async def test_an_idle_open_transaction_is_ended_by_the_server(database: str) -> None:
    conn = await connect(database)
    try:
        await conn.execute("SET idle_in_transaction_session_timeout = '200ms'")
        await conn.execute("BEGIN")
        await conn.execute("SELECT 1")
        await asyncio.sleep(0.6)
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
            await conn.execute("SELECT 1")
    finally:
        await conn.close()


async def test_sessions_carry_bounded_timeouts(pool) -> None:
    async with pool.acquire() as conn:
        for name in ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout"):
            assert await conn.fetchval(f"SHOW {name}") not in ("0", "0ms")
        assert await conn.fetchval("SELECT current_user") == "byteor_app"


async def test_every_append_path_stores_recorded_us_in_step_with_recorded_at(
    pool, database: str
) -> None:
    """recorded_us is written by the store's statements, not generated (migration 0022)."""
    from datetime import UTC, datetime

    from commands.pgstore import open_store
    from commands.store import IdempotencyClaim
    from domain.envelope import to_us

    given = datetime(2024, 2, 29, 23, 59, 59, 999_999, tzinfo=UTC)
    solo, grouped = PgEventStore(pool), open_store(database, size=4)
    try:
        await solo.append([put("solo")], meta())  # the one-event statement
        await solo.append([put("many", n=3)], meta())  # the general statement
        await solo.append(  # the general statement, with an idempotency record
            [put("idem")],
            meta(),
            idempotency=IdempotencyClaim(
                principal="p", key="k", request_hash="h", status_code=201, body=b"{}"
            ),
        )
        await asyncio.gather(*(grouped.append([put(f"group-{i}")], meta()) for i in range(8)))
        at_given = msgspec.structs.replace(meta(), recorded_at=given)
        await solo.append([put("given")], at_given)
        await asyncio.gather(*(grouped.append([put(f"given-{i}")], at_given) for i in range(8)))
    finally:
        await grouped.close()
    rows = await pool.fetch(
        "SELECT stream_id, recorded_at, recorded_us, events_epoch_us(recorded_at) AS expected "
        "FROM events"
    )
    assert len(rows) == 1 + 3 + 1 + 8 + 1 + 8
    for row in rows:
        assert row["recorded_us"] == row["expected"] == to_us(row["recorded_at"]), row["stream_id"]
    given_rows = [r for r in rows if r["stream_id"].startswith("given")]
    assert [r["recorded_us"] for r in given_rows] == [to_us(given)] * 9


@pytest.mark.parametrize(
    ("column", "value"),
    [("actor_kind", "'robot'"), ("stream_version", "-1")],
)
async def test_the_events_rules_hold_for_any_insert(pool, column: str, value: str) -> None:
    """The actor kinds and the version floor are domains (migration 0022), still enforced."""
    good = {
        "event_id": "gen_random_uuid()",
        "stream_id": "'s'",
        "stream_type": "'t'",
        "stream_version": "1",
        "event_type": "'t.e'",
        "payload": "'{}'",
        "actor_kind": "'user'",
        "actor_id": "'u'",
        "correlation_id": "gen_random_uuid()",
        "recorded_us": "0",
    }

    def insert(values: dict[str, str]) -> str:
        return f"INSERT INTO events ({', '.join(values)}) VALUES ({', '.join(values.values())})"

    async with pool.acquire() as conn:
        await conn.execute(insert(good))
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(insert(good | {"stream_id": "'s2'", column: value}))
    assert await pool.fetchval("SELECT count(*) FROM events") == 1
