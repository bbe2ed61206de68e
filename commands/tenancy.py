"""Write routes for the tenancy tree: organizations, projects, environments.

Each handler decodes a strict command, then hands ``execute`` a decision:
load the aggregates it needs → check access → decide (pure, domain/) →
events to append plus the representation to answer with.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from litestar import Request, Response, delete, post, put
from litestar.datastructures import State
from litestar.params import FromPath

from commands.execution import (
    CommandDeps,
    Loaded,
    Outcome,
    check_if_match,
    deps_of,
    etag_of,
    execute,
    load,
    stream_append,
)
from commands.views import environment_view, organization_view, project_view
from domain import environment as env_mod
from domain import organization as org_mod
from domain import project as project_mod
from domain.access import (
    Membership,
    Permission,
    ResourcePath,
    decide,
    membership_from_members,
    require_decision,
)
from domain.codec import Event, decode_command
from domain.errors import Forbidden, NotFound
from domain.principal import Principal

BASE = "/api/v1/orgs"
ORG = BASE + "/{org_id:uuid}"
PROJECT = ORG + "/projects/{project_id:uuid}"
ENVIRONMENT = PROJECT + "/environments/{env_id:uuid}"

AnyRequest = Request[Principal, Any, State]


async def load_org(deps: CommandDeps, org_id: uuid.UUID) -> Loaded[org_mod.Organization]:
    return await load(deps, org_mod.stream_id(org_id), org_mod.fold)


def membership_of(principal: Principal, org: org_mod.Organization | None) -> Membership | None:
    """The principal's standing in ``org``: a user's membership, or an org API key's
    own organization with the role it was issued with (while the key is active)."""
    if org is None or org.status != "active":
        return None
    if principal.kind == "user":
        return membership_from_members(org.id, org.members, principal.id)
    if principal.kind == "api_key" and principal.org_id == org.id:
        role = org.api_keys.get(str(principal.id))
        return None if role is None else Membership(org_id=org.id, org_role=role)
    return None


def authorize(
    principal: Principal, org: org_mod.Organization | None, permission: Permission
) -> None:
    """Members only (others get 404 as if the org did not exist), then the role table
    (domain.access.decide), then a narrowed token's scopes."""
    if org is None:
        # Nothing to deny: a missing organization is not an access denial (audit).
        raise NotFound("organization not found", code="organization_not_found")
    path = ResourcePath(org.id)
    decision = decide(principal.kind, membership_of(principal, org), permission, path)
    require_decision(decision, "organization")
    if principal.scopes and permission.value not in principal.scopes:
        raise Forbidden(
            f"this token is not scoped for {permission.value}",
            code="permission_denied",
            context={"permission": permission.value, "reason": "token_scope"},
        )


def updated(
    deps: CommandDeps,
    module: Any,
    loaded: Loaded[Any],
    events: Sequence[Event],
    view: Any,
    *,
    tenant_id: uuid.UUID,
    now: datetime,
) -> Outcome:
    """An update's outcome: ``events`` on the loaded stream, answered with the new state.

    ``module`` is the aggregate's module (its ``STREAM_TYPE`` and ``evolve``).
    A no-op update appends nothing and keeps the old timestamps.
    """
    state: Any = loaded.state
    for event in events:
        state = module.evolve(state, event)
    return Outcome(
        appends=stream_append(deps, loaded.stream_id, module.STREAM_TYPE, loaded.version, events),
        tenant_id=tenant_id,
        status_code=200,
        body=view(state, loaded.created_at or now, now if events else (loaded.updated_at or now)),
        etag=etag_of(state.version),
        position=loaded.last_position,
    )


def deleted(
    deps: CommandDeps,
    module: Any,
    loaded: Loaded[Any],
    events: Sequence[Event],
    *,
    tenant_id: uuid.UUID,
) -> Outcome:
    return Outcome(
        appends=stream_append(deps, loaded.stream_id, module.STREAM_TYPE, loaded.version, events),
        tenant_id=tenant_id,
        status_code=204,
        body=None,
    )


# --- organizations ------------------------------------------------------------------


@post(BASE, status_code=201, summary="Create an organization; the caller becomes its org_admin")
async def create_organization(request: AnyRequest) -> Response[bytes]:
    deps = deps_of(request)
    cmd = decode_command(org_mod.CreateOrganization, await request.body())
    principal = request.user
    if principal.kind != "user":
        raise Forbidden("only users create organizations", code="permission_denied")
    org_id = deps.new_id()

    async def decide(now: datetime) -> Outcome:
        events = org_mod.create_organization(cmd, org_id=org_id, created_by=principal.id)
        state = org_mod.fold(events)
        assert state is not None
        return Outcome(
            appends=stream_append(deps, org_mod.stream_id(org_id), org_mod.STREAM_TYPE, 0, events),
            tenant_id=org_id,
            status_code=201,
            body=organization_view(state, now, now),
            etag=etag_of(state.version),
        )

    return await execute(request, deps, decide)


@put(ORG, summary="Update an organization's name or settings (If-Match: revision)")
async def update_organization(request: AnyRequest, org_id: FromPath[uuid.UUID]) -> Response[bytes]:
    deps = deps_of(request)
    cmd = decode_command(org_mod.UpdateOrganization, await request.body())

    async def decide(now: datetime) -> Outcome:
        loaded = await load_org(deps, org_id)
        authorize(request.user, loaded.state, Permission.MANAGE_ORG_MEMBERSHIPS)
        check_if_match(request, loaded.version)
        events = org_mod.update_organization(loaded.state, cmd)
        return updated(deps, org_mod, loaded, events, organization_view, tenant_id=org_id, now=now)

    return await execute(request, deps, decide)


@delete(ORG, status_code=204, summary="Delete an organization and, in read models, its children")
async def delete_organization(request: AnyRequest, org_id: FromPath[uuid.UUID]) -> Response[None]:
    deps = deps_of(request)

    async def decide(now: datetime) -> Outcome:
        loaded = await load_org(deps, org_id)
        authorize(request.user, loaded.state, Permission.MANAGE_ORG_MEMBERSHIPS)
        check_if_match(request, loaded.version)
        events = org_mod.delete_organization(loaded.state)
        return deleted(deps, org_mod, loaded, events, tenant_id=org_id)

    return await execute(request, deps, decide)


# --- projects -----------------------------------------------------------------------


@post(ORG + "/projects", status_code=201, summary="Create a project in an organization")
async def create_project(request: AnyRequest, org_id: FromPath[uuid.UUID]) -> Response[bytes]:
    deps = deps_of(request)
    cmd = decode_command(project_mod.CreateProject, await request.body())
    project_id = deps.new_id()

    async def decide(now: datetime) -> Outcome:
        org = await load_org(deps, org_id)
        authorize(request.user, org.state, Permission.MANAGE_PROJECT)
        events = project_mod.create_project(org.state, cmd, project_id=project_id)
        state = project_mod.fold(events)
        assert state is not None
        return Outcome(
            appends=stream_append(
                deps, project_mod.stream_id(project_id), project_mod.STREAM_TYPE, 0, events
            ),
            tenant_id=org_id,
            status_code=201,
            body=project_view(state, now, now),
            etag=etag_of(state.version),
        )

    return await execute(request, deps, decide)


async def _load_project(
    deps: CommandDeps,
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    perm: Permission,
) -> tuple[Loaded[org_mod.Organization], Loaded[project_mod.Project]]:
    org = await load_org(deps, org_id)
    authorize(request.user, org.state, perm)
    project = await load(deps, project_mod.stream_id(project_id), project_mod.fold)
    project_mod.require_project(org.state, project.state)
    return org, project


@put(PROJECT, summary="Update a project's name or description (If-Match: revision)")
async def update_project(
    request: AnyRequest, org_id: FromPath[uuid.UUID], project_id: FromPath[uuid.UUID]
) -> Response[bytes]:
    deps = deps_of(request)
    cmd = decode_command(project_mod.UpdateProject, await request.body())

    async def decide(now: datetime) -> Outcome:
        org, project = await _load_project(
            deps, request, org_id, project_id, Permission.MANAGE_PROJECT
        )
        check_if_match(request, project.version)
        events = project_mod.update_project(org.state, project.state, cmd)
        return updated(deps, project_mod, project, events, project_view, tenant_id=org_id, now=now)

    return await execute(request, deps, decide)


@delete(PROJECT, status_code=204, summary="Delete a project and, in read models, its environments")
async def delete_project(
    request: AnyRequest, org_id: FromPath[uuid.UUID], project_id: FromPath[uuid.UUID]
) -> Response[None]:
    deps = deps_of(request)

    async def decide(now: datetime) -> Outcome:
        org, project = await _load_project(
            deps, request, org_id, project_id, Permission.MANAGE_PROJECT
        )
        check_if_match(request, project.version)
        events = project_mod.delete_project(org.state, project.state)
        return deleted(deps, project_mod, project, events, tenant_id=org_id)

    return await execute(request, deps, decide)


# --- environments -------------------------------------------------------------------


@post(PROJECT + "/environments", status_code=201, summary="Create an environment in a project")
async def create_environment(
    request: AnyRequest, org_id: FromPath[uuid.UUID], project_id: FromPath[uuid.UUID]
) -> Response[bytes]:
    deps = deps_of(request)
    cmd = decode_command(env_mod.CreateEnvironment, await request.body())
    env_id = deps.new_id()

    async def decide(now: datetime) -> Outcome:
        org, project = await _load_project(
            deps, request, org_id, project_id, Permission.MANAGE_PROJECT
        )
        events = env_mod.create_environment(org.state, project.state, cmd, environment_id=env_id)
        state = env_mod.fold(events)
        assert state is not None
        return Outcome(
            appends=stream_append(deps, env_mod.stream_id(env_id), env_mod.STREAM_TYPE, 0, events),
            tenant_id=org_id,
            status_code=201,
            body=environment_view(state, now, now),
            etag=etag_of(state.version),
        )

    return await execute(request, deps, decide)


async def _load_environment(
    deps: CommandDeps,
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    env_id: FromPath[uuid.UUID],
    perm: Permission,
) -> tuple[Loaded[org_mod.Organization], Loaded[project_mod.Project], Loaded[env_mod.Environment]]:
    org, project = await _load_project(deps, request, org_id, project_id, perm)
    env = await load(deps, env_mod.stream_id(env_id), env_mod.fold)
    env_mod.require_environment(org.state, project.state, env.state)
    return org, project, env


@put(ENVIRONMENT, summary="Update an environment's name, posture or settings (If-Match)")
async def update_environment(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    env_id: FromPath[uuid.UUID],
) -> Response[bytes]:
    deps = deps_of(request)
    cmd = decode_command(env_mod.UpdateEnvironment, await request.body())

    async def decide(now: datetime) -> Outcome:
        org, project, env = await _load_environment(
            deps, request, org_id, project_id, env_id, Permission.MANAGE_ENVIRONMENT
        )
        check_if_match(request, env.version)
        events = env_mod.update_environment(org.state, project.state, env.state, cmd)
        return updated(deps, env_mod, env, events, environment_view, tenant_id=org_id, now=now)

    return await execute(request, deps, decide)


@delete(ENVIRONMENT, status_code=204, summary="Delete an environment")
async def delete_environment(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    env_id: FromPath[uuid.UUID],
) -> Response[None]:
    deps = deps_of(request)

    async def decide(now: datetime) -> Outcome:
        org, project, env = await _load_environment(
            deps, request, org_id, project_id, env_id, Permission.MANAGE_PROJECT
        )
        check_if_match(request, env.version)
        events = env_mod.delete_environment(org.state, project.state, env.state)
        return deleted(deps, env_mod, env, events, tenant_id=org_id)

    return await execute(request, deps, decide)


ROUTES = [
    create_organization,
    update_organization,
    delete_organization,
    create_project,
    update_project,
    delete_project,
    create_environment,
    update_environment,
    delete_environment,
]
