"""Write routes for deployments and their approvals (DOMAIN.md §5; decision 0009).

    POST …/environments/{env}/deployments                  {bundle_id, agent_ids?} → 201
    POST …/environments/{env}/deployments/{id}/rollback    → 201, the restoring deployment
    POST …/environments/{env}/approvals/{id}/approve       {reason?, expires_in_s?} → credential
    POST …/environments/{env}/approvals/{id}/deny          {reason?}
    POST …/environments/{env}/approvals/{id}/revoke        {reason?}

All need OperateEnvironment; approve and deny also someone other than the
requester (403 ``approval_by_requester``). Each command appends every stream it
changes in one append (deployment, config bundle lock, approval, and on
rollback the rolled-back deployment), with the caller as the events' actor.

A request in a posture that needs an approval (``approval_required``) starts
``pending_approval`` with its approval; otherwise ``approved``. The in-flight
cap counts the environment's in-flight deployments in the read model
(``deployment_view``), which trails commands by milliseconds: two requests
racing past the count can overshoot it (decision 0009). With no ``agent_ids``
a deployment targets every live agent of the environment.

Approving signs the approval credential with the organization's newest active
signing key (commands/signing_keys.py) and moves the deployment to
``approved`` in the same append; denying, revoking a pending approval, or one
found expired moves it to ``denied``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec
from litestar import Response, post
from litestar.params import FromPath

from commands.execution import (
    CommandDeps,
    Loaded,
    Outcome,
    body_command,
    deps_of,
    etag_of,
    execute,
    load,
    stream_append,
)
from commands.identity import AnyRequest, pool_of
from commands.request_schemas import json_body
from commands.signing_keys import active_signer, cipher_of
from commands.tenancy import ENVIRONMENT, authorize, load_org, membership_of
from domain import approval as approval_mod
from domain import config_bundle as bundle_mod
from domain import deployment as deployment_mod
from domain import environment as env_mod
from domain import job as job_mod
from domain import organization as org_mod
from domain import project as project_mod
from domain.access import Decision, Permission, ResourcePath
from domain.access import decide as decide_access
from domain.codec import decode_command
from domain.deployment import DeploymentPlan
from domain.deployment_views import approval_view, deployment_view
from domain.errors import FieldError, InvalidInput

DEPLOYMENTS = ENVIRONMENT + "/deployments"
DEPLOYMENT = DEPLOYMENTS + "/{deployment_id:uuid}"
APPROVAL = ENVIRONMENT + "/approvals/{approval_id:uuid}"


class RevokeApproval(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: str | None = None


class Scope(msgspec.Struct, frozen=True, kw_only=True):
    org: Loaded[org_mod.Organization]
    project: Loaded[project_mod.Project]
    env: Loaded[env_mod.Environment]
    decision: Decision

    @property
    def environment(self) -> env_mod.Environment:
        assert self.env.state is not None
        return self.env.state


async def _scope(
    deps: CommandDeps,
    request: AnyRequest,
    org_id: uuid.UUID,
    project_id: uuid.UUID,
    env_id: uuid.UUID,
) -> Scope:
    """OperateEnvironment checked (404 for other tenants), the environment live."""
    org = await load_org(deps, org_id)
    authorize(request.user, org.state, Permission.OPERATE_ENVIRONMENT)
    project = await load(deps, project_mod.stream_id(project_id), project_mod.fold)
    env = await load(deps, env_mod.stream_id(env_id), env_mod.fold)
    env_mod.require_environment(org.state, project.state, env.state)
    decision = decide_access(
        request.user.kind,
        membership_of(request.user, org.state),
        Permission.OPERATE_ENVIRONMENT,
        ResourcePath(org_id, project_id, env_id),
    )
    return Scope(org=org, project=project, env=env, decision=decision)


async def _agents(
    request: AnyRequest, env_id: uuid.UUID, given: list[uuid.UUID] | None
) -> list[uuid.UUID]:
    """The agents to target: the given ones (each a live agent here), else all live ones."""
    rows = await pool_of(request).fetch(
        "SELECT id FROM agents WHERE environment_id = $1 AND revoked_at IS NULL", env_id
    )
    live = {r["id"] for r in rows}
    if given is None:
        return sorted(live)
    unknown = [i for i, a in enumerate(given) if a not in live]
    if unknown:
        raise InvalidInput(
            "every targeted agent must be a live agent of this environment",
            code="deployment_unknown_agent",
            errors=tuple(
                FieldError(f"/agent_ids/{i}", "not a live agent of this environment")
                for i in unknown
            ),
        )
    return given


async def _in_flight(request: AnyRequest, env_id: uuid.UUID, now: datetime) -> int:
    """In-flight deployments; one waiting on an approval that has lapsed holds no slot
    (expiry is applied lazily, so no sweeper has to run before the next request)."""
    count: int = await pool_of(request).fetchval(
        """
        SELECT count(*) FROM deployment_view d LEFT JOIN approval_view a ON a.id = d.approval_id
        WHERE d.environment_id = $1 AND d.status = ANY($2)
          AND NOT (d.status = 'pending_approval' AND a.status = 'pending'
                   AND (a.state->>'expires_at')::timestamptz <= $3)
        """,
        env_id,
        sorted(deployment_mod.IN_FLIGHT),
        now,
    )
    return count


# The deploy bundle build's attempt budget; it matches the consumer's max_deliver
# (workers/streams.py DEFAULT_JOB_TYPES), which this layer may not import.
BUILD_JOB = "deploy_bundle_build"
BUILD_MAX_ATTEMPTS = 5


def _build_job(
    deps: CommandDeps,
    deployment_id: uuid.UUID,
    events: tuple[deployment_mod.DeploymentEvent, ...],
) -> list[Any]:
    """``deploy_bundle_build`` queued in the append that makes the deployment ``approved``
    (no dual write: the relay publishes it once the transaction commits)."""
    approved = any(
        isinstance(e, deployment_mod.DeploymentApproved)
        or (isinstance(e, deployment_mod.DeploymentRequested) and e.status == "approved")
        for e in events
    )
    if not approved:
        return []
    return [
        job_mod.queued_append(
            job_id=deps.new_id(),
            job_type=BUILD_JOB,
            payload={"deployment_id": str(deployment_id)},
            max_attempts=BUILD_MAX_ATTEMPTS,
        )
    ]


def _plan_appends(
    deps: CommandDeps,
    plan: DeploymentPlan,
    deployment_id: uuid.UUID,
    approval_id: uuid.UUID,
    bundle: Loaded[bundle_mod.ConfigBundle],
) -> list[Any]:
    return [
        *_build_job(deps, deployment_id, plan.deployment),
        *stream_append(
            deps,
            deployment_mod.stream_id(deployment_id),
            deployment_mod.STREAM_TYPE,
            0,
            plan.deployment,
        ),
        *stream_append(deps, bundle.stream_id, bundle_mod.STREAM_TYPE, bundle.version, plan.bundle),
        *stream_append(
            deps, approval_mod.stream_id(approval_id), approval_mod.STREAM_TYPE, 0, plan.approval
        ),
    ]


def _new_deployment_body(
    plan: DeploymentPlan, bundle: bundle_mod.ConfigBundle, now: datetime
) -> Any:
    state = deployment_mod.fold(plan.deployment)
    assert state is not None
    approval = approval_mod.fold(plan.approval) if plan.approval else None
    return deployment_view(
        state,
        approval_status=None if approval is None else approval.status,
        requested_tuning=bundle.content.tuning,
        created_at=now,
        updated_at=now,
    )


@post(
    DEPLOYMENTS,
    status_code=201,
    summary="Request a deployment of a config bundle (pending_approval or approved by posture)",
    operation_class=json_body(deployment_mod.CreateDeployment),
)
async def create_deployment(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    env_id: FromPath[uuid.UUID],
) -> Response[bytes]:
    deps = deps_of(request)
    cmd = decode_command(deployment_mod.CreateDeployment, await request.body())
    deployment_id = deps.new_id()
    approval_id = deps.new_id()

    async def decide(now: datetime) -> Outcome:
        scope = await _scope(deps, request, org_id, project_id, env_id)
        bundle = await load(deps, bundle_mod.stream_id(cmd.bundle_id), bundle_mod.fold)
        used = bundle_mod.require_bundle(
            scope.org.state, scope.project.state, scope.env.state, bundle.state
        )
        plan = deployment_mod.request_deployment(
            scope.org.state,
            scope.project.state,
            scope.env.state,
            used,
            deployment_id=deployment_id,
            approval_id=approval_id,
            agent_ids=await _agents(request, env_id, cmd.agent_ids),
            in_flight=await _in_flight(request, env_id, now),
            requested_by=request.user.id,
            now=now,
        )
        return Outcome(
            appends=_plan_appends(deps, plan, deployment_id, approval_id, bundle),
            tenant_id=org_id,
            status_code=201,
            body=_new_deployment_body(plan, used, now),
            etag=etag_of(1),
        )

    return await execute(request, deps, decide)


async def _active_deployment(request: AnyRequest, env_id: uuid.UUID) -> uuid.UUID | None:
    found: uuid.UUID | None = await pool_of(request).fetchval(
        """
        SELECT id FROM deployment_view WHERE environment_id = $1 AND status = 'active'
        ORDER BY updated_at DESC LIMIT 1
        """,
        env_id,
    )
    return found


@post(
    DEPLOYMENT + "/rollback",
    status_code=201,
    summary="Roll back to the previous active bundle: a new deployment restores it",
)
async def rollback_deployment(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    env_id: FromPath[uuid.UUID],
    deployment_id: FromPath[uuid.UUID],
) -> Response[bytes]:
    deps = deps_of(request)
    await request.body()  # takes no body, but an oversized one is still a 413
    rollback_id = deps.new_id()
    approval_id = deps.new_id()

    async def decide(now: datetime) -> Outcome:
        scope = await _scope(deps, request, org_id, project_id, env_id)
        current = await load(deps, deployment_mod.stream_id(deployment_id), deployment_mod.fold)
        state = deployment_mod.require_deployment(current.state, env_id)
        restore_id = (
            state.supersedes
            if state.status == "active"
            else await _active_deployment(request, env_id)
        )
        restore = (
            None
            if restore_id is None
            else (await load(deps, deployment_mod.stream_id(restore_id), deployment_mod.fold)).state
        )
        bundle_id = restore.bundle_id if restore is not None else None
        bundle = (
            None
            if bundle_id is None
            else await load(deps, bundle_mod.stream_id(bundle_id), bundle_mod.fold)
        )
        plan = deployment_mod.rollback(
            scope.org.state,
            scope.project.state,
            scope.env.state,
            state,
            restore,
            None if bundle is None else bundle.state,
            rollback_id=rollback_id,
            approval_id=approval_id,
            requested_by=request.user.id,
            now=now,
        )
        assert bundle is not None and bundle.state is not None
        return Outcome(
            appends=[
                *_plan_appends(deps, plan, rollback_id, approval_id, bundle),
                *stream_append(
                    deps,
                    current.stream_id,
                    deployment_mod.STREAM_TYPE,
                    current.version,
                    plan.rolled_back,
                ),
            ],
            tenant_id=org_id,
            status_code=201,
            body=_new_deployment_body(plan, bundle.state, now),
            etag=etag_of(1),
        )

    return await execute(request, deps, decide)


# --- approvals ---------------------------------------------------------------------------


async def _decision_on_approval(
    request: AnyRequest,
    org_id: uuid.UUID,
    project_id: uuid.UUID,
    env_id: uuid.UUID,
    approval_id: uuid.UUID,
    now: datetime,
    act: Any,
) -> Outcome:
    """Load the approval (and its deployment), apply ``act``, append both streams."""
    deps = deps_of(request)
    scope = await _scope(deps, request, org_id, project_id, env_id)
    loaded = await load(deps, approval_mod.stream_id(approval_id), approval_mod.fold)
    approval = approval_mod.require_approval(loaded.state, env_id)
    events: tuple[approval_mod.ApprovalEvent, ...] = await act(scope, approval)
    after = approval
    for event in events:
        after = approval_mod.evolve(after, event)
    appends = stream_append(
        deps, loaded.stream_id, approval_mod.STREAM_TYPE, loaded.version, events
    )
    if approval.subject_kind == "deployment":
        appends += await _deployment_follows(deps, approval.subject_id, after, now)
    return Outcome(
        appends=appends,
        tenant_id=org_id,
        status_code=200,
        body=approval_view(
            after,
            now=now,
            created_at=approval.requested_at,
            updated_at=now if events else (loaded.updated_at or now),
        ),
        etag=etag_of(after.version),
        position=loaded.last_position,
    )


async def _deployment_follows(
    deps: CommandDeps, deployment_id: uuid.UUID, approval: approval_mod.Approval, now: datetime
) -> list[Any]:
    """The deployment's side of an approval decision, while it is still waiting on it."""
    loaded = await load(deps, deployment_mod.stream_id(deployment_id), deployment_mod.fold)
    state = loaded.state
    if state is None or state.status != "pending_approval":
        return []
    events: tuple[deployment_mod.DeploymentEvent, ...] = ()
    if approval.status == "approved":
        events = deployment_mod.approve(state, approval, now)
    elif approval.status in ("denied", "revoked"):
        events = deployment_mod.deny(state, approval, now)
    appends = stream_append(
        deps, loaded.stream_id, deployment_mod.STREAM_TYPE, loaded.version, events
    )
    appends += _build_job(deps, deployment_id, events)
    if events and state.rollback_of is not None and approval.status != "approved":
        # A rollback that will not happen: the rolled-back deployment returns to where it was.
        denied = state
        for event in events:
            denied = deployment_mod.evolve(denied, event)
        origin = await load(deps, deployment_mod.stream_id(state.rollback_of), deployment_mod.fold)
        if origin.state is not None and origin.state.rollback_id == state.id:
            back = deployment_mod.abandon_rollback(origin.state, denied, now)
            appends += stream_append(
                deps, origin.stream_id, deployment_mod.STREAM_TYPE, origin.version, back
            )
    return appends


@post(
    APPROVAL + "/approve",
    status_code=200,
    summary="Approve (not your own request): issues the signed approval credential",
    operation_class=json_body(approval_mod.ApproveApproval, required=False),
)
async def approve_approval(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    env_id: FromPath[uuid.UUID],
    approval_id: FromPath[uuid.UUID],
) -> Response[bytes]:
    deps = deps_of(request)
    cmd = await body_command(request, approval_mod.ApproveApproval)
    cmd = cmd if cmd is not None else approval_mod.ApproveApproval()

    async def decide(now: datetime) -> Outcome:
        async def act(
            scope: Scope, approval: approval_mod.Approval
        ) -> tuple[approval_mod.ApprovalEvent, ...]:
            # Refusals (requester, state, TTL) come before any key is touched.
            approval_mod.approve(
                approval,
                approver_id=request.user.id,
                authorization=scope.decision,
                now=now,
                kid="-",
                sign=lambda _: b"",
                expires_in_s=cmd.expires_in_s,
            )
            async with pool_of(request).acquire() as conn:
                kid, sign = await active_signer(conn, cipher_of(request), org_id)
            return approval_mod.approve(
                approval,
                approver_id=request.user.id,
                authorization=scope.decision,
                now=now,
                kid=kid,
                sign=sign,
                expires_in_s=cmd.expires_in_s,
            )

        return await _decision_on_approval(
            request, org_id, project_id, env_id, approval_id, now, act
        )

    return await execute(request, deps, decide)


@post(
    APPROVAL + "/deny",
    status_code=200,
    summary="Deny (not your own request); its deployment becomes denied",
    operation_class=json_body(approval_mod.DenyApproval, required=False),
)
async def deny_approval(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    env_id: FromPath[uuid.UUID],
    approval_id: FromPath[uuid.UUID],
) -> Response[bytes]:
    deps = deps_of(request)
    cmd = await body_command(request, approval_mod.DenyApproval)
    cmd = cmd if cmd is not None else approval_mod.DenyApproval()

    async def decide(now: datetime) -> Outcome:
        async def act(
            scope: Scope, approval: approval_mod.Approval
        ) -> tuple[approval_mod.ApprovalEvent, ...]:
            return approval_mod.deny(
                approval,
                approver_id=request.user.id,
                authorization=scope.decision,
                now=now,
                reason=cmd.reason,
            )

        return await _decision_on_approval(
            request, org_id, project_id, env_id, approval_id, now, act
        )

    return await execute(request, deps, decide)


@post(
    APPROVAL + "/revoke",
    status_code=200,
    summary="Revoke a pending approval or an issued credential (the cloud stops using it)",
    operation_class=json_body(RevokeApproval, required=False),
)
async def revoke_approval(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    env_id: FromPath[uuid.UUID],
    approval_id: FromPath[uuid.UUID],
) -> Response[bytes]:
    deps = deps_of(request)
    cmd = await body_command(request, RevokeApproval)
    cmd = cmd if cmd is not None else RevokeApproval()

    async def decide(now: datetime) -> Outcome:
        async def act(
            scope: Scope, approval: approval_mod.Approval
        ) -> tuple[approval_mod.ApprovalEvent, ...]:
            return approval_mod.revoke(
                approval,
                by=request.user.id,
                authorization=scope.decision,
                now=now,
                reason=cmd.reason,
            )

        return await _decision_on_approval(
            request, org_id, project_id, env_id, approval_id, now, act
        )

    return await execute(request, deps, decide)


ROUTES = [
    create_deployment,
    rollback_deployment,
    approve_approval,
    deny_approval,
    revoke_approval,
]
