"""Query routes for the tenancy tree. They read only read tables.

Visibility: a user sees an organization and everything under it only while
a member, an organization API key only its own organization (under its role);
anything else is 404, exactly like a resource that does not exist.
``?min_position=N`` waits (bounded) until the projection has applied the event
at position N, which a command answered in ``X-ByteOr-Position``.
"""

from __future__ import annotations

import uuid

from litestar import Response, get
from litestar.params import FromPath

from domain.access import Permission
from domain.paging import Page
from projections.rows import Cursor, Limit, etag, fetch_page, keyset
from projections.scope import TENANCY, AnyRequest, MinPosition, environment_row, project_row
from projections.tenancy import (
    EnvironmentView,
    OrganizationView,
    ProjectView,
    environment_from_row,
    org_from_row,
    project_from_row,
)

ORG = "/api/v1/orgs/{org_id:uuid}"
PROJECT = ORG + "/projects/{project_id:uuid}"


@get("/api/v1/orgs", summary="Organizations you are a member of")
async def list_organizations(
    request: AnyRequest,
    min_position: MinPosition = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Page[OrganizationView]:
    pool = await TENANCY.ready(request, min_position)
    page = keyset(limit, cursor)
    principal = request.user
    # An org API key sees its own organization; a user those it is a member of.
    return await fetch_page(
        pool,
        page,
        """
        SELECT o.* FROM org_view o
        WHERE o.deleted_at IS NULL
          AND CASE WHEN $2::uuid IS NOT NULL THEN o.id = $2
                   ELSE EXISTS (SELECT 1 FROM org_member_view m
                                WHERE m.org_id = o.id AND m.user_id = $1) END
        """,
        principal.id if principal.kind == "user" else None,
        principal.org_id if principal.kind == "api_key" else None,
        build=org_from_row,
        key="o.created_at, o.id",
    )


@get(ORG, summary="An organization")
async def get_organization(
    request: AnyRequest, org_id: FromPath[uuid.UUID], min_position: MinPosition = None
) -> Response[OrganizationView]:
    pool = await TENANCY.ready_for_org(request, org_id, Permission.VIEW_ORG, min_position)
    row = await pool.fetchrow("SELECT * FROM org_view WHERE id = $1", org_id)
    view = org_from_row(row)
    return Response(view, headers=etag(view.revision))


@get(ORG + "/projects", summary="Projects of an organization")
async def list_projects(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    min_position: MinPosition = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Page[ProjectView]:
    pool = await TENANCY.ready_for_org(request, org_id, Permission.VIEW_PROJECT, min_position)
    return await fetch_page(
        pool,
        keyset(limit, cursor),
        "SELECT * FROM project_view WHERE org_id = $1 AND deleted_at IS NULL",
        org_id,
        build=project_from_row,
    )


@get(PROJECT, summary="A project")
async def get_project(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    min_position: MinPosition = None,
) -> Response[ProjectView]:
    pool = await TENANCY.ready_for_org(request, org_id, Permission.VIEW_PROJECT, min_position)
    view = project_from_row(await project_row(pool, org_id, project_id))
    return Response(view, headers=etag(view.revision))


@get(PROJECT + "/environments", summary="Environments of a project")
async def list_environments(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    min_position: MinPosition = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Page[EnvironmentView]:
    pool = await TENANCY.ready_for_project(
        request, org_id, project_id, Permission.VIEW_ENVIRONMENT, min_position
    )
    return await fetch_page(
        pool,
        keyset(limit, cursor),
        "SELECT * FROM environment_view WHERE project_id = $1 AND deleted_at IS NULL",
        project_id,
        build=environment_from_row,
    )


@get(PROJECT + "/environments/{env_id:uuid}", summary="An environment")
async def get_environment(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    env_id: FromPath[uuid.UUID],
    min_position: MinPosition = None,
) -> Response[EnvironmentView]:
    pool = await TENANCY.ready_for_org(request, org_id, Permission.VIEW_ENVIRONMENT, min_position)
    view = environment_from_row(await environment_row(pool, org_id, project_id, env_id))
    return Response(view, headers=etag(view.revision))


ROUTES = [
    list_organizations,
    get_organization,
    list_projects,
    get_project,
    list_environments,
    get_environment,
]
