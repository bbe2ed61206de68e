"""Query routes for an environment's deployments and approvals (ViewEnvironment).

They read ``deployment_view`` and ``approval_view`` (projections/deployments.py)
and the tenancy read model, never the event store. ``?min_position=N`` waits
(bounded) until the deployments projection has applied N. An approval's
``status`` has time applied (a lapsed request reads ``expired`` before any
sweeper records it).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Response, get
from litestar.params import FromPath, QueryParameter

from domain import deployment as deployment_mod
from domain.access import Permission
from domain.approval import effective_status
from domain.deployment_views import (
    ApprovalView,
    DeploymentView,
    approval_view,
    deployment_view,
)
from domain.errors import FieldError, InvalidInput
from domain.paging import Page
from domain.tuning import Tuning
from projections.deployments import NAME, approval_of, deployment_of
from projections.routes import PROJECT
from projections.rows import Cursor, Limit, etag, fetch_one, fetch_page, keyset
from projections.scope import AnyRequest, MinPosition, ReadModel

ENVIRONMENT = PROJECT + "/environments/{env_id:uuid}"
DEPLOYMENTS = ENVIRONMENT + "/deployments"
APPROVALS = ENVIRONMENT + "/approvals"
_DEPLOYMENTS = ReadModel(NAME, "the deployments read model")

StatusFilter = Annotated[
    str | None, QueryParameter(description="Only deployments (or approvals) in this status")
]


def _check_status(status: str | None, known: tuple[str, ...]) -> None:
    if status is not None and status not in known:
        raise InvalidInput(
            f"unknown status {status!r}",
            code="invalid_status",
            errors=(FieldError("query.status", f"one of {', '.join(known)}"),),
        )


_DEPLOYMENT_SELECT = """
    SELECT d.id, d.created_at, d.updated_at, d.state, d.requested_tuning, a.state AS approval
    FROM deployment_view d LEFT JOIN approval_view a ON a.id = d.approval_id
"""


def _deployment(row: Any, now: datetime) -> DeploymentView:
    state = deployment_of(row)
    approval = None if row["approval"] is None else approval_of({"state": row["approval"]})
    tuning = row["requested_tuning"]
    return deployment_view(
        state,
        approval_status=None if approval is None else effective_status(approval, now),
        requested_tuning=None if tuning is None else msgspec.json.decode(tuning, type=Tuning),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


@get(DEPLOYMENTS, summary="Deployments of an environment, oldest first (?status=)")
async def list_deployments(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    env_id: FromPath[uuid.UUID],
    status: StatusFilter = None,
    limit: Limit = None,
    cursor: Cursor = None,
    min_position: MinPosition = None,
) -> Page[DeploymentView]:
    page = keyset(limit, cursor)
    _check_status(status, deployment_mod.STATUSES)
    pool = await _DEPLOYMENTS.ready_for_environment(
        request, org_id, project_id, env_id, Permission.VIEW_ENVIRONMENT, min_position
    )
    now = datetime.now(UTC)
    return await fetch_page(
        pool,
        page,
        _DEPLOYMENT_SELECT + " WHERE d.environment_id = $1 AND ($2::text IS NULL OR d.status = $2)",
        env_id,
        status,
        build=lambda r: _deployment(r, now),
        key="d.created_at, d.id",
    )


@get(DEPLOYMENTS + "/{deployment_id:uuid}", summary="A deployment: history, reports, tuning")
async def get_deployment(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    env_id: FromPath[uuid.UUID],
    deployment_id: FromPath[uuid.UUID],
    min_position: MinPosition = None,
) -> Response[DeploymentView]:
    pool = await _DEPLOYMENTS.ready_for_environment(
        request, org_id, project_id, env_id, Permission.VIEW_ENVIRONMENT, min_position
    )
    row = await fetch_one(
        pool,
        "deployment",
        "deployment_not_found",
        _DEPLOYMENT_SELECT + " WHERE d.id = $1 AND d.environment_id = $2",
        deployment_id,
        env_id,
    )
    view = _deployment(row, datetime.now(UTC))
    return Response(view, headers=etag(view.revision))


_APPROVAL_STATUSES = ("pending", "approved", "denied", "expired", "revoked")


def _approval(row: Any, now: datetime) -> ApprovalView:
    return approval_view(
        approval_of(row), now=now, created_at=row["created_at"], updated_at=row["updated_at"]
    )


@get(APPROVALS, summary="Approvals of an environment, oldest first (?status= as recorded)")
async def list_approvals(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    env_id: FromPath[uuid.UUID],
    status: StatusFilter = None,
    limit: Limit = None,
    cursor: Cursor = None,
    min_position: MinPosition = None,
) -> Page[ApprovalView]:
    page = keyset(limit, cursor)
    _check_status(status, _APPROVAL_STATUSES)
    pool = await _DEPLOYMENTS.ready_for_environment(
        request, org_id, project_id, env_id, Permission.VIEW_ENVIRONMENT, min_position
    )
    now = datetime.now(UTC)
    return await fetch_page(
        pool,
        page,
        """
        SELECT id, state, created_at, updated_at FROM approval_view
        WHERE environment_id = $1 AND ($2::text IS NULL OR status = $2)
        """,
        env_id,
        status,
        build=lambda r: _approval(r, now),
    )


@get(APPROVALS + "/{approval_id:uuid}", summary="An approval, with its credential once approved")
async def get_approval(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    env_id: FromPath[uuid.UUID],
    approval_id: FromPath[uuid.UUID],
    min_position: MinPosition = None,
) -> Response[ApprovalView]:
    pool = await _DEPLOYMENTS.ready_for_environment(
        request, org_id, project_id, env_id, Permission.VIEW_ENVIRONMENT, min_position
    )
    row = await fetch_one(
        pool,
        "approval",
        "approval_not_found",
        """
        SELECT id, state, created_at, updated_at FROM approval_view
        WHERE id = $1 AND environment_id = $2
        """,
        approval_id,
        env_id,
    )
    view = _approval(row, datetime.now(UTC))
    return Response(view, headers=etag(view.revision))


ROUTES = [list_deployments, get_deployment, list_approvals, get_approval]
