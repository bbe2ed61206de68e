from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from commands.memstore import MemoryEventStore
from commands.pgstore import PgEventStore
from projections.feed import PgFeed
from schema.pg import create_pool
from tests.pgdb import drop_database, ensure_template, fresh_database


@pytest.fixture(scope="session")
def pg_template(pg):  # type: ignore[no-untyped-def]
    return ensure_template(pg)


@pytest.fixture
def database(pg, pg_template) -> Iterator[str]:  # type: ignore[no-untyped-def]
    dsn = fresh_database(pg)
    yield dsn
    drop_database(pg, dsn)


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database, min_size=1, max_size=12)
    yield pool
    await pool.close()


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


@pytest.fixture(params=["memory", "postgres"])
def harness(request: pytest.FixtureRequest) -> PgHarness | MemoryHarness:
    # Sync on purpose: it only picks an implementation; the async fixtures it
    # asks for are run by pytest-asyncio outside any running loop.
    if request.param == "memory":
        return MemoryHarness()
    return request.getfixturevalue("pg_harness")  # type: ignore[no-any-return]


# TEMPORARY until tests/conftest.py provides the session-scoped `pg`.
@pytest.fixture(scope="session")
def pg(tmp_path_factory):  # type: ignore[no-untyped-def]
    from ops.services.base import free_port
    from ops.services.postgres import Postgres

    server = Postgres(
        tmp_path_factory.mktemp("pg"),
        free_port(),
        settings={"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"},
    )
    server.start()
    yield server
    server.stop()
