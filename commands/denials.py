"""Authorization denials into the audit log, counted so a flood cannot flood it.

Every 403, and every 404 that ``domain.access`` answered to hide another
tenant's resource (its ``context`` says ``denied``), is one upsert into
``access_denials`` keyed by (principal, route, minute): the first denial of a
minute inserts the row, the others add to its count. Once a minute is over,
``flush`` deletes its rows and appends one ``access.denied`` event per row
(domain/audit.py) in the same transaction, so each count reaches the event
store exactly once or stays in the table for the next flush. Any API process
may flush; ``FOR UPDATE SKIP LOCKED`` lets several share the work.

Recording never changes the response: if the database cannot take the upsert
the denial is logged (without secrets) and the caller still gets its 403/404.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from litestar.types import Scope

from commands.pgstore import PgEventStore
from domain import audit
from domain.codec import EventCodec
from domain.envelope import Actor, Metadata, StreamAppend
from domain.errors import Forbidden, NotFound
from domain.principal import Principal
from schema.pg import AnyPool

log = logging.getLogger("byteor.audit")

Clock = Callable[[], datetime]

_RECORD = """
INSERT INTO access_denials AS d (
    principal_key, route, minute, principal_kind, principal_id, credential_family,
    credential_id, org_id, status, code, permission, reason, count, first_at, last_at)
VALUES ($1, $2, date_trunc('minute', $3::timestamptz), $4, $5, $6, $7, $8, $9, $10, $11, $12,
        1, $3, $3)
ON CONFLICT (principal_key, route, minute) DO UPDATE
SET count = d.count + 1,
    first_at = least(d.first_at, EXCLUDED.first_at),
    last_at = greatest(d.last_at, EXCLUDED.last_at)
"""

_TAKE_CLOSED = """
DELETE FROM access_denials
WHERE (principal_key, route, minute) IN (
    SELECT principal_key, route, minute FROM access_denials
    WHERE minute < date_trunc('minute', $1::timestamptz)
    ORDER BY minute
    LIMIT $2
    FOR UPDATE SKIP LOCKED)
RETURNING *
"""

_VERSIONS = """
SELECT stream_id, max(stream_version) FROM events WHERE stream_id = ANY($1::text[]) GROUP BY 1
"""


def denial_of(exc: BaseException) -> tuple[int, str, dict[str, Any]] | None:
    """(status, code, context) when ``exc`` is an authorization denial, else None."""
    if isinstance(exc, Forbidden):
        return 403, exc.code, exc.context
    if isinstance(exc, NotFound) and exc.context.get("denied"):
        return 404, exc.code, exc.context
    return None


class DenialRecorder:
    """Counts denials in ``access_denials``; ``on_exception`` is a Litestar after_exception hook."""

    def __init__(self, pool: AnyPool, clock: Clock) -> None:
        self.pool = pool
        self.clock = clock

    async def on_exception(self, exc: BaseException, scope: Scope) -> None:
        denial = denial_of(exc)
        user = scope.get("user")
        if denial is None or not isinstance(user, Principal):
            return
        status, code, context = denial
        route = f"{scope.get('method', '?')} {scope.get('path_template') or scope['path']}"
        org_id = (scope.get("path_params") or {}).get("org_id") or user.org_id
        try:
            await self.record(
                user,
                route,
                status,
                code,
                context,
                org_id if isinstance(org_id, uuid.UUID) else None,
            )
        except Exception as err:  # the caller's answer must not depend on the audit write
            log.warning(
                "could not record an access denial: %s", type(err).__name__, extra={"route": route}
            )

    async def record(
        self,
        principal: Principal,
        route: str,
        status: int,
        code: str,
        context: dict[str, Any],
        org_id: uuid.UUID | None,
    ) -> None:
        permission, reason = context.get("permission"), context.get("reason")
        await self.pool.execute(
            _RECORD,
            principal.key,
            route,
            self.clock(),
            principal.kind,
            principal.id,
            principal.family,
            principal.credential_id,
            org_id,
            status,
            code,
            str(permission) if permission is not None else None,
            str(reason) if reason is not None else None,
        )


def _actor(kind: str, principal_id: uuid.UUID) -> Actor:
    # The denied principal is the actor of its denial, as Principal.actor maps it.
    actor_kind = "token" if kind == "enrollment" else kind
    return Actor(kind=actor_kind, id=str(principal_id))  # type: ignore[arg-type]


async def flush(
    pool: Any, store: PgEventStore, codec: EventCodec, now: datetime, *, batch: int = 500
) -> int:
    """Move every minute before ``now``'s into the event store; returns events appended."""
    total = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_TAKE_CLOSED, now, batch)
            if not rows:
                return total
            streams = [audit.stream_id(r["principal_key"], r["route"], r["minute"]) for r in rows]
            versions = dict(await conn.fetch(_VERSIONS, streams))
            for row, stream in zip(rows, streams, strict=True):
                event = audit.AccessDenied(
                    principal_kind=row["principal_kind"],
                    principal_id=row["principal_id"],
                    credential_family=row["credential_family"],
                    credential_id=row["credential_id"],
                    route=row["route"],
                    minute=row["minute"],
                    count=row["count"],
                    first_at=row["first_at"],
                    last_at=row["last_at"],
                    status=row["status"],
                    code=row["code"],
                    permission=row["permission"],
                    reason=row["reason"],
                    org_id=row["org_id"],
                )
                append = StreamAppend(
                    stream_id=stream,
                    stream_type=audit.STREAM_TYPE,
                    expected_version=versions.get(stream, 0),
                    events=(codec.encode(event),),
                )
                meta = Metadata(
                    actor=_actor(row["principal_kind"], row["principal_id"]),
                    tenant_id=row["org_id"],
                    correlation_id=uuid.uuid4(),
                    command_id="access-denials-flush",
                )
                await store.append([append], meta, conn=conn)
        total += len(rows)
        if len(rows) < batch:
            return total


class DenialFlusher:
    """Flushes closed minutes every ``interval`` seconds until stopped."""

    def __init__(
        self,
        pool: Any,
        store: PgEventStore,
        codec: EventCodec,
        clock: Clock,
        *,
        interval: float = 10.0,
    ) -> None:
        self.pool, self.store, self.codec, self.clock = pool, store, codec, clock
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                await flush(self.pool, self.store, self.codec, self.clock())
            except Exception as err:  # a housekeeping loop: the rows wait for the next round
                log.warning("access-denial flush failed: %s: %s", type(err).__name__, err)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)

    def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
        self._task = None


__all__ = ["DenialFlusher", "DenialRecorder", "denial_of", "flush"]
