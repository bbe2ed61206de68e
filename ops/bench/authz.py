"""Authorization benchmark: the pure decision, and what authentication adds to a request.

1. decision   ``domain.access.decide`` called ``--calls`` times (default 200,000)
              over a realistic mix: org admins, org-level members, members with
              project grants, narrowed operators, org API keys, agents and
              foreign-tenant principals, asking for every permission on org,
              project and environment paths. Each call is timed on its own with
              ``time.perf_counter_ns`` (timings go into a preallocated array,
              in batches of ``--batch`` calls); p50/p99/p99.9 in µs, timer
              overhead included (it is printed too). Target: p99 < 50 µs.
2. overhead   an embedded PostgreSQL in a temporary directory (or ``--dsn``),
              migrated; a user and personal access token from the bootstrap;
              the API (``ops.app.create_app``) served by uvicorn on 127.0.0.1 in
              a thread of this process, twice: as ``byteor-cloud api`` builds
              it (with a credential cache, commands/credential_cache.py) and
              without the cache (every authenticated request makes its one
              credential + rate-limit statement). ``--requests`` sequential
              keep-alive requests each (default 2,000, after a warm-up),
              interleaved, to ``GET /healthz`` (no authentication) and
              ``GET /api/v1/me`` (bearer token) on both.
              overhead = p50(authenticated) - p50(unauthenticated), in ms, for
              the API as deployed; the uncached figure is printed beside it.
              Target: < 0.5 ms. The database round trips an uncached request
              makes are also timed alone on the pool and printed.

Prints a table, then one JSON line::

    {"bench": "authz", "decision_p99_us": ..., "decision_p50_us": ...,
     "auth_overhead_p50_ms": ..., ...}

    python -m ops.bench.authz [--calls 200000] [--requests 2000] [--skip-http]
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import inspect
import json
import math
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from domain.access import Membership, Permission, ResourcePath, decide
from domain.principal import PrincipalKind

ENV_DSN = "BYTEOR_CLOUD_DATABASE_URL"
LIST_ORGS_SQL = """
    SELECT o.* FROM org_view o JOIN org_member_view m ON m.org_id = o.id AND m.user_id = $1
    WHERE o.deleted_at IS NULL
      AND ($2::timestamptz IS NULL OR (o.created_at, o.id) > ($2, $3))
    ORDER BY o.created_at, o.id LIMIT $4
"""

KINDS: tuple[PrincipalKind, ...] = ("user", "api_key", "agent")
Call = tuple[PrincipalKind, Membership | None, Permission, ResourcePath]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return float(sorted_values[rank - 1])


# -- 1. the decision ----------------------------------------------------------------


def workload(size: int, seed: int = 7) -> list[Call]:
    """``size`` decide() calls shaped like the traffic of a few busy organizations."""
    rng = random.Random(seed)
    orgs = [uuid.uuid4() for _ in range(4)]
    projects = {org: [uuid.uuid4() for _ in range(5)] for org in orgs}
    envs = {p: [uuid.uuid4() for _ in range(3)] for ps in projects.values() for p in ps}

    def membership(org: uuid.UUID) -> Membership:
        shape = rng.choices(
            ["admin", "org_role", "project_grants", "narrowed"], weights=[1, 4, 3, 2]
        )[0]
        if shape == "admin":
            return Membership(org_id=org, org_role="org_admin")
        role = rng.choice(["project_admin", "operator", "viewer"])
        if shape == "org_role":
            return Membership(org_id=org, org_role=role)  # type: ignore[arg-type]
        grants = {
            p: rng.choice(["project_admin", "operator", "viewer"])
            for p in rng.sample(projects[org], 2)
        }
        narrowing: dict[uuid.UUID, frozenset[uuid.UUID]] = {}
        if shape == "narrowed":
            p = rng.choice(projects[org])
            grants[p] = "operator"
            narrowing[p] = frozenset(rng.sample(envs[p], 1))
        return Membership(
            org_id=org,
            org_role=role,  # type: ignore[arg-type]
            project_roles=grants,  # type: ignore[arg-type]
            operator_environments=narrowing,
        )

    members = [membership(org) for org in orgs for _ in range(25)]
    calls: list[Call] = []
    permissions = list(Permission)
    for _ in range(size):
        m = rng.choice(members)
        kind = rng.choices(KINDS, weights=[85, 12, 3])[0]
        # Most requests stay in the caller's org; some probe another tenant, a few anonymous.
        target = m.org_id if rng.random() < 0.9 else rng.choice(orgs)
        member = None if rng.random() < 0.02 else m
        depth = rng.choices(["org", "project", "environment"], weights=[2, 3, 5])[0]
        project = rng.choice(projects[target]) if depth != "org" else None
        env = rng.choice(envs[project]) if depth == "environment" and project else None
        path = ResourcePath(target, project, env)
        calls.append((kind, member, rng.choice(permissions), path))
    return calls


def time_decisions(total: int, batch: int) -> dict[str, Any]:
    calls = workload(4096)
    n_calls = len(calls)
    timings = array.array("q", bytes(8 * total))
    now = time.perf_counter_ns
    allowed = 0
    # Warm-up: one pass over the workload.
    for kind, membership, permission, path in calls:
        decide(kind, membership, permission, path)
    done = 0
    started = now()
    while done < total:
        end = min(total, done + batch)
        for i in range(done, end):
            kind, membership, permission, path = calls[i % n_calls]
            t0 = now()
            decision = decide(kind, membership, permission, path)
            timings[i] = now() - t0
            allowed += decision.allowed
        done = end
    wall = (now() - started) / 1e9
    # What the timer itself adds: the same loop around nothing.
    empty = array.array("q", bytes(8 * min(total, 50_000)))
    for i in range(len(empty)):
        t0 = now()
        empty[i] = now() - t0
    us = sorted(t / 1000 for t in timings)
    empty_us = sorted(t / 1000 for t in empty)
    return {
        "calls": total,
        "allowed_share": allowed / total,
        "p50_us": percentile(us, 50),
        "p99_us": percentile(us, 99),
        "p999_us": percentile(us, 99.9),
        "max_us": us[-1],
        "mean_us": statistics.fmean(us),
        "timer_p50_us": percentile(empty_us, 50),
        "wall_s": wall,
    }


# -- 2. the request overhead ------------------------------------------------------------


class Database:
    """A migrated database: on our own PostgreSQL in a temp dir, or on the server at ``dsn``."""

    def __init__(self, dsn: str | None) -> None:
        self._external = dsn
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._pg: Any = None
        self._name = f"bench_authz_{os.getpid()}"
        self.dsn = ""

    def start(self) -> None:
        import asyncpg

        from ops.services.base import free_port
        from ops.services.postgres import Postgres
        from schema.migrate import migrate_dsn

        admin = self._external
        if admin is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="byteor-bench-")
            self._pg = Postgres(Path(self._tmp.name), free_port())
            log("starting PostgreSQL ...")
            self._pg.start()
            admin = str(self._pg.admin_dsn)

        async def create() -> None:
            conn = await asyncpg.connect(admin)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{self._name}" WITH (FORCE)')
                await conn.execute(f'CREATE DATABASE "{self._name}"')
            finally:
                await conn.close()

        asyncio.run(create())
        self.dsn = urlsplit(admin)._replace(path=f"/{self._name}").geturl()
        asyncio.run(migrate_dsn(self.dsn))

    def stop(self) -> None:
        if self._external:
            import asyncpg

            admin = self._external

            async def drop() -> None:
                conn = await asyncpg.connect(admin)
                try:
                    await conn.execute(f'DROP DATABASE IF EXISTS "{self._name}" WITH (FORCE)')
                finally:
                    await conn.close()

            with contextlib.suppress(Exception):
                asyncio.run(drop())
        if self._pg is not None:
            self._pg.stop()
        if self._tmp is not None:
            self._tmp.cleanup()


class ApiServer:
    """The API in a background thread: its own event loop, pool and uvicorn server."""

    def __init__(self, dsn: str) -> None:
        from ops.services.base import free_port

        self.dsn = dsn
        self.port = free_port()
        self.port_uncached = free_port()
        self.token = ""
        self.user_id: uuid.UUID | None = None
        self.parts_p50_ms: dict[str, float] = {}
        self._servers: list[Any] = []
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bench-api", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url_uncached(self) -> str:
        return f"http://127.0.0.1:{self.port_uncached}"

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(60)
        if self._failure is not None:
            raise self._failure
        if not self._ready.is_set():
            raise RuntimeError("the API did not start within 60 s")

    def stop(self) -> None:
        for server in self._servers:
            server.should_exit = True
        self._thread.join(30)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self._failure = exc
            self._ready.set()

    async def _serve(self) -> None:
        import uvicorn

        from commands.bootstrap import create_user
        from commands.pgstore import open_store
        from ops.app import create_app
        from projections.feed import PgFeed
        from schema.pg import create_pool

        pool = await create_pool(self.dsn, min_size=2, max_size=4)
        try:
            made = await create_user(
                pool, email="bench@example.com", org_name="Bench", now=datetime.now(UTC)
            )
            self.token, self.user_id = made.token, made.user_id
            await self._time_parts(pool, made.token, made.user_id)
            # As ``byteor-cloud api`` builds it: the store (and with it the
            # per-request auth and rate-limit statements) on its own lean pool,
            # and a credential cache. The second app has no cache: every
            # authenticated request then makes its one statement.
            store = open_store(self.dsn, size=4)
            apps = {
                self.port: create_app(
                    pool, PgFeed(pool), store=store, **_app_options(create_app, self.dsn)
                ),
                self.port_uncached: create_app(
                    pool, PgFeed(pool), store=store, **_app_options(create_app, None)
                ),
            }
            self._servers = [
                uvicorn.Server(
                    uvicorn.Config(
                        app,
                        host="127.0.0.1",
                        port=port,
                        log_config=None,
                        access_log=False,
                        lifespan="on",
                    )
                )
                for port, app in apps.items()
            ]
            tasks = [asyncio.create_task(s.serve()) for s in self._servers]
            while not all(s.started for s in self._servers):
                for task in tasks:
                    if task.done():
                        await task  # raises what stopped it
                        raise RuntimeError("uvicorn stopped before it started")
                await asyncio.sleep(0.01)
            self._ready.set()
            await asyncio.gather(*tasks)
            await store.close()
        finally:
            await pool.close()

    async def _time_parts(self, pool: Any, token: str, user_id: uuid.UUID) -> None:
        """p50 of the database round trips an authenticated request makes, each alone."""
        from commands.credentials import find_token

        parts: dict[str, Callable[[], Awaitable[Any]]] = {
            "token_lookup": lambda: find_token(pool, token),
            "route_query": lambda: pool.fetch(LIST_ORGS_SQL, user_id, None, None, 2),
        }
        with contextlib.suppress(ImportError):
            from commands.ratelimit import PgRateLimiter, RateLimits

            limiter = PgRateLimiter(pool, RateLimits())
            parts["rate_limit_take"] = lambda: limiter.take("bench:probe", 1_000_000_000)
        for name, call in parts.items():
            samples = []
            for i in range(550):
                t0 = time.perf_counter_ns()
                await call()
                if i >= 50:
                    samples.append((time.perf_counter_ns() - t0) / 1e6)
            self.parts_p50_ms[name] = percentile(sorted(samples), 50)


def _app_options(create_app: Any, cache_dsn: str | None) -> dict[str, Any]:
    """Options so the bench measures authentication, not throttling: a rate limit (when
    the app has one) high enough never to refuse the bench's requests; with
    ``cache_dsn``, a credential cache as ``byteor-cloud api`` has one."""
    parameters = inspect.signature(create_app).parameters
    if "rate_limits" not in parameters:
        return {}
    from commands.ratelimit import RateLimits

    huge = 1_000_000_000
    options: dict[str, Any] = {
        "rate_limits": RateLimits(default=huge, auth=huge, enrollment=huge, artifact=huge)
    }
    if cache_dsn is not None and "credential_cache" in parameters:
        from commands.credential_cache import CredentialCache

        options["credential_cache"] = CredentialCache(cache_dsn)
    return options


def time_requests(server: ApiServer, n: int, warmup: int) -> dict[str, Any]:
    import httpx

    auth = {"Authorization": f"Bearer {server.token}"}
    cached = httpx.Client(base_url=server.url, timeout=10.0)
    uncached = httpx.Client(base_url=server.url_uncached, timeout=10.0)
    routes = {
        "unauth": (cached, "/healthz", {}),
        "auth": (cached, "/api/v1/me", auth),
        "auth_uncached": (uncached, "/api/v1/me", auth),
    }
    samples: dict[str, list[float]] = {name: [] for name in routes}
    statuses: dict[str, set[int]] = {name: set() for name in routes}
    now = time.perf_counter_ns
    with cached, uncached:
        for i in range(warmup + n):
            for name, (client, path, headers) in routes.items():
                t0 = now()
                response = client.get(path, headers=headers)
                elapsed = (now() - t0) / 1e6
                statuses[name].add(response.status_code)
                if i >= warmup:
                    samples[name].append(elapsed)
    for name, seen in statuses.items():
        if seen != {200}:
            raise RuntimeError(f"{routes[name][1]} answered {sorted(seen)}, expected only 200")
    result: dict[str, Any] = {"requests": n}
    for name, values in samples.items():
        values.sort()
        result[f"{name}_p50_ms"] = percentile(values, 50)
        result[f"{name}_p99_ms"] = percentile(values, 99)
    result["overhead_p50_ms"] = result["auth_p50_ms"] - result["unauth_p50_ms"]
    result["overhead_uncached_p50_ms"] = result["auth_uncached_p50_ms"] - result["unauth_p50_ms"]
    result["parts_p50_ms"] = dict(server.parts_p50_ms)
    return result


@contextlib.contextmanager
def serving(dsn: str | None) -> Iterator[ApiServer]:
    database = Database(dsn)
    database.start()
    try:
        server = ApiServer(database.dsn)
        log(f"serving the API on {server.url} ...")
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        database.stop()


# -- the run ------------------------------------------------------------------------------


def report(decision: dict[str, Any], http: dict[str, Any] | None) -> dict[str, Any]:
    print(f"\nAuthorization benchmark; Python {sys.version.split()[0]}; {os.cpu_count()} CPUs")
    print(
        f"decide(): {decision['calls']:,} calls, each timed alone "
        f"({decision['allowed_share']:.0%} allowed)"
    )
    rows = [
        ("  p50", decision["p50_us"], "µs"),
        ("  p99  (target < 50 µs)", decision["p99_us"], "µs"),
        ("  p99.9", decision["p999_us"], "µs"),
        ("  max", decision["max_us"], "µs"),
        ("  mean", decision["mean_us"], "µs"),
        ("  timer overhead p50 (included above)", decision["timer_p50_us"], "µs"),
    ]
    if http is not None:
        rows += [
            (f"HTTP: {http['requests']:,} sequential requests per route", None, ""),
            ("  GET /healthz (unauthenticated) p50", http["unauth_p50_ms"], "ms"),
            ("  GET /healthz p99", http["unauth_p99_ms"], "ms"),
            ("  GET /api/v1/me (bearer PAT) p50", http["auth_p50_ms"], "ms"),
            ("  GET /api/v1/me p99", http["auth_p99_ms"], "ms"),
            ("  overhead p50 (target < 0.5 ms)", http["overhead_p50_ms"], "ms"),
            ("  without the credential cache: /api/v1/me p50", http["auth_uncached_p50_ms"], "ms"),
            (
                "  without the credential cache: overhead p50",
                http["overhead_uncached_p50_ms"],
                "ms",
            ),
            ("database round trips of that request, each timed alone:", None, ""),
        ]
        labels = {
            "token_lookup": "  token lookup (find_token) p50",
            "rate_limit_take": "  rate limiter take (a write) p50",
            "route_query": "  the route's own query p50",
        }
        rows += [(labels[k], v, "ms") for k, v in http["parts_p50_ms"].items()]
    width = max(len(label) for label, _, _ in rows) + 2
    for label, value, unit in rows:
        print(f"{label:<{width}}" + ("" if value is None else f"{value:>10.3f} {unit}"))

    def r(value: float | None, digits: int = 3) -> float | None:
        return None if value is None else round(value, digits)

    summary: dict[str, Any] = {
        "bench": "authz",
        "decision_p99_us": r(decision["p99_us"]),
        "decision_p50_us": r(decision["p50_us"]),
        "auth_overhead_p50_ms": r(http["overhead_p50_ms"]) if http else None,
        "decision_p999_us": r(decision["p999_us"]),
        "decision_calls": decision["calls"],
    }
    if http is not None:
        summary.update(
            unauth_p50_ms=r(http["unauth_p50_ms"]),
            auth_p50_ms=r(http["auth_p50_ms"]),
            auth_overhead_uncached_p50_ms=r(http["overhead_uncached_p50_ms"]),
            **{f"{k}_p50_ms": r(v) for k, v in http["parts_p50_ms"].items()},
            requests=http["requests"],
        )
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ops.bench.authz",
        description=(
            "Latency of the pure authorization decision, and the p50 cost an authenticated "
            "request adds over an unauthenticated one on the real API. Prints a table, then "
            "one JSON line."
        ),
    )
    parser.add_argument("--calls", type=int, default=200_000, help="decide() calls to time")
    parser.add_argument("--batch", type=int, default=10_000, help="calls per timing batch")
    parser.add_argument("--requests", type=int, default=2_000, help="measured requests per route")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up requests per route")
    parser.add_argument("--skip-http", action="store_true", help="only the decision latency")
    parser.add_argument(
        "--dsn",
        default=os.environ.get(ENV_DSN),
        help=f"superuser DSN of a server to use (default ${ENV_DSN}; else start one)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    log(f"timing {args.calls:,} decisions ...")
    decision = time_decisions(args.calls, args.batch)
    http = None
    if not args.skip_http:
        with serving(args.dsn) as server:
            log(f"timing {args.requests:,} requests per route (after {args.warmup} warm-up) ...")
            http = time_requests(server, args.requests, args.warmup)
    summary = report(decision, http)
    log(f"\nbenchmark took {time.perf_counter() - started:.0f} s")
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
