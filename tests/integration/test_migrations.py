"""The migration runner: in order, once, recorded with checksums, refusing drift."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

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
