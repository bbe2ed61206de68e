"""Rate limits through the API (in process) and the shared store underneath."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from commands.problems import PROBLEM_JSON
from commands.ratelimit import PgRateLimiter, RateLimits
from ops.app import create_app
from projections.feed import PgFeed

LIMITS = RateLimits(default=5, auth=2, window_s=60)


@pytest.fixture
async def limited(pool: asyncpg.Pool, projector) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(pool, PgFeed(pool), projection_wait_s=5.0, rate_limits=LIMITS)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


def assert_limit_headers(r: httpx.Response, limit: int, remaining: int) -> None:
    assert r.headers["X-RateLimit-Limit"] == str(limit), r.headers
    assert r.headers["X-RateLimit-Remaining"] == str(remaining), r.headers
    assert 0 < int(r.headers["X-RateLimit-Reset"]) <= 61


async def test_the_request_over_the_limit_is_refused_and_others_are_unaffected(
    limited, bootstrap, pool
) -> None:
    ada, _ = await bootstrap.user("ada@example.com", "Ada's")
    bob, _ = await bootstrap.user("bob@example.com", "Bob's")

    for i in range(5):
        r = await limited.get("/api/v1/orgs", headers=ada)
        assert r.status_code == 200, r.text
        assert_limit_headers(r, 5, 4 - i)

    events = await pool.fetchval("SELECT count(*) FROM events")
    r = await limited.post(
        "/api/v1/orgs",
        json={"name": "one too many"},
        headers={**ada, "Idempotency-Key": str(uuid.uuid4())},
    )
    assert r.status_code == 429, r.text
    assert r.headers["content-type"].startswith(PROBLEM_JSON)
    body = r.json()
    assert (body["status"], body["code"]) == (429, "rate_limited")
    assert_limit_headers(r, 5, 0)
    assert 1 <= int(r.headers["Retry-After"]) <= 61
    assert await pool.fetchval("SELECT count(*) FROM events") == events  # nothing appended

    # Another principal has its own window.
    r = await limited.get("/api/v1/orgs", headers=bob)
    assert r.status_code == 200
    assert_limit_headers(r, 5, 4)

    # Refused requests are not counted: still refused, still 0 remaining, never negative.
    r = await limited.get("/api/v1/orgs", headers=ada)
    assert r.status_code == 429
    assert_limit_headers(r, 5, 0)


async def test_error_responses_carry_the_headers_too(limited, bootstrap) -> None:
    ada, _ = await bootstrap.user("ada@example.com", "Ada's")
    r = await limited.get(f"/api/v1/orgs/{uuid.uuid4()}", headers=ada)
    assert r.status_code == 404
    assert_limit_headers(r, 5, 4)
    r = await limited.post("/api/v1/orgs", content=b"{", headers=ada)
    assert r.status_code in (400, 422)
    assert_limit_headers(r, 5, 3)


async def test_operational_routes_are_not_limited_and_public_ones_are_per_address(
    limited,
) -> None:
    for _ in range(8):
        r = await limited.get("/healthz")
        assert r.status_code == 200
        assert "X-RateLimit-Limit" not in r.headers
    statuses = [(await limited.get("/schema/openapi.json")).status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]


async def test_unauthenticated_requests_are_refused_before_they_are_counted(
    limited, bootstrap
) -> None:
    for _ in range(8):
        r = await limited.get("/api/v1/orgs", headers={"Authorization": "Bearer byp_nope"})
        assert r.status_code == 401
    ada, _ = await bootstrap.user("ada@example.com", "Ada's")
    assert (await limited.get("/api/v1/orgs", headers=ada)).status_code == 200


async def test_concurrent_takes_across_connections_admit_exactly_the_limit(pool) -> None:
    limiter = PgRateLimiter(pool, RateLimits(default=20, window_s=60))
    results = await asyncio.gather(*(limiter.take("default:test:burst", 20) for _ in range(120)))
    assert sum(s.admitted for s in results) == 20
    remaining = sorted((s.remaining for s in results if s.admitted), reverse=True)
    assert remaining == list(range(19, -1, -1))  # every admission saw every earlier one
    refused = [s for s in results if not s.admitted]
    assert all(s.remaining == 0 and s.retry_after_s >= 1 for s in refused)


async def test_capacity_returns_after_the_window(pool) -> None:
    # A 0.6 s window in 10 ms buckets.
    limiter = PgRateLimiter(pool, RateLimits(default=3, window_s=0.6))
    assert [(await limiter.take("k", 3)).admitted for _ in range(4)] == [True] * 3 + [False]
    await asyncio.sleep(0.65)
    assert (await limiter.take("k", 3)).admitted


async def test_expired_keys_are_deleted_opportunistically(pool, database) -> None:
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(
            """
            INSERT INTO rate_limits (key, buckets, counts, expires_at)
            SELECT 'old:' || i, '{1}', '{1}', now() - interval '1 hour'
            FROM generate_series(1, 50) AS i
            """
        )
    finally:
        await conn.close()
    limiter = PgRateLimiter(pool, RateLimits(default=100_000, window_s=60))
    for _ in range(3000):  # about 15 cleanups expected; none in 3000 has odds of 3e-7
        await limiter.take("default:busy", 100_000)
        if await pool.fetchval("SELECT count(*) FROM rate_limits WHERE key LIKE 'old:%'") == 0:
            break
    assert await pool.fetchval("SELECT count(*) FROM rate_limits WHERE key LIKE 'old:%'") == 0
    assert await pool.fetchval("SELECT count(*) FROM rate_limits WHERE key = 'default:busy'") == 1
