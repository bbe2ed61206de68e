"""Apply the numbered SQL files in ``schema/migrations`` in order.

All pending files run in one transaction under an advisory lock, so two
processes starting at once neither race nor half-apply. Each applied file is
recorded with its SHA-256; if an applied file later changes, migrating fails
instead of silently diverging from what the database holds.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import asyncpg

from schema.pg import Connection

# Arbitrary but fixed: identifies "the migration runner" among advisory locks.
MIGRATION_LOCK_KEY = 0x6279_7465_6F72_0001
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """The migration files or the recorded history are inconsistent."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations_dir() -> Path:
    return Path(str(resources.files("schema") / "migrations"))


def load_migrations(directory: Path | None = None) -> list[Migration]:
    directory = directory or migrations_dir()
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migration files share a number")
    return found


async def applied_versions(conn: Connection) -> dict[int, str]:
    exists = await conn.fetchval("SELECT to_regclass('public.schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
    return {int(r["version"]): str(r["checksum"]) for r in rows}


async def pending(conn: Connection, directory: Path | None = None) -> list[Migration]:
    """Migrations not yet applied; raises if an applied one was changed or is missing."""
    files = load_migrations(directory)
    applied = await applied_versions(conn)
    by_version = {m.version: m for m in files}
    for version, checksum in applied.items():
        migration = by_version.get(version)
        if migration is None:
            raise MigrationError(f"migration {version:04d} is applied but its file is gone")
        if migration.checksum != checksum:
            raise MigrationError(
                f"migration {version:04d}_{migration.name} changed after it was applied "
                f"(recorded {checksum[:12]}, file {migration.checksum[:12]})"
            )
    return [m for m in files if m.version not in applied]


async def migrate(conn: Connection, directory: Path | None = None) -> list[Migration]:
    """Apply every pending migration; returns what was applied (empty when up to date)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version    integer     PRIMARY KEY,
                name       text        NOT NULL,
                checksum   text        NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        todo = await pending(conn, directory)
        for migration in todo:
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
        await conn.execute("GRANT SELECT ON schema_migrations TO byteor_app")
    return todo


async def migrate_dsn(dsn: str, directory: Path | None = None) -> list[Migration]:
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate(conn, directory)
    finally:
        await conn.close()


async def is_up_to_date(conn: Connection) -> bool:
    """For /readyz: every migration file is applied and none changed."""
    try:
        return not await pending(conn)
    except MigrationError:
        return False
