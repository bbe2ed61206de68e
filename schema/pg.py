"""Connection settings shared by every process that talks to the database.

The write side, the projections and the workers may not import one another,
so what they share about connections lives here, beside the migrations.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
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
    # JSON, so skip str round trips. Binary json is the text itself, so json
    # uses asyncpg's own bytea codec: no Python call per value, which a tail
    # read would pay on every row. Binary jsonb is a version byte plus the text.
    await conn.set_builtin_type_codec("json", schema="pg_catalog", codec_name="bytea")
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        encoder=lambda b: b"\x01" + b,
        decoder=lambda b: b[1:],
        format="binary",
    )


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


class LeanPool:
    """A minimal pool for single-statement work: the event store's hot path.

    asyncpg's pool costs ~45 µs per acquire/release on this hardware (its
    bookkeeping, timeouts and reset hook), about half of a whole local
    round trip; an append is one statement in autocommit, so none of that
    bookkeeping is needed. Connections here never carry session state; one
    that fails or is interrupted mid-statement is terminated, not reused, so
    a half-read protocol stream is never handed to the next caller.
    """

    def __init__(
        self,
        dsn: str,
        *,
        size: int = 10,
        role: str | None = APP_ROLE,
        application_name: str = "byteor-cloud",
    ) -> None:
        self.dsn = dsn
        self.size = size
        self.role = role
        self.application_name = application_name
        self._idle: list[asyncpg.Connection] = []
        self._opened = 0
        self._waiters: list[asyncio.Future[None]] = []
        self._closed = False

    async def _take(self) -> asyncpg.Connection:
        while True:
            if self._closed:
                raise DatabaseUnavailable("the pool is closed")
            if self._idle:
                return self._idle.pop()
            if self._opened < self.size:
                self._opened += 1
                try:
                    return await connect(
                        self.dsn, role=self.role, application_name=self.application_name
                    )
                except BaseException:
                    self._opened -= 1
                    self._wake()
                    raise
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                # Woken and cancelled at once: hand the wake-up on, or a
                # connection could sit idle while another caller waits.
                if waiter.done() and not waiter.cancelled():
                    self._wake()
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return

    def _give_back(self, conn: asyncpg.Connection, healthy: bool) -> None:
        if healthy and not self._closed and not conn.is_closed() and not conn.is_in_transaction():
            self._idle.append(conn)
        else:
            conn.terminate()
            self._opened -= 1
        self._wake()

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        conn = await self._take()
        try:
            yield conn
        except asyncpg.PostgresError:
            # The server answered with an error: the session is in sync, keep it.
            self._give_back(conn, healthy=True)
            raise
        except BaseException:
            # Cancelled or I/O failure mid-statement: the stream may be half read.
            self._give_back(conn, healthy=False)
            raise
        self._give_back(conn, healthy=True)

    async def execute(self, query: str, *args: Any) -> str:
        async with self.acquire() as conn:
            result: str = await conn.execute(query, *args)
            return result

    async def fetchrow(self, query: str, *args: Any) -> Any:
        """One statement, one row: ``acquire`` without the context manager's cost."""
        conn = await self._take()
        try:
            row = await conn.fetchrow(query, *args)
        except asyncpg.PostgresError:
            self._give_back(conn, healthy=True)
            raise
        except BaseException:
            self._give_back(conn, healthy=False)
            raise
        self._give_back(conn, healthy=True)
        return row

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            self._opened -= 1
            with contextlib.suppress(Exception):
                await conn.close(timeout=5)
        self._wake()


# Either pool answers the single-statement calls (fetchrow, execute) that
# authentication, rate limiting and the event store make on every request.
AnyPool: TypeAlias = "asyncpg.Pool | LeanPool"
