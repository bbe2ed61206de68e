"""Personal access tokens over HTTP (DOMAIN.md §2, §11).

    POST   /api/v1/tokens          {name, expires_at?, scopes?} → 201, the token once
    GET    /api/v1/tokens          the caller's live tokens (never the token or its hash)
    DELETE /api/v1/tokens/{id}     revoke: 204; the token answers 401 from then on

Only a user principal manages tokens, and only its own (another user's token
id answers 404). Issue and revocation are events on the user's stream
(``user.token_issued`` / ``user.token_revoked``), appended in the transaction
that writes the credential row.

Scopes (optional) narrow a token to a list of permissions (``ViewOrg``,
``ManageProject``, …) within what the user's memberships allow. A narrowed
token may only issue tokens narrowed at least as far (no escalation).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Response, delete, get, post
from litestar.params import FromPath, QueryParameter

from commands.credential_cache import forget_credentials
from commands.credentials import PAT_PREFIX, check_expiry, mint_token, store_token
from commands.execution import deps_of, load, stream_append
from commands.identity import (
    AnyRequest,
    Written,
    commit,
    pool_of,
    refuse_idempotency_key,
    require_user,
)
from domain import user as user_mod
from domain.access import Permission
from domain.codec import decode_command
from domain.errors import Forbidden, NotFound
from domain.organization import Expiry, Name
from domain.paging import Page, after, check_limit, page_of
from schema.pg import Connection

BASE = "/api/v1/tokens"

Limit = Annotated[int | None, QueryParameter(description="Page size, 1..200 (default 50)")]
Cursor = Annotated[str | None, QueryParameter(description="next_cursor of the previous page")]


class CreateToken(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Name
    expires_at: Expiry | None = None
    scopes: Annotated[list[Permission], msgspec.Meta(max_length=len(Permission))] = []


class Links(msgspec.Struct, frozen=True, kw_only=True):
    self: str


class TokenCreated(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    token: str  # shown once
    prefix: str
    name: str
    scopes: list[str]
    expires_at: datetime | None
    created_at: datetime
    links: Links


class TokenView(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    prefix: str
    name: str
    scopes: list[str]
    expires_at: datetime | None
    created_at: datetime
    last_used_at: datetime | None
    links: Links


def _links(token_id: uuid.UUID) -> Links:
    return Links(self=f"{BASE}/{token_id}")


def _scopes(requested: list[Permission], held: tuple[str, ...]) -> tuple[str, ...]:
    scopes = tuple(sorted({p.value for p in requested}))
    if held and (not scopes or not set(scopes) <= set(held)):
        raise Forbidden(
            "a narrowed token may only issue tokens narrowed to its own scopes or fewer",
            code="scope_escalation",
            context={"held": list(held)},
        )
    return scopes


@post(BASE, status_code=201, summary="Issue a personal access token (shown once)")
async def create_token(request: AnyRequest) -> Response[bytes]:
    principal = require_user(request.user)
    refuse_idempotency_key(request)
    cmd = decode_command(CreateToken, await request.body())
    scopes = _scopes(cmd.scopes, principal.scopes)
    deps = deps_of(request)
    issued = mint_token(PAT_PREFIX)

    async def build(conn: Connection, now: datetime) -> Written:
        check_expiry(cmd.expires_at, now)
        loaded = await load(deps, user_mod.stream_id(principal.id), user_mod.fold)
        events = user_mod.issue_token(
            loaded.state,
            token_id=issued.id,
            name=cmd.name,
            prefix=issued.prefix,
            expires_at=cmd.expires_at,
            scopes=scopes,
        )
        await store_token(
            conn,
            issued,
            user_id=principal.id,
            name=cmd.name,
            expires_at=cmd.expires_at,
            scopes=scopes,
            created_at=now,
        )
        return Written(
            appends=stream_append(
                deps, loaded.stream_id, user_mod.STREAM_TYPE, loaded.version, events
            ),
            tenant_id=None,
            status_code=201,
            body=TokenCreated(
                id=issued.id,
                token=issued.token,
                prefix=issued.prefix,
                name=cmd.name,
                scopes=list(scopes),
                expires_at=cmd.expires_at,
                created_at=now,
                links=_links(issued.id),
            ),
        )

    return await commit(request, build)


def _view(row: Any) -> TokenView:
    return TokenView(
        id=row["id"],
        prefix=row["prefix"],
        name=row["name"],
        scopes=list(row["scopes"] or ()),
        expires_at=row["expires_at"],
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        links=_links(row["id"]),
    )


@get(BASE, summary="Your personal access tokens (not revoked); never the token itself")
async def list_tokens(
    request: AnyRequest, limit: Limit = None, cursor: Cursor = None
) -> Page[TokenView]:
    principal = require_user(request.user)
    size = check_limit(limit)
    after_at, after_id = after(cursor)
    rows = await pool_of(request).fetch(
        """
        SELECT id, name, prefix, scopes, created_at, expires_at, last_used_at
        FROM personal_access_tokens
        WHERE user_id = $1 AND revoked_at IS NULL
          AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3))
        ORDER BY created_at, id LIMIT $4
        """,
        principal.id,
        after_at,
        after_id,
        size + 1,
    )
    return page_of(rows, size, _view)


@delete(BASE + "/{token_id:uuid}", status_code=204, summary="Revoke one of your tokens")
async def revoke_token(request: AnyRequest, token_id: FromPath[uuid.UUID]) -> Response[None]:
    principal = require_user(request.user)
    deps = deps_of(request)

    async def build(conn: Connection, now: datetime) -> Written:
        row = await conn.fetchrow(
            """
            SELECT revoked_at FROM personal_access_tokens
            WHERE id = $1 AND user_id = $2 FOR UPDATE
            """,
            token_id,
            principal.id,
        )
        if row is None or row["revoked_at"] is not None:
            raise NotFound("token not found", code="token_not_found")
        loaded = await load(deps, user_mod.stream_id(principal.id), user_mod.fold)
        events = user_mod.revoke_token(loaded.state, token_id=token_id)
        await conn.execute(
            "UPDATE personal_access_tokens SET revoked_at = $2 WHERE id = $1", token_id, now
        )
        forget_credentials()
        return Written(
            appends=stream_append(
                deps, loaded.stream_id, user_mod.STREAM_TYPE, loaded.version, events
            ),
            tenant_id=None,
            status_code=204,
            body=None,
        )

    return await commit(request, build)


ROUTES = [create_token, list_tokens, revoke_token]
