"""Deployment state: the folded stream, its history and per-agent reports, and the errors.

The transitions themselves are documented once, in ``domain.deployment``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Final, Literal, assert_never

import msgspec
from msgspec.structs import replace

from domain.adapters import InlineRef
from domain.codec import Event
from domain.deployment.events import (
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
    DeploymentRollbackAbandoned,
    DeploymentRollbackStarted,
    DeploymentRolledBack,
    DeploymentSuperseded,
    ReportState,
)
from domain.errors import Conflict, Forbidden, InvalidHistory

STREAM_TYPE: Final = "deployment"

Status = Literal[
    "pending_approval",
    "approved",
    "building",
    "deploying",
    "active",
    "denied",
    "failed",
    "rolling_back",
    "rolled_back",
    "superseded",
]
STATUSES: Final[tuple[Status, ...]] = (
    "pending_approval",
    "approved",
    "building",
    "deploying",
    "active",
    "denied",
    "failed",
    "rolling_back",
    "rolled_back",
    "superseded",
)
TERMINAL: Final[frozenset[Status]] = frozenset({"denied", "rolled_back", "superseded"})
IN_FLIGHT: Final[frozenset[Status]] = frozenset(
    {"pending_approval", "approved", "building", "deploying", "rolling_back"}
)


def stream_id(deployment_id: uuid.UUID) -> str:
    return f"{STREAM_TYPE}-{deployment_id}"


class AgentReport(msgspec.Struct, frozen=True, kw_only=True):
    agent_id: uuid.UUID
    state: ReportState
    at: datetime
    reason: str | None = None
    applied_tuning: tuple[AppliedTuning, ...] = ()


class HistoryEntry(msgspec.Struct, frozen=True, kw_only=True):
    status: Status
    at: datetime
    reason: str | None = None


class Rollout(msgspec.Struct, frozen=True, kw_only=True):
    """Where the agents are, derived from the reports."""

    status: Status
    targeted: int
    activated: tuple[uuid.UUID, ...]
    failed: tuple[uuid.UUID, ...]
    pending: tuple[uuid.UUID, ...]


# --- state ----------------------------------------------------------------------------


class Deployment(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    org_id: uuid.UUID
    project_id: uuid.UUID
    environment_id: uuid.UUID
    bundle_id: uuid.UUID
    version_id: uuid.UUID
    spec_hash: str
    capabilities: tuple[str, ...]
    agent_ids: tuple[uuid.UUID, ...]
    approval_id: uuid.UUID | None
    requested_by: uuid.UUID
    requested_at: datetime
    activation_timeout_s: int
    rollback_of: uuid.UUID | None
    status: Status
    history: tuple[HistoryEntry, ...]
    reports: tuple[AgentReport, ...]
    build_job_id: uuid.UUID | None = None
    secrets_key: InlineRef | None = None  # sealed; decision 0011
    bundle_digest: str | None = None
    bundle_key: str | None = None
    kid: str | None = None
    deploying_since: datetime | None = None
    failure_reason: str | None = None
    failure_detail: str | None = None  # e.g. which Vault secret is missing (never a value)
    supersedes: uuid.UUID | None = None
    superseded_by: uuid.UUID | None = None
    rollback_id: uuid.UUID | None = None  # the deployment restoring on this one's behalf
    restores_deployment_id: uuid.UUID | None = None
    rolled_back_from: Status | None = None
    version: int

    def report_of(self, agent_id: uuid.UUID) -> AgentReport | None:
        for report in self.reports:
            if report.agent_id == agent_id:
                return report
        return None


# --- errors ---------------------------------------------------------------------------


class IllegalDeploymentTransition(Conflict):
    code = "deployment_illegal_transition"

    def __init__(self, deployment: Deployment, action: str) -> None:
        super().__init__(
            f"cannot {action} a {deployment.status} deployment",
            context={
                "deployment_id": str(deployment.id),
                "status": deployment.status,
                "action": action,
            },
        )
        self.deployment_status = deployment.status
        self.action = action


class DeploymentCapReached(Conflict):
    code = "deployment_cap_reached"


class NothingToRestore(Conflict):
    code = "deployment_nothing_to_restore"


class AgentNotTargeted(Forbidden):
    code = "deployment_agent_not_targeted"


# --- evolve ---------------------------------------------------------------------------


def evolve(state: Deployment | None, event: DeploymentEvent) -> Deployment:
    if isinstance(event, DeploymentRequested):
        if state is not None:
            raise InvalidHistory(
                "deployment requested twice", context={"deployment_id": str(state.id)}
            )
        return Deployment(
            id=event.deployment_id,
            org_id=event.org_id,
            project_id=event.project_id,
            environment_id=event.environment_id,
            bundle_id=event.bundle_id,
            version_id=event.version_id,
            spec_hash=event.spec_hash,
            capabilities=event.capabilities,
            agent_ids=event.agent_ids,
            approval_id=event.approval_id,
            requested_by=event.requested_by,
            requested_at=event.at,
            activation_timeout_s=event.activation_timeout_s,
            rollback_of=event.rollback_of,
            status=event.status,
            history=(HistoryEntry(status=event.status, at=event.at),),
            reports=(),
            version=1,
        )
    if state is None:
        raise InvalidHistory(f"{type(event).__name__} before deployment.requested")
    match event:
        case DeploymentApproved():
            return _moved(state, "approved", event.at)
        case DeploymentDenied(reason=reason):
            return _moved(state, "denied", event.at, reason)
        case DeploymentBuildStarted(job_id=job_id, secrets_key=secrets_key):
            building = replace(state, build_job_id=job_id, secrets_key=secrets_key)
            return _moved(building, "building", event.at)
        case DeploymentBuildCompleted():
            started = replace(
                state,
                bundle_digest=event.bundle_digest,
                bundle_key=event.bundle_key,
                kid=event.kid,
                deploying_since=event.at,
            )
            return _moved(started, "deploying", event.at)
        case DeploymentAgentActivated():
            return _reported(
                state, event.agent_id, "activated", event.at, None, event.applied_tuning
            )
        case DeploymentAgentFailed():
            return _reported(
                state, event.agent_id, "failed", event.at, event.reason, event.applied_tuning
            )
        case DeploymentActivated(supersedes=supersedes):
            return _moved(replace(state, supersedes=supersedes), "active", event.at)
        case DeploymentFailed(reason=reason, detail=detail):
            failed = replace(state, failure_reason=reason, failure_detail=detail)
            return _moved(failed, "failed", event.at, reason)
        case DeploymentSuperseded(by_deployment_id=by):
            return _moved(replace(state, superseded_by=by), "superseded", event.at)
        case DeploymentRollbackStarted():
            rolling = replace(
                state,
                rollback_id=event.rollback_deployment_id,
                restores_deployment_id=event.restores_deployment_id,
                rolled_back_from=state.status,
            )
            return _moved(rolling, "rolling_back", event.at)
        case DeploymentRolledBack():
            return _moved(state, "rolled_back", event.at)
        case DeploymentRollbackAbandoned(reason=reason):
            back = state.rolled_back_from
            if back is None:
                raise InvalidHistory("rollback abandoned without a rollback")
            return _moved(replace(state, rollback_id=None), back, event.at, reason)
        case _:
            assert_never(event)


def _moved(
    state: Deployment, status: Status, at: datetime, reason: str | None = None
) -> Deployment:
    entry = HistoryEntry(status=status, at=at, reason=reason)
    return replace(state, status=status, history=(*state.history, entry), version=state.version + 1)


def _reported(
    state: Deployment,
    agent_id: uuid.UUID,
    report_state: ReportState,
    at: datetime,
    reason: str | None,
    applied_tuning: tuple[AppliedTuning, ...],
) -> Deployment:
    report = AgentReport(
        agent_id=agent_id,
        state=report_state,
        at=at,
        reason=reason,
        applied_tuning=applied_tuning,
    )
    kept = tuple(r for r in state.reports if r.agent_id != agent_id)
    return replace(state, reports=(*kept, report), version=state.version + 1)


def fold(events: Iterable[Event]) -> Deployment | None:
    state: Deployment | None = None
    for event in events:
        if not isinstance(event, DeploymentEvent):
            raise InvalidHistory(f"{type(event).__name__} is not a deployment event")
        state = evolve(state, event)
    return state


def rollout(state: Deployment) -> Rollout:
    activated = tuple(r.agent_id for r in state.reports if r.state == "activated")
    failed = tuple(r.agent_id for r in state.reports if r.state == "failed")
    reported = set(activated) | set(failed)
    return Rollout(
        status=state.status,
        targeted=len(state.agent_ids),
        activated=activated,
        failed=failed,
        pending=tuple(a for a in state.agent_ids if a not in reported),
    )
