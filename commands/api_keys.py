"""Organization API keys over HTTP (DOMAIN.md §2, §3, §11).

    POST   /api/v1/orgs/{org}/api-keys        {name, role, expires_at?} → 201, the key once
    GET    /api/v1/orgs/{org}/api-keys        the org's live keys (never the key or its hash)
    DELETE /api/v1/orgs/{org}/api-keys/{id}   revoke: 204; the key answers 401 from then on

Managing keys needs ManageOrgMemberships, which no API key ever holds. A key
authenticates as ``Principal(kind="api_key", org_id=..., role=...)`` and acts
in its own organization only, under its role (commands.tenancy.authorize,
projections.scope.authorize). Issue and revocation are events on the
organization's stream (``organization.api_key_issued`` / ``_revoked``),
appended in the transaction that writes the key's row.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Response, delete, get, post
from litestar.params import FromPath, QueryParameter

from commands.credential_cache import forget_credentials
from commands.credentials import API_KEY_PREFIX, check_expiry, mint_token, store_api_key
from commands.execution import deps_of, stream_append
from commands.identity import (
    AnyRequest,
    Written,
    commit,
    pool_of,
    refuse_idempotency_key,
)
from commands.tenancy import ORG, authorize, load_org
from domain import organization as org_mod
from domain.access import Permission
from domain.codec import decode_command
from domain.paging import Page, after, check_limit, page_of
from schema.pg import Connection

KEYS = ORG + "/api-keys"

Limit = Annotated[int | None, QueryParameter(description="Page size, 1..200 (default 50)")]
Cursor = Annotated[str | None, QueryParameter(description="next_cursor of the previous page")]


class Links(msgspec.Struct, frozen=True, kw_only=True):
    self: str


class ApiKeyCreated(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    key: str  # shown once
    prefix: str
    org_id: uuid.UUID
    name: str
    role: str
    expires_at: datetime | None
    created_at: datetime
    links: Links


class ApiKeyView(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    prefix: str
    org_id: uuid.UUID
    name: str
    role: str
    expires_at: datetime | None
    created_at: datetime
    last_used_at: datetime | None
    links: Links


def _links(org_id: uuid.UUID, key_id: uuid.UUID) -> Links:
    return Links(self=f"/api/v1/orgs/{org_id}/api-keys/{key_id}")


@post(KEYS, status_code=201, summary="Issue an organization API key with a role (shown once)")
async def create_api_key(request: AnyRequest, org_id: FromPath[uuid.UUID]) -> Response[bytes]:
    refuse_idempotency_key(request)
    cmd = decode_command(org_mod.IssueApiKey, await request.body())
    deps = deps_of(request)
    issued = mint_token(API_KEY_PREFIX)

    async def build(conn: Connection, now: datetime) -> Written:
        loaded = await load_org(deps, org_id)
        authorize(request.user, loaded.state, Permission.MANAGE_ORG_MEMBERSHIPS)
        check_expiry(cmd.expires_at, now)
        events = org_mod.issue_api_key(
            loaded.state, cmd, key_id=issued.id, prefix=issued.prefix, now=now
        )
        await store_api_key(
            conn,
            issued,
            org_id=org_id,
            name=cmd.name,
            role=cmd.role,
            created_by=f"{request.user.actor.kind}:{request.user.actor.id}",
            expires_at=cmd.expires_at,
            created_at=now,
        )
        return Written(
            appends=stream_append(
                deps, loaded.stream_id, org_mod.STREAM_TYPE, loaded.version, events
            ),
            tenant_id=org_id,
            status_code=201,
            body=ApiKeyCreated(
                id=issued.id,
                key=issued.token,
                prefix=issued.prefix,
                org_id=org_id,
                name=cmd.name,
                role=cmd.role,
                expires_at=cmd.expires_at,
                created_at=now,
                links=_links(org_id, issued.id),
            ),
        )

    return await commit(request, build)


def _view(row: Any) -> ApiKeyView:
    return ApiKeyView(
        id=row["id"],
        prefix=row["prefix"],
        org_id=row["org_id"],
        name=row["name"],
        role=row["role"],
        expires_at=row["expires_at"],
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        links=_links(row["org_id"], row["id"]),
    )


@get(KEYS, summary="An organization's API keys (not revoked); never the key itself")
async def list_api_keys(
    request: AnyRequest, org_id: FromPath[uuid.UUID], limit: Limit = None, cursor: Cursor = None
) -> Page[ApiKeyView]:
    deps = deps_of(request)
    loaded = await load_org(deps, org_id)
    authorize(request.user, loaded.state, Permission.MANAGE_ORG_MEMBERSHIPS)
    size = check_limit(limit)
    after_at, after_id = after(cursor)
    rows = await pool_of(request).fetch(
        """
        SELECT id, org_id, name, role, prefix, created_at, expires_at, last_used_at
        FROM org_api_keys
        WHERE org_id = $1 AND revoked_at IS NULL
          AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3))
        ORDER BY created_at, id LIMIT $4
        """,
        org_id,
        after_at,
        after_id,
        size + 1,
    )
    return page_of(rows, size, _view)


@delete(KEYS + "/{key_id:uuid}", status_code=204, summary="Revoke an organization API key")
async def revoke_api_key(
    request: AnyRequest, org_id: FromPath[uuid.UUID], key_id: FromPath[uuid.UUID]
) -> Response[None]:
    deps = deps_of(request)

    async def build(conn: Connection, now: datetime) -> Written:
        loaded = await load_org(deps, org_id)
        authorize(request.user, loaded.state, Permission.MANAGE_ORG_MEMBERSHIPS)
        events = org_mod.revoke_api_key(loaded.state, key_id)
        await conn.execute(
            """
            UPDATE org_api_keys SET revoked_at = $3
            WHERE id = $1 AND org_id = $2 AND revoked_at IS NULL
            """,
            key_id,
            org_id,
            now,
        )
        forget_credentials()
        return Written(
            appends=stream_append(
                deps, loaded.stream_id, org_mod.STREAM_TYPE, loaded.version, events
            ),
            tenant_id=org_id,
            status_code=204,
            body=None,
        )

    return await commit(request, build)


ROUTES = [create_api_key, list_api_keys, revoke_api_key]
