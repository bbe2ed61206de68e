"""The migration runner: in order, once, recorded with checksums, refusing drift."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from uuid import uuid4

import asyncpg
import pytest

from schema.migrate import MigrationError, load_migrations, migrate, migrations_dir, pending
from tests.pgdb import drop_database


@pytest.fixture
def empty_database(pg):  # type: ignore[no-untyped-def]
    name = f"empty_{id(object())}"
    pg.create_database(name)
    dsn = pg.dsn(name)
    yield dsn
    drop_database(pg, dsn)


async def test_migrating_applies_every_file_in_order_then_is_a_no_op(empty_database) -> None:
    conn = await asyncpg.connect(empty_database)
    try:
        applied = await migrate(conn)
        assert [m.version for m in applied] == [m.version for m in load_migrations()]
        assert [m.version for m in applied] == sorted(m.version for m in applied)
        assert await migrate(conn) == []
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations ORDER BY version")
        assert [(r["version"], r["checksum"]) for r in rows] == [
            (m.version, m.checksum) for m in load_migrations()
        ]
    finally:
        await conn.close()


async def test_two_concurrent_migrators_apply_each_file_once(empty_database) -> None:
    conns = [await asyncpg.connect(empty_database) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        assert sorted(len(r) for r in results) == [0, 0, len(load_migrations())]
    finally:
        for c in conns:
            await c.close()


async def test_a_changed_applied_file_is_an_error(empty_database, tmp_path: Path) -> None:
    copy = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), copy)
    conn = await asyncpg.connect(empty_database)
    try:
        await migrate(conn, copy)
        first = sorted(copy.glob("*.sql"))[0]
        first.write_text(first.read_text() + "\n-- edited after it was applied\n")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await migrate(conn, copy)
        with pytest.raises(MigrationError):
            await pending(conn, copy)
    finally:
        await conn.close()


async def test_a_failing_migration_applies_nothing(empty_database, tmp_path: Path) -> None:
    copy = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), copy)
    (copy / "9999_broken.sql").write_text("CREATE TABLE ok_table (id int);\nSELECT no_such_fn();\n")
    conn = await asyncpg.connect(empty_database)
    try:
        with pytest.raises(asyncpg.PostgresError):
            await migrate(conn, copy)
        assert await conn.fetchval("SELECT to_regclass('public.events')") is None
        assert await conn.fetchval("SELECT to_regclass('public.ok_table')") is None
    finally:
        await conn.close()


def test_migration_files_are_numbered_uniquely_and_named_plainly() -> None:
    files = load_migrations()
    assert [m.version for m in files] == list(range(1, len(files) + 1))


async def test_0022_keeps_every_stored_time_and_the_store_writes_after_it(
    empty_database, tmp_path: Path
) -> None:
    """Events written while recorded_us was generated keep it; new appends set it."""
    from commands.pgstore import PgEventStore
    from domain.envelope import Actor, Metadata, NewEvent, StreamAppend
    from schema.pg import create_pool

    before = tmp_path / "before_0022"
    before.mkdir()
    for path in migrations_dir().glob("*.sql"):
        if int(path.name[:4]) < 22:
            shutil.copy(path, before / path.name)
    conn = await asyncpg.connect(empty_database)
    try:
        await migrate(conn, before)
        await conn.execute(
            """
            INSERT INTO events (event_id, stream_id, stream_type, stream_version, event_type,
                                payload, actor_kind, actor_id, correlation_id, recorded_at)
            SELECT gen_random_uuid(), 'old-' || i, 'old', 1, 'old.happened', '{}', 'system',
                   'test', gen_random_uuid(), '2025-06-30 12:00:00+00'::timestamptz
                   + i * interval '1.000001 second'
            FROM generate_series(1, 50) AS i
            """
        )
        old = await conn.fetch("SELECT position, recorded_us FROM events ORDER BY position")
        assert [m.name for m in await migrate(conn)] == [
            m.name for m in load_migrations() if m.version >= 22
        ]
        assert await conn.fetch("SELECT position, recorded_us FROM events ORDER BY position") == old
    finally:
        await conn.close()
    pool = await create_pool(empty_database, min_size=1, max_size=2)
    try:
        meta = Metadata(actor=Actor(kind="system", id="t"), tenant_id=None, correlation_id=uuid4())
        new = StreamAppend(
            stream_id="new-1",
            stream_type="new",
            expected_version=0,
            events=(NewEvent(event_type="new.happened", payload=b"{}"),),
        )
        await PgEventStore(pool).append([new], meta)
        row = await pool.fetchrow(
            "SELECT recorded_us, events_epoch_us(recorded_at) AS expected FROM events "
            "WHERE stream_id = 'new-1'"
        )
        assert row["recorded_us"] == row["expected"]
    finally:
        await pool.close()
