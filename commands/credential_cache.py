"""Credentials an API process has looked up, kept while nothing can have changed them.

An authenticated request otherwise costs one round trip before its handler
runs: the credential's row and its rate-limit permit (commands/ratelimit.py).
With this cache and a rate-limit lease (``LeaseBook``) a process answers a
client's repeated requests without one: the credential from here, the permit
from the lease. Decision 0014 weighs it.

What keeps it honest:

- It is used only while its LISTEN connection on ``byteor_credentials`` is up.
  Every statement that revokes, expires, narrows or deletes a credential fires
  that notification at commit (triggers, schema/migrations/0021), and every
  notification empties the cache. When the connection drops, the cache empties
  and stays off until it is back, so no notification can be missed unnoticed.
- Code in this process that revokes a credential also calls
  :func:`forget_credentials`, so the next request here sees the change at once
  rather than when the notification arrives.
- A lookup that started before an emptying does not store what it read
  (``generation``): it may have read the row as it was before the change.
- Entries live ``max_age_s`` at most (default 10 s), a bound should all else fail;
  under steady traffic the credential is re-read at each lease refill anyway.
- Expiry is judged on every request, by the authenticator's clock.

Only live credentials are stored, keyed by family and token hash; the token
itself is never kept. Enrollment tokens are never cached: each is spent once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

import asyncpg

from commands.ratelimit import LeaseBook
from schema.pg import APP_ROLE, DatabaseUnavailable, connect

CHANNEL = "byteor_credentials"

log = logging.getLogger("byteor.credentials")

_CACHES: weakref.WeakSet[CredentialCache] = weakref.WeakSet()


def forget_credentials() -> None:
    """Empty every credential cache of this process (a credential was just changed here)."""
    for cache in list(_CACHES):
        cache.clear()


class CredentialCache:
    def __init__(
        self,
        listen_dsn: str,
        *,
        role: str | None = APP_ROLE,
        max_age_s: float = 10.0,
        max_entries: int = 10_000,
        leases: LeaseBook | None = None,
        clock: Callable[[], float] = time.monotonic,
        retry_s: float = 1.0,
    ) -> None:
        self.listen_dsn = listen_dsn
        self.role = role
        self.max_age_s = max_age_s
        self.max_entries = max_entries
        self.leases = leases if leases is not None else LeaseBook()
        self.clock = clock
        self.retry_s = retry_s
        self.generation = 0
        self._entries: dict[tuple[str, bytes], tuple[float, Any]] = {}
        self._listener: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        _CACHES.add(self)

    @property
    def active(self) -> bool:
        listener = self._listener
        return listener is not None and not listener.is_closed()

    def get(self, family: str, digest: bytes) -> Any | None:
        if not self.active:
            return None
        entry = self._entries.get((family, digest))
        if entry is None:
            return None
        stored_at, record = entry
        if self.clock() - stored_at >= self.max_age_s:
            del self._entries[(family, digest)]
            return None
        return record

    def put(self, family: str, digest: bytes, record: Any, generation: int) -> None:
        """Keep ``record`` unless the cache was emptied since ``generation`` was read."""
        if generation != self.generation or not self.active:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[(family, digest)] = (self.clock(), record)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    # --- the invalidation channel ---------------------------------------------------------

    async def start(self) -> None:
        """Listen in the background (reconnecting); returns once listening or after a
        first failed attempt, so an API whose database is briefly away still starts."""
        if self._task is None:
            self._task = asyncio.create_task(self._listen_forever(), name="credential-cache")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), 5.0)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close_listener()

    async def _listen_forever(self) -> None:
        while True:
            try:
                conn = await connect(
                    self.listen_dsn, role=self.role, application_name="byteor-credential-cache"
                )
            except DatabaseUnavailable as exc:
                log.warning("credential cache off: cannot listen", extra={"error": str(exc)})
                self._connected.set()  # start() need not wait for a database that is away
                await asyncio.sleep(self.retry_s)
                continue
            lost = asyncio.Event()
            try:
                await conn.add_listener(CHANNEL, self._on_notify)
                conn.add_termination_listener(_setter(lost))
                # Whatever changed while nobody listened is unknown: start empty.
                self.clear()
                self._listener = conn
                self._connected.set()
                # A dropped connection is noticed by the termination callback or,
                # should that not come, by polling (``active`` is off either way).
                while not lost.is_set() and not conn.is_closed():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), 1.0)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("credential cache listener failed", extra={"error": str(exc)})
            finally:
                self._listener = None
                self.clear()
                with contextlib.suppress(Exception):
                    await conn.close(timeout=1)
            await asyncio.sleep(self.retry_s)

    def _on_notify(self, *_: object) -> None:
        self.clear()

    async def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        self.clear()
        if listener is not None and not listener.is_closed():
            with contextlib.suppress(Exception):
                await listener.close(timeout=1)


def _setter(event: asyncio.Event) -> Callable[[object], None]:
    def set_event(_conn: object) -> None:
        event.set()

    return set_event
