"""The credential cache and rate-limit leases, through the API in process.

What must hold: a cached credential is never honoured after a revocation a
process could know of (its own at once, another's as soon as the notification
arrives), the cache is off whenever its listener is, an expired credential is
refused from the cache too, and leases spent in several processes never admit
more than the limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

import commands.auth as auth_mod
from commands.credential_cache import CredentialCache
from commands.ratelimit import LeaseBook, RateLimits
from ops.app import create_app
from projections.feed import PgFeed

HUGE = RateLimits(default=1_000_000, auth=1_000_000, enrollment=1_000_000)


class Lookups:
    """Counts the personal-access-token lookups that reach the database."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = auth_mod.lookup_token

        async def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
            self.count += 1
            return await real(*args, **kwargs)

        monkeypatch.setattr(auth_mod, "lookup_token", counting)


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> Lookups:
    return Lookups(monkeypatch)


async def _client(
    pool: asyncpg.Pool,
    cache: CredentialCache,
    limits: RateLimits = HUGE,
    clock: Callable[[], datetime] | None = None,
) -> httpx.AsyncClient:
    extra = {"clock": clock} if clock is not None else {}
    app = create_app(pool, PgFeed(pool), rate_limits=limits, credential_cache=cache, **extra)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@pytest.fixture
async def cache(database: str) -> AsyncIterator[CredentialCache]:
    cache = CredentialCache(database, retry_s=0.1)
    await cache.start()
    assert cache.active
    yield cache
    await cache.stop()


@pytest.fixture
async def cached_client(pool, cache) -> AsyncIterator[httpx.AsyncClient]:
    async with await _client(pool, cache) as c:
        yield c


async def _until(predicate: Callable[[], bool], within_s: float = 3.0) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > within_s:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)
    return time.monotonic() - started


async def test_a_repeated_credential_skips_the_lookup(cached_client, bootstrap, lookups) -> None:
    auth, _ = await bootstrap.user("ada@example.com", "Ada's")
    for _ in range(60):
        r = await cached_client.get("/api/v1/me", headers=auth)
        assert r.status_code == 200, r.text
        assert int(r.headers["X-RateLimit-Remaining"]) > 0
    # The first request and the lease refills (1, 2, 4, 8, 16, 32 units) read it.
    assert lookups.count <= 8, lookups.count


async def test_a_revocation_by_another_process_ends_a_cached_credential(
    cached_client, cache, bootstrap, pool
) -> None:
    auth, _ = await bootstrap.user("ada@example.com", "Ada's")
    for _ in range(20):
        assert (await cached_client.get("/api/v1/me", headers=auth)).status_code == 200
    assert len(cache) == 1
    # Another API process (or an operator) revokes it: only the notification tells us.
    await pool.execute("UPDATE personal_access_tokens SET revoked_at = now()")
    await _until(lambda: len(cache) == 0, within_s=1.0)
    r = await cached_client.get("/api/v1/me", headers=auth)
    assert r.status_code == 401, r.text


async def test_a_revocation_in_this_process_holds_on_the_very_next_request(
    cached_client, bootstrap
) -> None:
    auth, _ = await bootstrap.user("ada@example.com", "Ada's")
    made = (await cached_client.post("/api/v1/tokens", json={"name": "ci"}, headers=auth)).json()
    second = {"Authorization": f"Bearer {made['token']}"}
    for _ in range(10):
        assert (await cached_client.get("/api/v1/me", headers=second)).status_code == 200
    r = await cached_client.delete(f"/api/v1/tokens/{made['id']}", headers=auth)
    assert r.status_code == 204, r.text
    r = await cached_client.get("/api/v1/me", headers=second)
    assert r.status_code == 401, r.text


async def test_an_expired_credential_is_refused_from_the_cache(pool, cache, bootstrap) -> None:
    now = [datetime.now(UTC)]
    async with await _client(pool, cache, clock=lambda: now[0]) as c:
        auth, _ = await bootstrap.user("ada@example.com", "Ada's")
        expires = (now[0] + timedelta(minutes=5)).isoformat()
        made = (
            await c.post("/api/v1/tokens", json={"name": "s", "expires_at": expires}, headers=auth)
        ).json()
        short = {"Authorization": f"Bearer {made['token']}"}
        for _ in range(5):
            assert (await c.get("/api/v1/me", headers=short)).status_code == 200
        assert len(cache) >= 1
        now[0] += timedelta(minutes=6)
        assert (await c.get("/api/v1/me", headers=short)).status_code == 401


async def test_the_cache_is_off_while_its_listener_is_down(
    cached_client, cache, bootstrap, database, lookups
) -> None:
    auth, _ = await bootstrap.user("ada@example.com", "Ada's")
    assert (await cached_client.get("/api/v1/me", headers=auth)).status_code == 200
    admin = await asyncpg.connect(database)  # the cluster's superuser, as an operator
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'byteor-credential-cache' AND datname = current_database()"
        )
    finally:
        await admin.close()
    assert killed == 1
    # ``active`` turns off as soon as the connection is closed; the listener task
    # empties the cache when it notices, a moment later (CI once saw that moment).
    # In between, ``get`` already answers nothing: the lookups below show it.
    await _until(lambda: not cache.active and len(cache) == 0)
    before = lookups.count
    for _ in range(5):
        assert (await cached_client.get("/api/v1/me", headers=auth)).status_code == 200
    assert lookups.count - before == 5  # every request looked its credential up
    # It comes back by itself, empty.
    await _until(lambda: cache.active)
    assert (await cached_client.get("/api/v1/me", headers=auth)).status_code == 200


async def test_leases_in_two_processes_admit_no_more_than_the_limit(
    pool, database, bootstrap, lookups
) -> None:
    limit = 200
    limits = RateLimits(default=limit, auth=limit, window_s=60)
    caches = [CredentialCache(database, leases=LeaseBook()) for _ in range(2)]
    for cache in caches:
        await cache.start()
    try:
        auth, _ = await bootstrap.user("ada@example.com", "Ada's")
        clients = [await _client(pool, cache, limits) for cache in caches]
        statuses: list[int] = []

        async def hammer(c: httpx.AsyncClient, n: int) -> None:
            for _ in range(n):
                statuses.append((await c.get("/api/v1/me", headers=auth)).status_code)

        # Half the limit: all admitted, most from a lease.
        await asyncio.gather(*(hammer(c, 25) for c in clients for _ in range(2)))
        assert statuses.count(200) == 100
        assert lookups.count < 50, lookups.count
        # Then far past it.
        await asyncio.gather(*(hammer(c, 125) for c in clients for _ in range(2)))
        for c in clients:
            await c.aclose()
    finally:
        for cache in caches:
            await cache.stop()
    admitted = statuses.count(200)
    assert set(statuses) <= {200, 429}
    assert admitted <= limit
    # Units left in a lease when its bucket ended were counted for nothing: at
    # most a lease (limit // 32 = 6) per process and bucket the burst spanned.
    assert admitted >= limit - 2 * 6 * 3, admitted
