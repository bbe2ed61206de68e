"""The rate limiter's pure parts: window arithmetic, the admission rule, keys."""

from __future__ import annotations

import random
import uuid

import pytest

from commands.ratelimit import (
    LeaseBook,
    RateLimits,
    WindowStatus,
    classify,
    rate_limit_key,
    take,
    window_status,
)
from domain.principal import Principal
from ops.config import ConfigError, Settings

W = 60_000  # a minute
B = 1_000  # its buckets: a second


def status(buckets: list[int], counts: list[int], now_ms: int, limit: int) -> WindowStatus:
    return window_status(
        admitted=sum(counts) <= limit,
        buckets=buckets,
        counts=counts,
        now_ms=now_ms,
        limit=limit,
        window_ms=W,
        bucket_ms=B,
    )


def test_remaining_counts_every_bucket_still_in_the_window() -> None:
    now = 1_000_000_500  # bucket 1_000_000, half way through
    s = status([999_940, 999_970, 1_000_000], [1, 2, 3], now, 10)
    assert (s.limit, s.remaining) == (10, 4)
    # The newest bucket (1_000_000) leaves at 1_000_001 * 1000 + 60_000: 60.5 s away.
    assert s.reset_s == 61
    assert s.retry_after_s == 0


def test_the_partly_expired_oldest_bucket_counts_in_full() -> None:
    now = 1_000_000_500
    # Bucket 999_940 holds [999_940_000, 999_941_000): partly older than now - W.
    assert status([999_940], [5], now, 10).remaining == 5
    # One bucket earlier is wholly outside the window.
    assert status([999_939], [5], now, 10).remaining == 10
    assert status([999_939], [5], now, 10).reset_s == 0


def test_a_full_window_says_when_one_request_fits_again() -> None:
    now = 1_000_000_500
    s = window_status(
        admitted=False,
        buckets=[999_950, 999_980, 1_000_000],
        counts=[2, 3, 5],
        now_ms=now,
        limit=10,
        window_ms=W,
        bucket_ms=B,
    )
    assert s.remaining == 0
    # Bucket 999_950 leaves at 999_951_000 + 60_000 = 1_000_011_000: 10.5 s away.
    assert s.retry_after_s == 11
    assert s.reset_s == 61
    headers = s.headers()
    assert headers == {
        "X-RateLimit-Limit": "10",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "61",
        "Retry-After": "11",
    }


def test_a_lowered_limit_waits_for_enough_buckets_to_leave() -> None:
    now = 1_000_000_500
    s = window_status(
        admitted=False,
        buckets=[999_950, 999_960, 999_990],
        counts=[4, 4, 4],
        now_ms=now,
        limit=5,
        window_ms=W,
        bucket_ms=B,
    )
    # 12 used, limit 5: the first two buckets must leave (then 4 < 5).
    assert s.retry_after_s == math_ceil_s(999_961_000 + W - now)


def math_ceil_s(ms: int) -> int:
    return -(-ms // 1000)


def test_admitted_headers_have_no_retry_after() -> None:
    headers = status([1_000_000], [1], 1_000_000_000, 5).headers()
    assert "Retry-After" not in headers
    assert headers["X-RateLimit-Remaining"] == "4"


def test_take_admits_up_to_the_limit_then_refuses_without_counting() -> None:
    buckets: list[int] = []
    counts: list[int] = []
    now = 5_000_000_000
    results = []
    for i in range(7):
        ok, buckets, counts = take(buckets, counts, now + i * 10, 5, W, B)
        results.append(ok)
    assert results == [True] * 5 + [False] * 2
    assert sum(counts) == 5


def test_take_frees_capacity_one_bucket_after_the_window() -> None:
    now = 5_000_000_000  # a bucket boundary
    buckets, counts = [], []
    for _ in range(3):
        ok, buckets, counts = take(buckets, counts, now, 3, W, B)
        assert ok
    # Still refused a full window later, while the bucket is partly inside...
    assert not take(buckets, counts, now + W, 3, W, B)[0]
    assert not take(buckets, counts, now + W + B - 1, 3, W, B)[0]
    # ...and admitted once the whole bucket has left.
    assert take(buckets, counts, now + W + B, 3, W, B)[0]


@pytest.mark.parametrize("seed", range(20))
def test_no_window_long_interval_ever_admits_more_than_the_limit(seed: int) -> None:
    """The bound the limiter promises, on random arrival sequences (bursts and gaps)."""
    rng = random.Random(seed)
    limit = rng.choice([1, 3, 10, 50])
    window, bucket = 6_000, 100
    now = 1_700_000_000_000 + rng.randrange(window)
    buckets: list[int] = []
    counts: list[int] = []
    admitted: list[int] = []
    for _ in range(3000):
        now += rng.choice([0, 0, 1, 5, 20, 100, 700, 3000])
        ok, buckets, counts = take(buckets, counts, now, limit, window, bucket)
        if ok:
            admitted.append(now)
    assert len(admitted) > limit
    # Every interval [t, t + window) starting at an admission (the densest ones do).
    j = 0
    for i, start in enumerate(admitted):
        j = max(j, i)
        while j + 1 < len(admitted) and admitted[j + 1] < start + window:
            j += 1
        assert j - i + 1 <= limit, (start, j - i + 1)


def test_classify_by_path_and_by_handler_opt() -> None:
    assert classify("/healthz", {}) is None
    assert classify("/metrics", {}) is None
    assert classify("/readyz", {}) is None
    assert classify("/api/v1/orgs", {}) == "default"
    assert classify("/schema/openapi.json", {}) == "default"
    assert classify("/api/v1/tokens", {}) == "auth"
    assert classify("/api/v1/tokens/{token_id:uuid}", {}) == "auth"
    assert classify("/api/v1/orgs/{org_id:uuid}/api-keys", {}) == "auth"
    assert classify("/api/v1/tokenish", {}) == "default"
    env = "/api/v1/orgs/{org_id:uuid}/projects/{project_id:uuid}/environments/{env_id:uuid}"
    assert classify(env + "/enrollment-tokens", {}) == "enrollment"
    assert classify("/api/v1/agents/enroll", {}) == "enrollment"
    assert classify(env + "/artifacts/{artifact_id:uuid}", {}) == "artifact"
    assert classify("/api/v1/orgs", {"rate_limit": "auth"}) == "auth"
    assert classify("/api/v1/orgs", {"rate_limit": "none"}) is None


def test_keys_are_per_principal_per_address_or_per_environment() -> None:
    user = Principal(
        kind="user",
        id=uuid.UUID(int=1),
        credential_id=uuid.UUID(int=2),
        family="personal_access_token",
    )
    assert rate_limit_key("default", user, "10.0.0.1", {}) == f"default:user:{uuid.UUID(int=1)}"
    assert rate_limit_key("auth", None, "10.0.0.1", {}) == "auth:addr:10.0.0.1"
    assert rate_limit_key("default", None, None, {}) == "default:addr:unknown"
    env = uuid.UUID(int=9)
    assert rate_limit_key("enrollment", user, "x", {"env_id": env}) == f"enrollment:env:{env}"
    assert rate_limit_key("enrollment", user, "x", {}) == f"enrollment:user:{uuid.UUID(int=1)}"


def test_limits_validate() -> None:
    limits = RateLimits()
    assert (limits.default, limits.auth, limits.window_ms, limits.bucket_ms) == (
        600,
        30,
        60_000,
        1000,
    )
    assert limits.limit("artifact") == 120
    with pytest.raises(ValueError):
        RateLimits(auth=0)
    with pytest.raises(ValueError):
        RateLimits(window_s=0.01)


def test_settings_read_the_limits_from_the_environment() -> None:
    defaults = Settings.from_env({})
    assert (defaults.rate_limit_per_minute, defaults.rate_limit_auth_per_minute) == (600, 30)
    assert defaults.rate_limit_window_s == 60.0
    s = Settings.from_env(
        {
            "BYTEOR_CLOUD_RATE_LIMIT_PER_MINUTE": "50",
            "BYTEOR_CLOUD_RATE_LIMIT_AUTH_PER_MINUTE": "5",
            "BYTEOR_CLOUD_RATE_LIMIT_ENROLLMENT_PER_MINUTE": "7",
            "BYTEOR_CLOUD_RATE_LIMIT_ARTIFACT_PER_MINUTE": "9",
            "BYTEOR_CLOUD_RATE_LIMIT_WINDOW_S": "2.5",
        }
    )
    assert (
        s.rate_limit_per_minute,
        s.rate_limit_auth_per_minute,
        s.rate_limit_enrollment_per_minute,
        s.rate_limit_artifact_per_minute,
        s.rate_limit_window_s,
    ) == (50, 5, 7, 9, 2.5)
    with pytest.raises(ConfigError, match="RATE_LIMIT_AUTH_PER_MINUTE"):
        Settings.from_env({"BYTEOR_CLOUD_RATE_LIMIT_AUTH_PER_MINUTE": "0"})
    with pytest.raises(ConfigError, match="RATE_LIMIT_WINDOW_S"):
        Settings.from_env({"BYTEOR_CLOUD_RATE_LIMIT_WINDOW_S": "nan"})


def test_a_take_of_several_units_grants_what_the_window_has_left() -> None:
    now = 5_000_000_000
    granted, buckets, counts = take([], [], now, 10, W, B, units=4)
    assert (granted, counts) == (4, [4])
    granted, buckets, counts = take(buckets, counts, now + 1, 10, W, B, units=8)
    assert (granted, counts) == (6, [10])
    assert take(buckets, counts, now + 2, 10, W, B, units=8)[0] == 0


class _Clock:
    def __init__(self) -> None:
        self.ms = 0

    def __call__(self) -> float:
        return self.ms / 1000


def _process_take(
    book: LeaseBook, key: str, shared: dict[str, list[int]], now_ms: int, limit: int
) -> bool:
    """One request in one simulated API process: from its lease, else a take of a lease."""
    if book.take(key) is not None:
        return True
    units = book.units(key, limit)
    granted, shared["b"], shared["c"] = take(
        shared["b"], shared["c"], now_ms, limit, 6_000, 100, units
    )
    window = window_status(
        admitted=granted > 0,
        buckets=shared["b"],
        counts=shared["c"],
        now_ms=now_ms,
        limit=limit,
        window_ms=6_000,
        bucket_ms=100,
        granted=granted,
    )
    return book.grant(key, window, units).admitted


@pytest.mark.parametrize("seed", range(12))
def test_leases_in_many_processes_never_admit_more_than_the_limit(seed: int) -> None:
    """The window's bound with leases spent locally by several processes."""
    rng = random.Random(seed)
    limit = rng.choice([64, 200, 1000])
    clock = _Clock()
    clock.ms = 1_700_000_000_000 + rng.randrange(6_000)
    books = [LeaseBook(clock=clock) for _ in range(rng.choice([1, 2, 4]))]
    shared: dict[str, list[int]] = {"b": [], "c": []}
    admitted: list[int] = []
    for _ in range(6000):
        clock.ms += rng.choice([0, 0, 1, 2, 5, 30, 400])
        if _process_take(rng.choice(books), "k", shared, clock.ms, limit):
            admitted.append(clock.ms)
    assert len(admitted) > limit
    j = 0
    for i, start in enumerate(admitted):
        j = max(j, i)
        while j + 1 < len(admitted) and admitted[j + 1] < start + 6_000:
            j += 1
        assert j - i + 1 <= limit, (start, j - i + 1)


def test_a_busy_key_grows_its_lease_and_a_slow_one_takes_one_unit_at_a_time() -> None:
    clock = _Clock()
    clock.ms = 1_700_000_000_000
    book = LeaseBook(clock=clock)
    shared: dict[str, list[int]] = {"b": [], "c": []}
    asked = []
    for _ in range(200):  # 200 requests in 20 ms: well inside one bucket
        clock.ms += 0.1  # type: ignore[assignment]
        if book.take("busy") is None:
            units = book.units("busy", 100_000)
            asked.append(units)
            _process_take_with(book, "busy", shared, clock, units)
    assert asked[:4] == [1, 2, 4, 8] and max(asked) == 64  # the cap
    slow = []
    for _ in range(5):  # one request a bucket and more: never more than one unit
        clock.ms += 150  # type: ignore[assignment]
        assert book.take("slow") is None
        slow.append(book.units("slow", 100_000))
        _process_take_with(book, "slow", shared, clock, slow[-1])
    assert slow == [1] * 5
    assert LeaseBook(clock=clock).units("x", 63) == 1  # small limits are never leased


def _process_take_with(
    book: LeaseBook, key: str, shared: dict[str, list[int]], clock: _Clock, units: int
) -> None:
    now_ms = int(clock.ms)
    granted, shared["b"], shared["c"] = take(
        shared["b"], shared["c"], now_ms, 100_000, 6_000, 100, units
    )
    book.grant(
        key,
        window_status(
            admitted=granted > 0,
            buckets=shared["b"],
            counts=shared["c"],
            now_ms=now_ms,
            limit=100_000,
            window_ms=6_000,
            bucket_ms=100,
            granted=granted,
        ),
        units,
    )
