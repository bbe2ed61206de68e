"""Operational routes: /healthz (the process answers), /readyz (it can serve)."""

from __future__ import annotations

from typing import Any

import asyncpg
from litestar import Request, Response, get

from ops.telemetry import projection_lag
from schema.migrate import is_up_to_date


@get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", include_in_schema=False)
async def readyz(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    """Ready when the database answers and every migration is applied; lag is detail."""
    pool: asyncpg.Pool = request.app.state.pool
    checks: dict[str, Any] = {}
    ready = True
    try:
        async with pool.acquire(timeout=2) as conn:
            await conn.fetchval("SELECT 1")
            checks["database"] = "ok"
            migrated = await is_up_to_date(conn)
            checks["migrations"] = "ok" if migrated else "pending"
            ready = migrated
        checks["projections"] = await projection_lag(pool)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
        ready = False
    body = {"status": "ready" if ready else "not_ready", "checks": checks}
    return Response(body, status_code=200 if ready else 503)
