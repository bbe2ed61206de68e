"""Supersede and rollback: what a deployment becoming active does to the others, and
how a deployment is rolled back to the bundle that was active before it.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from msgspec.structs import replace

from domain.config_bundle import ConfigBundle, require_bundle
from domain.deployment.decisions import DeploymentPlan, plan_request, stamp
from domain.deployment.events import (
    DeploymentEvent,
    DeploymentRollbackAbandoned,
    DeploymentRollbackStarted,
    DeploymentRolledBack,
    DeploymentSuperseded,
)
from domain.deployment.state import Deployment, IllegalDeploymentTransition, NothingToRestore
from domain.environment import Environment, require_environment
from domain.errors import NotFound
from domain.organization import Organization
from domain.project import Project

# --- supersede and rollback -----------------------------------------------------------------


def settle(other: Deployment, activated: Deployment, now: datetime) -> tuple[DeploymentEvent, ...]:
    """What ``activated`` becoming active does to another deployment of its environment."""
    if other.id == activated.id or other.environment_id != activated.environment_id:
        return ()
    if activated.status != "active":
        raise IllegalDeploymentTransition(activated, "settle others of")
    at = stamp(now)
    if other.status == "rolling_back" and other.rollback_id == activated.id:
        return (DeploymentRolledBack(by_deployment_id=activated.id, at=at),)
    if other.status == "active":
        return (DeploymentSuperseded(by_deployment_id=activated.id, at=at),)
    return ()


def rollback(
    org: Organization | None,
    project: Project | None,
    environment: Environment | None,
    current: Deployment,
    restore: Deployment | None,
    restore_bundle: ConfigBundle | None,
    *,
    rollback_id: uuid.UUID,
    approval_id: uuid.UUID,
    requested_by: uuid.UUID,
    now: datetime,
) -> DeploymentPlan:
    """Roll ``current`` back to ``restore`` (module docstring): events for three or four streams.

    ``restore`` is the deployment ``current`` superseded (``current.supersedes``)
    when ``current`` is active, else the environment's active deployment.
    """
    env = require_environment(org, project, environment)
    if current.environment_id != env.id:
        raise NotFound("deployment not found", code="deployment_not_found")
    if current.status not in ("active", "failed"):
        raise IllegalDeploymentTransition(current, "rollback")
    expected = current.supersedes if current.status == "active" else None
    if (
        restore is None
        or restore.environment_id != env.id
        or restore.id == current.id
        or (expected is not None and restore.id != expected)
        or (current.status == "failed" and restore.status != "active")
        or (current.status == "active" and expected is None)
    ):
        raise NothingToRestore(
            "there is no earlier active deployment to restore",
            context={"deployment_id": str(current.id)},
        )
    if restore_bundle is None or restore_bundle.id != restore.bundle_id:
        raise NotFound("config bundle not found", code="bundle_not_found")
    plan = plan_request(
        env,
        require_bundle(org, project, environment, restore_bundle),
        deployment_id=rollback_id,
        approval_id=approval_id,
        agent_ids=set(current.agent_ids) | set(restore.agent_ids),
        requested_by=requested_by,
        now=now,
        activation_timeout_s=current.activation_timeout_s,
        rollback_of=current.id,
    )
    started = DeploymentRollbackStarted(
        rollback_deployment_id=rollback_id,
        restores_deployment_id=restore.id,
        restores_bundle_id=restore.bundle_id,
        at=stamp(now),
    )
    return replace(plan, rolled_back=(started,))


def abandon_rollback(
    state: Deployment, rollback_deployment: Deployment, now: datetime
) -> tuple[DeploymentEvent, ...]:
    """The rollback deployment ended without becoming active: back to where we were."""
    if state.status != "rolling_back" or state.rollback_id != rollback_deployment.id:
        raise IllegalDeploymentTransition(state, "abandon_rollback")
    if rollback_deployment.status not in ("denied", "failed"):
        raise IllegalDeploymentTransition(rollback_deployment, "abandon as a rollback")
    return (
        DeploymentRollbackAbandoned(
            rollback_deployment_id=rollback_deployment.id,
            reason=f"rollback_{rollback_deployment.status}",
            at=stamp(now),
        ),
    )
