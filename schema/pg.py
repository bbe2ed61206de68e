"""Connection settings shared by every process that talks to the database.

The write side, the projections and the workers may not import one another,
so what they share about connections lives here, beside the migrations.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# Every session is bounded: an open transaction holds back the feed horizon,
# so none may linger (ARCHITECTURE.md, "Every transaction is bounded").
SESSION_SETTINGS = {
    "statement_timeout": "15000",
    "lock_timeout": "5000",
    "idle_in_transaction_session_timeout": "10000",
}

APP_ROLE = "byteor_app"

# A session, whether opened directly or borrowed from a pool.
Connection: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"


class DatabaseUnavailable(RuntimeError):
    """PostgreSQL could not be reached."""


async def init_connection(conn: asyncpg.Connection) -> None:
    # json and jsonb as raw bytes both ways: payloads are already msgspec-encoded
    # JSON, so skip str round trips (binary json is the text itself; binary jsonb
    # is a version byte plus the text).
    await conn.set_type_codec(
        "json", schema="pg_catalog", encoder=_same, decoder=_same, format="binary"
    )
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        encoder=lambda b: b"\x01" + b,
        decoder=lambda b: b[1:],
        format="binary",
    )


def _same(value: bytes) -> bytes:
    return value


async def _keep_session(conn: Connection) -> None:
    """Release hook: no reset query.

    asyncpg's default reset (``RESET ALL; UNLISTEN *; pg_advisory_unlock_all()
    ...``) costs a round trip on every release, about a third of an append.
    Pooled sessions never change session state: LISTEN and advisory-lock leases
    run on their own connections (``connect`` below). asyncpg still ends any
    open transaction before it runs this hook.
    """
    del conn


def session_settings(role: str | None, application_name: str) -> dict[str, str]:
    settings = dict(SESSION_SETTINGS, application_name=application_name)
    if role:
        settings["role"] = role
    return settings


async def create_pool(
    dsn: str,
    *,
    role: str | None = APP_ROLE,
    min_size: int = 2,
    max_size: int = 20,
    application_name: str = "byteor-cloud",
) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            server_settings=session_settings(role, application_name),
            init=init_connection,
            reset=_keep_session,
            command_timeout=30,
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
    assert pool is not None
    return pool


async def connect(
    dsn: str, *, role: str | None = APP_ROLE, application_name: str = "byteor-cloud"
) -> asyncpg.Connection:
    """A single session with the same settings as the pools (LISTEN, leases)."""
    try:
        conn = await asyncpg.connect(dsn, server_settings=session_settings(role, application_name))
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
    await init_connection(conn)
    return conn
