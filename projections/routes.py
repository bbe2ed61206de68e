"""Query routes for the tenancy tree. They read only read tables.

Visibility: a user sees an organization and everything under it only while
a member, an organization API key only its own organization (under its role);
anything else is 404, exactly like a resource that does not exist.
``?min_position=N`` waits (bounded) until the projection has applied the event
at position N, which a command answered in ``X-ByteOr-Position``.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import asyncpg
from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.params import FromPath, QueryParameter

from domain.access import Membership, Permission, ResourcePath, decide, require_decision
from domain.errors import DomainError, FieldError, Forbidden, NotFound
from domain.organization import ROLES, Role
from domain.paging import Page, after, check_limit, page_of
from domain.principal import Principal
from projections.feed import PgFeed
from projections.runner import wait_for_position
from projections.tenancy import (
    NAME,
    EnvironmentView,
    OrganizationView,
    ProjectView,
    environment_from_row,
    org_from_row,
    project_from_row,
)

AnyRequest = Request[Principal, Any, State]
_ROLES: dict[str | None, Role] = {role: role for role in ROLES}
ORG = "/api/v1/orgs/{org_id:uuid}"
PROJECT = ORG + "/projects/{project_id:uuid}"

MinPosition = Annotated[
    int | None,
    QueryParameter(ge=0, description="Wait until the read model includes this event position"),
]
Limit = Annotated[int | None, QueryParameter(description="Page size, 1..200 (default 50)")]
Cursor = Annotated[str | None, QueryParameter(description="next_cursor of the previous page")]


class ProjectionBehind(DomainError):
    status = 503
    code = "projection_behind"


async def _ready(request: AnyRequest, min_position: int | None) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    if min_position:
        feed: PgFeed = request.app.state.feed
        max_wait = request.app.state.projection_wait_s
        if not await wait_for_position(pool, feed, NAME, min_position, max_wait):
            raise ProjectionBehind(
                f"the read model has not reached position {min_position} yet; retry",
                errors=(FieldError("query.min_position", "not reached within the wait limit"),),
            )
    return pool


async def _authorize(
    pool: asyncpg.Pool, principal: Principal, org_id: uuid.UUID, permission: Permission
) -> None:
    """404 unless the principal belongs to the (live) organization, then the role
    table: a user through org_member_view, an org API key through its own
    organization and the role it was issued with. Then a narrowed token's scopes."""
    role: str | None = None
    if principal.kind == "user":
        role = await pool.fetchval(
            """
            SELECT m.role FROM org_member_view m JOIN org_view o ON o.id = m.org_id
            WHERE m.org_id = $1 AND m.user_id = $2 AND o.deleted_at IS NULL
            """,
            org_id,
            principal.id,
        )
    elif principal.kind == "api_key" and principal.org_id == org_id:
        live = await pool.fetchval(
            "SELECT true FROM org_view WHERE id = $1 AND deleted_at IS NULL", org_id
        )
        role = principal.role if live else None
    membership = Membership(org_id=org_id, org_role=_ROLES[role]) if role in _ROLES else None
    decision = decide(principal.kind, membership, permission, ResourcePath(org_id))
    if decision.status == 404 and not await pool.fetchval(
        "SELECT true FROM org_view WHERE id = $1 AND deleted_at IS NULL", org_id
    ):
        # Nothing to deny: a missing organization is not an access denial (audit).
        raise NotFound("organization not found", code="organization_not_found")
    require_decision(decision, "organization")
    if principal.scopes and permission.value not in principal.scopes:
        raise Forbidden(
            f"this token is not scoped for {permission.value}",
            code="permission_denied",
            context={"permission": permission.value, "reason": "token_scope"},
        )


def _etag(revision: int) -> dict[str, str]:
    return {"ETag": f'"{revision}"'}


@get("/api/v1/orgs", summary="Organizations you are a member of")
async def list_organizations(
    request: AnyRequest,
    min_position: MinPosition = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Page[OrganizationView]:
    pool = await _ready(request, min_position)
    size = check_limit(limit)
    after_at, after_id = after(cursor)
    principal = request.user
    # An org API key sees its own organization; a user those it is a member of.
    rows = await pool.fetch(
        """
        SELECT o.* FROM org_view o
        WHERE o.deleted_at IS NULL
          AND CASE WHEN $5::uuid IS NOT NULL THEN o.id = $5
                   ELSE EXISTS (SELECT 1 FROM org_member_view m
                                WHERE m.org_id = o.id AND m.user_id = $1) END
          AND ($2::timestamptz IS NULL OR (o.created_at, o.id) > ($2, $3))
        ORDER BY o.created_at, o.id LIMIT $4
        """,
        principal.id if principal.kind == "user" else None,
        after_at,
        after_id,
        size + 1,
        principal.org_id if principal.kind == "api_key" else None,
    )
    return page_of(rows, size, org_from_row)


@get(ORG, summary="An organization")
async def get_organization(
    request: AnyRequest, org_id: FromPath[uuid.UUID], min_position: MinPosition = None
) -> Response[OrganizationView]:
    pool = await _ready(request, min_position)
    await _authorize(pool, request.user, org_id, Permission.VIEW_ORG)
    row = await pool.fetchrow("SELECT * FROM org_view WHERE id = $1", org_id)
    view = org_from_row(row)
    return Response(view, headers=_etag(view.revision))


@get(ORG + "/projects", summary="Projects of an organization")
async def list_projects(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    min_position: MinPosition = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Page[ProjectView]:
    pool = await _ready(request, min_position)
    await _authorize(pool, request.user, org_id, Permission.VIEW_PROJECT)
    size = check_limit(limit)
    after_at, after_id = after(cursor)
    rows = await pool.fetch(
        """
        SELECT * FROM project_view
        WHERE org_id = $1 AND deleted_at IS NULL
          AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3))
        ORDER BY created_at, id LIMIT $4
        """,
        org_id,
        after_at,
        after_id,
        size + 1,
    )
    return page_of(rows, size, project_from_row)


async def _project_row(pool: asyncpg.Pool, org_id: uuid.UUID, project_id: uuid.UUID) -> Any:
    row = await pool.fetchrow(
        "SELECT * FROM project_view WHERE id = $1 AND org_id = $2 AND deleted_at IS NULL",
        project_id,
        org_id,
    )
    if row is None:
        raise NotFound("project not found", code="project_not_found")
    return row


@get(PROJECT, summary="A project")
async def get_project(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    min_position: MinPosition = None,
) -> Response[ProjectView]:
    pool = await _ready(request, min_position)
    await _authorize(pool, request.user, org_id, Permission.VIEW_PROJECT)
    view = project_from_row(await _project_row(pool, org_id, project_id))
    return Response(view, headers=_etag(view.revision))


@get(PROJECT + "/environments", summary="Environments of a project")
async def list_environments(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    min_position: MinPosition = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Page[EnvironmentView]:
    pool = await _ready(request, min_position)
    await _authorize(pool, request.user, org_id, Permission.VIEW_ENVIRONMENT)
    await _project_row(pool, org_id, project_id)
    size = check_limit(limit)
    after_at, after_id = after(cursor)
    rows = await pool.fetch(
        """
        SELECT * FROM environment_view
        WHERE project_id = $1 AND deleted_at IS NULL
          AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3))
        ORDER BY created_at, id LIMIT $4
        """,
        project_id,
        after_at,
        after_id,
        size + 1,
    )
    return page_of(rows, size, environment_from_row)


@get(PROJECT + "/environments/{env_id:uuid}", summary="An environment")
async def get_environment(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    env_id: FromPath[uuid.UUID],
    min_position: MinPosition = None,
) -> Response[EnvironmentView]:
    pool = await _ready(request, min_position)
    await _authorize(pool, request.user, org_id, Permission.VIEW_ENVIRONMENT)
    row = await pool.fetchrow(
        """
        SELECT * FROM environment_view
        WHERE id = $1 AND project_id = $2 AND org_id = $3 AND deleted_at IS NULL
        """,
        env_id,
        project_id,
        org_id,
    )
    if row is None:
        raise NotFound("environment not found", code="environment_not_found")
    view = environment_from_row(row)
    return Response(view, headers=_etag(view.revision))


ROUTES = [
    list_organizations,
    get_organization,
    list_projects,
    get_project,
    list_environments,
    get_environment,
]
