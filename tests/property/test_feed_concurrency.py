"""Concurrent writers, random in-transaction delays and rollbacks, one tailing
reader: it must see every committed event exactly once, in feed order, and
never an event whose transaction rolled back (real Postgres)."""

from __future__ import annotations

import asyncio
import random
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commands.pgstore import PgEventStore
from domain.envelope import START, Actor, Cursor, Metadata, NewEvent, StreamAppend
from projections.feed import PgFeed

# One writer's plan: per transaction, (events in it, delay inside it in ms, roll back?)
transactions = st.tuples(st.integers(1, 4), st.integers(0, 15), st.booleans())
writer_plans = st.lists(st.lists(transactions, min_size=1, max_size=6), min_size=2, max_size=8)


async def run_scenario(pool, plans: list[list[tuple[int, int, bool]]], seed: int) -> None:
    store = PgEventStore(pool)
    feed = PgFeed(pool)
    run_id = uuid.uuid4().hex[:8]
    committed: set[uuid.UUID] = set()
    rolled_back: set[uuid.UUID] = set()
    writers_done = asyncio.Event()
    rng = random.Random(seed)
    start = await feed.head()

    class Rollback(Exception):
        pass

    async def writer(w: int, plan: list[tuple[int, int, bool]]) -> None:
        for t, (count, delay_ms, rollback) in enumerate(plan):
            ids = [uuid.uuid4() for _ in range(count)]
            events = tuple(NewEvent(event_type="p.e", payload=b"{}", event_id=i) for i in ids)
            append = StreamAppend(
                stream_id=f"{run_id}-{w}-{t}", stream_type="p", expected_version=0, events=events
            )
            meta = Metadata(
                actor=Actor(kind="system", id="p"), tenant_id=None, correlation_id=uuid.uuid4()
            )
            async with pool.acquire() as conn:
                try:
                    async with conn.transaction():
                        await asyncio.sleep(rng.random() * delay_ms / 2000)
                        await store.append([append], meta, conn=conn)
                        await asyncio.sleep(delay_ms / 1000)
                        if rollback:
                            raise Rollback
                except Rollback:
                    rolled_back.update(ids)
                else:
                    committed.update(ids)

    seen: list = []

    async def reader() -> None:
        cursor: Cursor = start
        idle_after_done = 0
        while idle_after_done < 3:
            batch = await feed.read_after(cursor, 7)
            if batch:
                seen.extend(batch)
                cursor = batch[-1].cursor
                continue
            if writers_done.is_set():
                idle_after_done += 1
            await asyncio.sleep(0.002)

    read_task = asyncio.create_task(reader())
    await asyncio.gather(*(writer(w, p) for w, p in enumerate(plans)))
    writers_done.set()
    await read_task

    ids = [e.event_id for e in seen if e.stream_id.startswith(run_id)]
    assert len(ids) == len(set(ids)), "an event was delivered twice"
    assert set(ids) == committed, "a committed event was missed or a foreign one appeared"
    assert not (set(ids) & rolled_back), "a rolled-back event was delivered"
    cursors = [e.cursor for e in seen]
    assert cursors == sorted(cursors), "events were delivered out of feed order"
    assert all(c > START for c in cursors)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plans=writer_plans, seed=st.integers(0, 2**32))
async def test_tailing_reader_sees_each_committed_event_once_in_order(pool, plans, seed) -> None:
    await run_scenario(pool, plans, seed)
