"""Deployment decisions: request (with its approval and the bundle lock), the approval's
outcome, the build and the agents' reports. Rollback and supersede are in
``domain.deployment.rollback``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Final

import msgspec

from domain.adapters import InlineRef
from domain.approval import Approval, ApprovalEvent, approval_required, request_approval
from domain.config_bundle import ConfigBundle, ConfigBundleEvent, require_bundle, use_bundle
from domain.deployment.events import (
    DEFAULT_ACTIVATION_TIMEOUT_S,
    MAX_REASON,
    AppliedTuning,
    DeploymentActivated,
    DeploymentAgentActivated,
    DeploymentAgentFailed,
    DeploymentApproved,
    DeploymentBuildCompleted,
    DeploymentBuildStarted,
    DeploymentDenied,
    DeploymentEvent,
    DeploymentFailed,
    DeploymentRequested,
    StatusReport,
)
from domain.deployment.state import (
    AgentNotTargeted,
    Deployment,
    DeploymentCapReached,
    IllegalDeploymentTransition,
    rollout,
)
from domain.environment import Environment, require_environment
from domain.errors import FieldError, InvalidInput, NotFound
from domain.organization import Organization
from domain.project import Project

MAX_AGENTS: Final = 10_000


# --- request ----------------------------------------------------------------------------


class CreateDeployment(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST …/environments/{env}/deployments``; no ``agent_ids``: every active agent."""

    bundle_id: uuid.UUID
    agent_ids: (
        Annotated[list[uuid.UUID], msgspec.Meta(min_length=1, max_length=MAX_AGENTS)] | None
    ) = None


class DeploymentPlan(msgspec.Struct, frozen=True, kw_only=True):
    """The events of one request, per stream, for one transaction.

    ``rolled_back`` holds the events for the deployment being rolled back (rollback only).
    """

    deployment: tuple[DeploymentEvent, ...]
    bundle: tuple[ConfigBundleEvent, ...]
    approval: tuple[ApprovalEvent, ...]
    rolled_back: tuple[DeploymentEvent, ...] = ()


def check_capacity(environment: Environment, in_flight: int) -> None:
    limit = environment.settings.max_inflight_deployments
    if in_flight >= limit:
        raise DeploymentCapReached(
            f"{in_flight} deployments are in flight in this environment (limit {limit})",
            context={"environment_id": str(environment.id), "in_flight": in_flight, "limit": limit},
        )


def require_deployment(deployment: Deployment | None, environment_id: uuid.UUID) -> Deployment:
    if deployment is None or deployment.environment_id != environment_id:
        raise NotFound("deployment not found", code="deployment_not_found")
    return deployment


def request_deployment(
    org: Organization | None,
    project: Project | None,
    environment: Environment | None,
    bundle: ConfigBundle | None,
    *,
    deployment_id: uuid.UUID,
    approval_id: uuid.UUID,
    agent_ids: Iterable[uuid.UUID],
    in_flight: int,
    requested_by: uuid.UUID,
    now: datetime,
    activation_timeout_s: int = DEFAULT_ACTIVATION_TIMEOUT_S,
) -> DeploymentPlan:
    """A new deployment of ``bundle``; ``approval_id`` is used only when one is needed.

    ``agent_ids`` are agents of this environment, resolved by the caller (all of
    its active agents when the request names none); ``in_flight`` is the
    environment's count of ``IN_FLIGHT`` deployments.
    """
    env = require_environment(org, project, environment)
    used = require_bundle(org, project, environment, bundle)
    check_capacity(env, in_flight)
    return plan_request(
        env,
        used,
        deployment_id=deployment_id,
        approval_id=approval_id,
        agent_ids=agent_ids,
        requested_by=requested_by,
        now=now,
        activation_timeout_s=activation_timeout_s,
        rollback_of=None,
    )


def plan_request(
    env: Environment,
    bundle: ConfigBundle,
    *,
    deployment_id: uuid.UUID,
    approval_id: uuid.UUID,
    agent_ids: Iterable[uuid.UUID],
    requested_by: uuid.UUID,
    now: datetime,
    activation_timeout_s: int,
    rollback_of: uuid.UUID | None,
) -> DeploymentPlan:
    """The streams' events for a new deployment; shared by a request and a rollback."""
    agents = tuple(sorted(set(agent_ids)))
    if not agents or len(agents) > MAX_AGENTS:
        raise InvalidInput(
            "a deployment targets at least one agent of the environment",
            code="deployment_no_agents",
            errors=(FieldError("/agent_ids", f"1..{MAX_AGENTS} agents"),),
        )
    if not 1 <= activation_timeout_s <= 86_400:
        raise InvalidInput(
            "activation timeout out of range",
            errors=(FieldError("/activation_timeout_s", "1..86400 seconds"),),
        )
    at = stamp(now)
    governed = approval_required(env.posture, bundle.required_capabilities, "deployment")
    approval: tuple[ApprovalEvent, ...] = ()
    if governed:
        approval = request_approval(
            env,
            approval_id=approval_id,
            subject_kind="deployment",
            subject_id=deployment_id,
            spec_hash=bundle.spec_hash,
            capabilities=bundle.required_capabilities,
            requested_by=requested_by,
            now=at,
        )
    requested = DeploymentRequested(
        deployment_id=deployment_id,
        org_id=env.org_id,
        project_id=env.project_id,
        environment_id=env.id,
        bundle_id=bundle.id,
        version_id=bundle.version_id,
        spec_hash=bundle.spec_hash,
        capabilities=bundle.required_capabilities,
        agent_ids=agents,
        approval_id=approval_id if governed else None,
        requested_by=requested_by,
        activation_timeout_s=activation_timeout_s,
        rollback_of=rollback_of,
        status="pending_approval" if governed else "approved",
        at=at,
    )
    return DeploymentPlan(
        deployment=(requested,), bundle=use_bundle(bundle, deployment_id), approval=approval
    )


# --- approval outcome -------------------------------------------------------------------


def approve(state: Deployment, approval: Approval, now: datetime) -> tuple[DeploymentEvent, ...]:
    """``pending_approval → approved`` once its approval is approved (same transaction)."""
    if state.status == "approved" and approval.id == state.approval_id:
        return ()
    if state.status != "pending_approval" or approval.id != state.approval_id:
        raise IllegalDeploymentTransition(state, "approve")
    if approval.status != "approved":
        raise IllegalDeploymentTransition(state, f"approve with a {approval.status} approval")
    return (DeploymentApproved(approval_id=approval.id, at=stamp(now)),)


def deny(state: Deployment, approval: Approval, now: datetime) -> tuple[DeploymentEvent, ...]:
    """``pending_approval → denied`` when its approval is denied, expired or revoked."""
    if state.status == "denied":
        return ()
    if state.status != "pending_approval" or approval.id != state.approval_id:
        raise IllegalDeploymentTransition(state, "deny")
    match approval.status:
        case "denied" | "expired" | "revoked":
            reason = approval.status
        case _:
            raise IllegalDeploymentTransition(state, f"deny with a {approval.status} approval")
    return (DeploymentDenied(approval_id=approval.id, reason=reason, at=stamp(now)),)


# --- build and rollout ----------------------------------------------------------------------


def start_build(
    state: Deployment,
    job_id: uuid.UUID,
    now: datetime,
    *,
    secrets_key: InlineRef | None = None,
) -> tuple[DeploymentEvent, ...]:
    """``approved → building``; ``secrets_key`` is the sealed per-bundle key (decision 0011)."""
    if state.build_job_id == job_id and state.status != "approved":
        return ()  # a redelivered job: the build started already
    if state.status != "approved":
        raise IllegalDeploymentTransition(state, "start_build")
    return (DeploymentBuildStarted(job_id=job_id, secrets_key=secrets_key, at=stamp(now)),)


def complete_build(
    state: Deployment, *, bundle_digest: str, bundle_key: str, kid: str, now: datetime
) -> tuple[DeploymentEvent, ...]:
    if state.bundle_digest == bundle_digest and state.status != "building":
        return ()
    if state.status != "building":
        raise IllegalDeploymentTransition(state, "complete_build")
    return (
        DeploymentBuildCompleted(
            bundle_digest=bundle_digest, bundle_key=bundle_key, kid=kid, at=stamp(now)
        ),
    )


def fail_build(state: Deployment, detail: str, now: datetime) -> tuple[DeploymentEvent, ...]:
    if state.status == "failed" and state.failure_reason == "build_failed":
        return ()
    if state.status != "building":
        raise IllegalDeploymentTransition(state, "fail_build")
    return (DeploymentFailed(reason="build_failed", detail=_clip(detail), at=stamp(now)),)


def report_activated(
    state: Deployment,
    agent_id: uuid.UUID,
    *,
    now: datetime,
    applied_tuning: Iterable[AppliedTuning] = (),
    replacing: uuid.UUID | None = None,
) -> tuple[DeploymentEvent, ...]:
    """Record one agent's activation; the last one makes the deployment ``active``.

    ``replacing`` is the environment's active deployment, recorded as the one
    this supersedes (and restores on rollback); ``settle`` moves it.
    """
    _require_targeted(state, agent_id)
    previous = state.report_of(agent_id)
    if previous is not None and previous.state == "activated":
        return ()
    if state.status != "deploying":
        raise IllegalDeploymentTransition(state, "report_activated")
    at = stamp(now)
    events: list[DeploymentEvent] = [
        DeploymentAgentActivated(agent_id=agent_id, applied_tuning=tuple(applied_tuning), at=at)
    ]
    done = {r.agent_id for r in state.reports if r.state == "activated"} | {agent_id}
    if done.issuperset(state.agent_ids):
        events.append(
            DeploymentActivated(supersedes=replacing if replacing != state.id else None, at=at)
        )
    return tuple(events)


def report_failed(
    state: Deployment,
    agent_id: uuid.UUID,
    *,
    now: datetime,
    reason: str | None = None,
    applied_tuning: Iterable[AppliedTuning] = (),
) -> tuple[DeploymentEvent, ...]:
    """Any targeted agent's failure fails the whole deployment."""
    _require_targeted(state, agent_id)
    previous = state.report_of(agent_id)
    if previous is not None and previous.state == "failed":
        return ()
    if state.status != "deploying":
        raise IllegalDeploymentTransition(state, "report_failed")
    at = stamp(now)
    clipped = None if reason is None else _clip(reason)
    return (
        DeploymentAgentFailed(
            agent_id=agent_id, reason=clipped, applied_tuning=tuple(applied_tuning), at=at
        ),
        DeploymentFailed(reason="agent_failed", detail=clipped, agent_ids=(agent_id,), at=at),
    )


def report(
    state: Deployment, agent_id: uuid.UUID, body: StatusReport, *, now: datetime
) -> tuple[DeploymentEvent, ...]:
    """The agent status route's decision."""
    if body.state == "activated":
        return report_activated(state, agent_id, now=now, applied_tuning=body.applied_tuning)
    return report_failed(
        state, agent_id, now=now, reason=body.reason, applied_tuning=body.applied_tuning
    )


def timeout_at(state: Deployment) -> datetime | None:
    if state.status != "deploying" or state.deploying_since is None:
        return None
    return state.deploying_since + timedelta(seconds=state.activation_timeout_s)


def expire(state: Deployment, now: datetime) -> tuple[DeploymentEvent, ...]:
    """For the sweeper: ``deploying → failed`` once the activation timeout has passed."""
    due = timeout_at(state)
    if due is None or now < due:
        return ()
    return (
        DeploymentFailed(
            reason="activation_timeout",
            detail=f"no activation within {state.activation_timeout_s} s",
            agent_ids=rollout(state).pending,
            at=stamp(now),
        ),
    )


def _require_targeted(state: Deployment, agent_id: uuid.UUID) -> None:
    if agent_id not in state.agent_ids:
        raise AgentNotTargeted(
            "this deployment does not target this agent",
            context={"deployment_id": str(state.id), "agent_id": str(agent_id)},
        )


def stamp(at: datetime) -> datetime:
    """An event's ``at``: the decision's ``now`` in UTC, to the second."""
    if at.tzinfo is None:
        raise ValueError("domain times are timezone-aware")
    return at.astimezone(UTC).replace(microsecond=0)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"
