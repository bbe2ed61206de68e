"""What a query route may read, checked in one order for every route.

1. Read-your-writes: ``?min_position=N`` waits (bounded) until the route's read
   model has applied the event at position N, which a command answered in
   ``X-ByteOr-Position``, and so has the tenancy read model whenever the route
   checks the organization, project or environment there (each projection
   runs on its own, so one being at N says nothing of the other); past the
   wait it is a 503 ``projection_behind``.
2. The caller's access to the organization (``authorize``): another tenant's
   organization is 404, exactly like one that does not exist.
3. The live project or environment in the path (``project_row``,
   ``environment_row``): 404 when deleted or not under that organization.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

import asyncpg
from litestar import Request
from litestar.datastructures import State
from litestar.params import QueryParameter

from domain.access import Membership, Permission, ResourcePath, decide, require_decision
from domain.errors import DomainError, FieldError, Forbidden, NotFound
from domain.organization import ROLES, Role
from domain.principal import Principal
from projections.feed import PgFeed
from projections.rows import fetch_one
from projections.runner import wait_for_position
from projections.tenancy import NAME as TENANCY_NAME

AnyRequest = Request[Principal, Any, State]
MinPosition = Annotated[
    int | None,
    QueryParameter(ge=0, description="Wait until the read model includes this event position"),
]
_ROLES: dict[str | None, Role] = {role: role for role in ROLES}


class ProjectionBehind(DomainError):
    status = 503
    code = "projection_behind"


async def authorize(
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


async def project_row(pool: asyncpg.Pool, org_id: uuid.UUID, project_id: uuid.UUID) -> Any:
    return await fetch_one(
        pool,
        "project",
        "project_not_found",
        "SELECT * FROM project_view WHERE id = $1 AND org_id = $2 AND deleted_at IS NULL",
        project_id,
        org_id,
    )


async def environment_row(
    pool: asyncpg.Pool, org_id: uuid.UUID, project_id: uuid.UUID, env_id: uuid.UUID
) -> Any:
    # The tenancy projection deletes a project's environments with it, so a live
    # environment row is enough: its project is live too.
    return await fetch_one(
        pool,
        "environment",
        "environment_not_found",
        """
        SELECT * FROM environment_view
        WHERE id = $1 AND project_id = $2 AND org_id = $3 AND deleted_at IS NULL
        """,
        env_id,
        project_id,
        org_id,
    )


@dataclass(frozen=True)
class ReadModel:
    """A projection that query routes read: ``name`` is its checkpoint, ``label``
    how a 503 names it."""

    name: str
    label: str

    async def ready(
        self, request: AnyRequest, min_position: int | None, *, with_tenancy: bool = False
    ) -> asyncpg.Pool:
        """The pool, once this projection (and with ``with_tenancy`` the tenancy
        projection too) has applied ``min_position``, within one wait limit."""
        pool: asyncpg.Pool = request.app.state.pool
        if min_position:
            feed: PgFeed = request.app.state.feed
            deadline = time.monotonic() + request.app.state.projection_wait_s
            models = (self, TENANCY) if with_tenancy and self.name != TENANCY.name else (self,)
            for model in models:
                left = max(0.0, deadline - time.monotonic())
                if not await wait_for_position(pool, feed, model.name, min_position, left):
                    raise ProjectionBehind(
                        f"{model.label} has not reached position {min_position} yet; retry",
                        errors=(
                            FieldError("query.min_position", "not reached within the wait limit"),
                        ),
                    )
        return pool

    async def ready_for_org(
        self,
        request: AnyRequest,
        org_id: uuid.UUID,
        permission: Permission,
        min_position: int | None,
    ) -> asyncpg.Pool:
        """``ready`` (tenancy included), once the caller holds ``permission`` in the
        organization."""
        pool = await self.ready(request, min_position, with_tenancy=True)
        await authorize(pool, request.user, org_id, permission)
        return pool

    async def ready_for_project(
        self,
        request: AnyRequest,
        org_id: uuid.UUID,
        project_id: uuid.UUID,
        permission: Permission,
        min_position: int | None,
    ) -> asyncpg.Pool:
        """``ready_for_org``, once the project is there for the caller."""
        pool = await self.ready_for_org(request, org_id, permission, min_position)
        await project_row(pool, org_id, project_id)
        return pool

    async def ready_for_environment(
        self,
        request: AnyRequest,
        org_id: uuid.UUID,
        project_id: uuid.UUID,
        env_id: uuid.UUID,
        permission: Permission,
        min_position: int | None,
    ) -> asyncpg.Pool:
        """``ready_for_org``, once the environment is there for the caller."""
        pool = await self.ready_for_org(request, org_id, permission, min_position)
        await environment_row(pool, org_id, project_id, env_id)
        return pool


# The organizations, members, projects and environments every scoped route checks.
TENANCY = ReadModel(TENANCY_NAME, "the organizations read model")
