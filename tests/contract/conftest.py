from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from commands.memstore import MemoryEventStore
from commands.pgstore import PgEventStore
from projections.feed import PgFeed
from schema.pg import LeanPool


class PgHarness:
    """A Postgres-backed store together with its feed."""

    def __init__(self, pool: asyncpg.Pool, dsn: str) -> None:
        self.store = PgEventStore(pool)
        self.feed = PgFeed(pool, listen_dsn=dsn)


class MemoryHarness:
    def __init__(self) -> None:
        self.store = MemoryEventStore()
        self.feed = self.store


@pytest.fixture
async def pg_harness(pool: asyncpg.Pool, database: str) -> AsyncIterator[PgHarness]:
    h = PgHarness(pool, database)
    yield h
    await h.feed.close()


@pytest.fixture
async def lean_harness(pool: asyncpg.Pool, database: str) -> AsyncIterator[PgHarness]:
    lean = LeanPool(database, size=12)
    h = PgHarness(pool, database)
    # As the services run it: one-event appends share commits. One group in
    # flight at a time, so concurrent appends in these tests do meet in groups.
    h.store = PgEventStore(lean, group_commit=True)
    assert h.store.group is not None
    h.store.group.max_inflight = 1
    yield h
    await h.feed.close()
    await h.store.close()


@pytest.fixture(params=["memory", "postgres", "postgres_lean_pool"])
def harness(request: pytest.FixtureRequest) -> PgHarness | MemoryHarness:
    # Sync on purpose: it only picks an implementation; the async fixtures it
    # asks for are run by pytest-asyncio outside any running loop.
    if request.param == "memory":
        return MemoryHarness()
    if request.param == "postgres_lean_pool":
        return request.getfixturevalue("lean_harness")  # type: ignore[no-any-return]
    return request.getfixturevalue("pg_harness")  # type: ignore[no-any-return]
