"""What the credential routes (tokens, API keys, sessions) share.

A credential change writes two things that must agree: the credential row
(its hash, revocation) and the event that records the change. ``commit`` does
both in one transaction, appending through ``PgEventStore.append(conn=...)``,
and re-runs the decision once on a version conflict, as ``execute`` does.

``Idempotency-Key`` is refused on routes that issue a secret: replaying the
first response would mean storing the secret, which is shown once and never
stored (422 ``idempotency_key_unsupported``).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
from litestar import Request, Response
from litestar.datastructures import State

from commands.execution import POSITION_HEADER, correlation_id, deps_of
from commands.pgstore import PgEventStore
from commands.store import ConcurrencyError
from domain.envelope import Actor, Metadata, StreamAppend
from domain.errors import FieldError, Forbidden, InvalidInput
from domain.principal import Principal
from schema.pg import Connection

AnyRequest = Request[Principal, Any, State]


class Written(msgspec.Struct, frozen=True, kw_only=True):
    appends: Sequence[StreamAppend]
    tenant_id: uuid.UUID | None
    status_code: int
    body: Any  # msgspec-encodable, or None for 204


def pool_of(request: AnyRequest) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


def require_user(principal: Principal) -> Principal:
    if principal.kind != "user":
        raise Forbidden(
            "only a user manages its own tokens and sessions", code="user_credential_required"
        )
    return principal


def refuse_idempotency_key(request: AnyRequest) -> None:
    if request.headers.get("idempotency-key") is not None:
        raise InvalidInput(
            "Idempotency-Key is not supported here: the secret this route issues is shown once",
            code="idempotency_key_unsupported",
            errors=(FieldError("header.Idempotency-Key", "not supported on this route"),),
        )


async def commit(
    request: Request[Any, Any, State],
    build: Callable[[Connection, datetime], Awaitable[Written]],
    *,
    actor: Actor | None = None,
    headers: dict[str, str] | None = None,
) -> Response[Any]:
    """Run ``build(conn, now)`` in a transaction and append its events in it; respond.

    The events' actor is the request's principal unless ``actor`` is given (a
    login has no principal yet).
    """
    deps = deps_of(request)
    pool = pool_of(request)
    store = PgEventStore(pool)
    correlation = correlation_id(request)
    for attempt in (1, 2):
        now = deps.clock()
        try:
            async with pool.acquire() as conn, conn.transaction():
                written = await build(conn, now)
                position = None
                if written.appends:
                    result = await store.append(
                        written.appends,
                        Metadata(
                            actor=actor or request.user.actor,
                            tenant_id=written.tenant_id,
                            correlation_id=correlation,
                            recorded_at=now,
                        ),
                        conn=conn,
                    )
                    position = result.last_position
        except ConcurrencyError:
            if attempt == 2:
                raise
            continue
        out = {**(headers or {}), "X-Correlation-ID": str(correlation)}
        if position:
            out[POSITION_HEADER] = str(position)
        return Response(
            content=b"" if written.body is None else msgspec.json.encode(written.body),
            status_code=written.status_code,
            media_type="application/json",
            headers=out,
        )
    raise AssertionError("unreachable")
