"""Rate limits (DOMAIN.md §10): a sliding window per credential, shared by every API process.

Each limited request takes one unit from a key's window in PostgreSQL: one
call of ``rate_limit_take`` (schema/migrations/0006_rate_limits.sql), one round
trip, serialized per key by the key's row lock, so the limit holds however many
API processes share the database.

Keys and limits, by route class (:func:`classify`):

    default      every other route          per principal (``Principal.key``)
    auth         token, session, API key     per principal, or per client
                 and login routes            address when unauthenticated
    enrollment   enrollment routes           per environment (the path's
                                             ``env_id``), whoever calls
    artifact     artifact routes             per principal

Unauthenticated routes (the OpenAPI document, later logins) are limited per
client address; ``/healthz``, ``/readyz`` and ``/metrics`` are not limited. A
route handler may choose its class with ``opt={"rate_limit": "auth"}`` (or
``"none"``); otherwise its path decides.

The window: the admitted requests of a key are counted in buckets of a
sixtieth of the window. A request is admitted while the buckets that may still
hold requests of the last window — the oldest, partly expired one counted in
full — sum to less than the limit. So no interval of one window ever holds more
admitted requests than the limit (the bound is exact, not an estimate), and
capacity comes back at most one bucket (a second, for a minute) late.
Refused requests are not counted.

Headers on every limited response: ``X-RateLimit-Limit``,
``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (seconds until the usage
counted now has left the window, i.e. until Remaining is back at Limit). A
refused request answers ``429`` problem+json (code ``rate_limited``) with
``Retry-After``: the seconds until one request would be admitted.

If the database cannot be reached the request fails with 503 like any other
database failure (the exception handlers map the error). Failing open was
considered and rejected: every limited route authenticates against the same
database a moment earlier and needs it to do its work, so a request the limiter
cannot judge could not be served anyway, and admitting unmetered traffic while
the database struggles is exactly when a limit matters most.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Literal

import msgspec
from litestar.enums import ScopeType
from litestar.exceptions import TooManyRequestsException
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from domain.principal import Principal
from schema.pg import AnyPool

RouteClass = Literal["default", "auth", "enrollment", "artifact"]

# Buckets per window: the granularity of the window, and how late (one bucket)
# capacity may come back.
BUCKETS_PER_WINDOW = 60

UNLIMITED_PATHS = ("/healthz", "/readyz", "/metrics")

_AUTH_PATH = re.compile(r"^/api/v1/(tokens|sessions|auth|login|logout)(/|$)|/api-keys(/|$)")
_ENROLLMENT_PATH = re.compile(r"/enrollment-tokens(/|$)|/enroll(/|$)")
_ARTIFACT_PATH = re.compile(r"/artifacts(/|$)")


class RateLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Admitted requests per window, by route class."""

    default: int = 600
    auth: int = 30
    enrollment: int = 60
    artifact: int = 120
    window_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("default", "auth", "enrollment", "artifact"):
            if getattr(self, name) < 1:
                raise ValueError(f"rate limit {name} must be >= 1")
        if self.window_ms < BUCKETS_PER_WINDOW:
            raise ValueError("the rate-limit window must be at least 60 ms")

    def limit(self, route_class: RouteClass) -> int:
        limit: int = getattr(self, route_class)
        return limit

    @property
    def window_ms(self) -> int:
        return round(self.window_s * 1000)

    @property
    def bucket_ms(self) -> int:
        return self.window_ms // BUCKETS_PER_WINDOW


# --- the window arithmetic (pure) ----------------------------------------------------


class WindowStatus(msgspec.Struct, frozen=True):
    """A key's window after one request was judged."""

    admitted: bool
    limit: int
    remaining: int
    reset_s: int  # until every request counted now has left the window
    retry_after_s: int  # until one more request would be admitted (0: now)
    # Requests this take counted: more than one when a lease was asked for
    # (``Permit.units``); the rest are the caller's to spend (``LeaseBook``).
    granted: int = 1
    # Milliseconds left in the bucket the take was counted in: how long a
    # lease of the granted units may be spent.
    bucket_left_ms: int = 0

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_s),
        }
        if not self.admitted:
            headers["Retry-After"] = str(max(1, self.retry_after_s))
        return headers


def _leaves_at(bucket: int, window_ms: int, bucket_ms: int) -> int:
    """The first instant (epoch ms) at which ``bucket`` no longer counts."""
    # Counted while bucket >= (now - window) // bucket_ms,
    # that is while now < (bucket + 1) * bucket_ms + window.
    return (bucket + 1) * bucket_ms + window_ms


def counted(
    buckets: Sequence[int], counts: Sequence[int], now_ms: int, window_ms: int, bucket_ms: int
) -> list[tuple[int, int]]:
    """The (bucket, count) pairs that still count at ``now_ms``, oldest first."""
    oldest = (now_ms - window_ms) // bucket_ms
    return sorted((b, c) for b, c in zip(buckets, counts, strict=True) if b >= oldest)


def window_status(
    *,
    admitted: bool,
    buckets: Sequence[int],
    counts: Sequence[int],
    now_ms: int,
    limit: int,
    window_ms: int,
    bucket_ms: int,
    granted: int = 1,
) -> WindowStatus:
    """Remaining, reset and retry-after for a key's buckets as they stand at ``now_ms``."""
    live = counted(buckets, counts, now_ms, window_ms, bucket_ms)
    used = sum(c for _, c in live)
    remaining = max(0, limit - used)
    reset_ms = max(0, _leaves_at(live[-1][0], window_ms, bucket_ms) - now_ms) if live else 0
    retry_ms = 0
    if used >= limit:
        # The oldest buckets leave first; wait until enough have left for one request.
        for bucket, count in live:
            used -= count
            if used < limit:
                retry_ms = _leaves_at(bucket, window_ms, bucket_ms) - now_ms
                break
    return WindowStatus(
        admitted=admitted,
        limit=limit,
        remaining=remaining,
        reset_s=math.ceil(reset_ms / 1000),
        retry_after_s=math.ceil(max(0, retry_ms) / 1000),
        granted=granted if admitted else 0,
        bucket_left_ms=bucket_ms - now_ms % bucket_ms,
    )


def take(
    buckets: Sequence[int],
    counts: Sequence[int],
    now_ms: int,
    limit: int,
    window_ms: int,
    bucket_ms: int,
    units: int = 1,
) -> tuple[int, list[int], list[int]]:
    """The admission rule of ``rate_limit_take_units`` (and, for one unit,
    ``rate_limit_take``), in memory: (granted, buckets, counts); 0 granted is a refusal.

    The SQL functions are what run; this is their model, which the unit tests
    hold to the bound "no interval of one window admits more than the limit".
    """
    live = counted(buckets, counts, now_ms, window_ms, bucket_ms)
    new_buckets = [b for b, _ in live]
    new_counts = [c for _, c in live]
    grant = min(max(units, 1), limit - sum(new_counts))
    if grant < 1:
        return 0, new_buckets, new_counts
    current = now_ms // bucket_ms
    if new_buckets and new_buckets[-1] >= current:
        new_counts[-1] += grant
    else:
        new_buckets.append(current)
        new_counts.append(grant)
    return grant, new_buckets, new_counts


# --- leases: a window's requests taken ahead of use -----------------------------------


class _Lease:
    __slots__ = ("base", "deadline", "left", "size")

    def __init__(self, base: WindowStatus, left: int, deadline: float, size: int) -> None:
        self.base = base
        self.left = left
        self.deadline = deadline
        self.size = size


class LeaseBook:
    """Requests a process took from shared windows ahead of use, to admit locally.

    A take of ``n`` units (``Permit.units``) counts ``n`` requests in the
    window's current bucket at once; this process then admits up to ``n - 1``
    more requests of that key without a round trip, until the bucket ends
    (less ``MARGIN_S``). Every request admitted was counted, in the bucket it
    was admitted in, so the window's bound holds exactly as for single takes,
    across any number of processes; what a lease costs is that units left
    unspent when its bucket ends were counted for nothing.

    The size adapts per key: a key whose lease ran out before its bucket ended
    asks for twice as many next time, up to ``limit // 32`` (so at most ~3% of a
    window can go unspent per process when its traffic stops) and ``max_units``;
    one whose lease outlived its bucket halves. A slow client therefore keeps
    taking one unit per request, exact; a limit under 64 is never leased.
    """

    MARGIN_S = 0.01  # the bucket's end as seen here can lag the database's clock

    def __init__(
        self,
        *,
        max_units: int = 64,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_units = max_units
        self.max_keys = max_keys
        self.clock = clock
        self._leases: dict[str, _Lease] = {}

    def take(self, key: str) -> WindowStatus | None:
        """One request admitted from ``key``'s lease, or None (no units left here)."""
        lease = self._leases.get(key)
        if lease is None or lease.left < 1 or self.clock() >= lease.deadline:
            return None
        lease.left -= 1
        base = lease.base
        return WindowStatus(
            admitted=True,
            limit=base.limit,
            remaining=base.remaining + lease.left,
            reset_s=base.reset_s,
            retry_after_s=0,
            granted=0,
        )

    def units(self, key: str, limit: int) -> int:
        """How many units the next take for ``key`` should ask for."""
        cap = max(1, min(self.max_units, limit // 32))
        lease = self._leases.get(key)
        if lease is None:
            return 1
        if self.clock() < lease.deadline:  # spent before its bucket ended
            return min(cap, lease.size * 2)
        return min(cap, max(1, lease.size // 2))

    def grant(self, key: str, status: WindowStatus, asked: int) -> WindowStatus:
        """Keep what a take of ``asked`` units left over (one is the request that took
        it); the status the request answers with counts those as remaining."""
        if not status.admitted:
            return status
        if len(self._leases) >= self.max_keys:
            self._prune()
        left = max(0, status.granted - 1)
        deadline = self.clock() + status.bucket_left_ms / 1000 - self.MARGIN_S
        self._leases[key] = _Lease(status, left, deadline, max(1, asked))
        if not left:
            return status
        return msgspec.structs.replace(status, remaining=status.remaining + left)

    def _prune(self) -> None:
        now = self.clock()
        for key in [k for k, lease in self._leases.items() if lease.deadline <= now]:
            del self._leases[key]
        if len(self._leases) >= self.max_keys:
            self._leases.clear()


# --- keys -----------------------------------------------------------------------------


def classify(path_template: str, opt: dict[str, Any]) -> RouteClass | None:
    """The route class of a handler (``None``: not limited)."""
    chosen = opt.get("rate_limit")
    if chosen == "none":
        return None
    if chosen in ("default", "auth", "enrollment", "artifact"):
        route_class: RouteClass = chosen
        return route_class
    if path_template.startswith(UNLIMITED_PATHS):
        return None
    if _ENROLLMENT_PATH.search(path_template):
        return "enrollment"
    if _AUTH_PATH.search(path_template):
        return "auth"
    if _ARTIFACT_PATH.search(path_template):
        return "artifact"
    return "default"


_CLASS_KEY = "_byteor_route_class"


def route_class_of(handler: Any, path: str) -> RouteClass | None:
    """``classify`` for a route handler, remembered in the handler's own ``opt``
    (it never changes, and the regexes cost every request otherwise)."""
    opt = handler.opt
    if _CLASS_KEY not in opt:
        opt[_CLASS_KEY] = classify(next(iter(handler.paths), path), opt)
    route_class: RouteClass | None = opt[_CLASS_KEY]
    return route_class


def rate_limit_key(
    route_class: RouteClass,
    principal: Principal | None,
    client: str | None,
    path_params: dict[str, Any],
) -> str:
    """Whose window a request takes from."""
    if route_class == "enrollment" and path_params.get("env_id") is not None:
        return f"enrollment:env:{path_params['env_id']}"
    who = principal.key if principal is not None else f"addr:{client or 'unknown'}"
    return f"{route_class}:{who}"


# --- a permit taken with the credential lookup -----------------------------------------------


class Permit(msgspec.Struct, frozen=True, kw_only=True):
    """A permit to take from a principal's window in the statement that looks up its
    credential: one round trip for both (commands/auth.py). ``now`` is the clock the
    credential's expiry is judged by, the same the authenticator then checks."""

    route_class: RouteClass
    limit: int
    window_ms: int
    bucket_ms: int
    now: datetime
    # How many requests to take at once: 1, or a lease's worth (``LeaseBook.units``).
    units: int = 1


def with_permit(select_sql: str, key_sql: str) -> str:
    """``select_sql`` (one credential row by ``$1``, with ``revoked_at`` and ``expires_at``)
    joined to a permit from the window keyed ``<class>:`` || ``key_sql`` (over its row
    ``c``), the key ``rate_limit_key`` builds for the principal. The permit is taken
    only for a live credential (the key is NULL otherwise and the STRICT function is
    not called). Parameters: $2 now, $3 ``<class>:``, $4 limit, $5 window ms, $6 bucket ms,
    $7 units (``Permit.units``; more than one takes a lease, see ``LeaseBook``).

    The statement commits without waiting for its WAL flush (``set_config(..., true)``
    lasts until its own implicit transaction's commit; callers run it on a pool,
    never inside a transaction): a crash may forget the last fraction of a second
    of counted requests, a flush on every authenticated request was most of its
    latency tail (ops/bench/agents.py: heartbeat p99 77 → 36 ms at 200 agents).
    """
    return f"""
SELECT c.*, r.admitted AS permit_admitted, r.now_ms AS permit_now_ms,
       r.buckets AS permit_buckets, r.counts AS permit_counts, r.granted AS permit_granted,
       set_config('synchronous_commit', 'off', true) AS synchronous_commit
FROM ({select_sql}) c
LEFT JOIN LATERAL rate_limit_take_units_strict(
    CASE WHEN c.revoked_at IS NULL AND (c.expires_at IS NULL OR c.expires_at > $2)
         THEN $3 || {key_sql} END,
    $4, $5, $6, $7) r ON true
"""


async def fetch_credential(
    pool: AnyPool, select_sql: str, combined_sql: str, digest: bytes, permit: Permit | None
) -> tuple[Any, WindowStatus | None]:
    """The credential row for ``digest`` and, with a ``permit``, the window after taking it."""
    if permit is None:
        return await pool.fetchrow(select_sql, digest), None
    row = await pool.fetchrow(
        combined_sql,
        digest,
        permit.now,
        f"{permit.route_class}:",
        permit.limit,
        permit.window_ms,
        permit.bucket_ms,
        permit.units,
    )
    if row is None or row["permit_admitted"] is None:
        return row, None
    return row, window_status(
        admitted=row["permit_admitted"],
        buckets=row["permit_buckets"],
        counts=row["permit_counts"],
        now_ms=row["permit_now_ms"],
        limit=permit.limit,
        window_ms=permit.window_ms,
        bucket_ms=permit.bucket_ms,
        granted=row["permit_granted"],
    )


# Where the auth middleware leaves a window it took with the credential lookup.
WINDOW_SCOPE_KEY = "byteor.rate_limit_window"


# --- the shared store ----------------------------------------------------------------------

_TAKE = "SELECT admitted, now_ms, buckets, counts FROM rate_limit_take($1, $2, $3, $4)"


class PgRateLimiter:
    """Windows in PostgreSQL, shared by every process on the database."""

    def __init__(self, pool: AnyPool, limits: RateLimits) -> None:
        self.pool = pool
        self.limits = limits

    async def take(self, key: str, limit: int) -> WindowStatus:
        window_ms, bucket_ms = self.limits.window_ms, self.limits.bucket_ms
        row = await self.pool.fetchrow(_TAKE, key, limit, window_ms, bucket_ms)
        assert row is not None
        return window_status(
            admitted=row["admitted"],
            buckets=row["buckets"],
            counts=row["counts"],
            now_ms=row["now_ms"],
            limit=limit,
            window_ms=window_ms,
            bucket_ms=bucket_ms,
        )


# --- the middleware -----------------------------------------------------------------------


class RateLimitMiddleware(ASGIMiddleware):
    """Judges each request after authentication: place it after the auth middleware.

    Litestar builds a route's stack from the app's ``middleware`` list with the
    first entry outermost, so an entry after the auth middleware runs inside it
    and sees ``scope["user"]``.
    """

    scopes = (ScopeType.HTTP,)

    def __init__(self, limiter: PgRateLimiter) -> None:
        self.limiter = limiter

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        handler = scope["route_handler"]
        route_class = route_class_of(handler, scope["path"])
        if route_class is None:
            await next_app(scope, receive, send)
            return
        # The auth middleware may have taken this request's permit already, in the
        # statement that looked its credential up (commands/auth.py, same key).
        status: WindowStatus | None = scope.pop(WINDOW_SCOPE_KEY, None)  # type: ignore[misc]
        if status is None:
            user = scope.get("user")
            principal = user if isinstance(user, Principal) else None
            client = scope.get("client")
            key = rate_limit_key(
                route_class,
                principal,
                client[0] if client else None,
                scope.get("path_params") or {},
            )
            status = await self.limiter.take(key, self.limiter.limits.limit(route_class))
        if not status.admitted:
            raise TooManyRequestsException(
                detail=f"rate limit exceeded; retry in {max(1, status.retry_after_s)} s",
                headers=status.headers(),
            )
        extra = [(k.lower().encode(), v.encode()) for k, v in status.headers().items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await next_app(scope, receive, send_with_headers)


__all__ = [
    "BUCKETS_PER_WINDOW",
    "LeaseBook",
    "PgRateLimiter",
    "RateLimitMiddleware",
    "RateLimits",
    "RouteClass",
    "WindowStatus",
    "classify",
    "rate_limit_key",
    "take",
    "window_status",
]
