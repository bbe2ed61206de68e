"""Deployment events and the agent's status report (wire), DOMAIN.md §5 and §6.

Every transition of the table in ``domain.deployment`` is one of these events,
stamped ``at`` by the decision that made it (domain code reads no clock).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Final, Literal

import msgspec

from domain.adapters import InlineRef
from domain.codec import CODEC, Event

MAX_REASON: Final = 2000
DEFAULT_ACTIVATION_TIMEOUT_S: Final = 600
TuningState = Literal["applied", "degraded", "failed"]
ReportState = Literal["activated", "failed"]


# --- reports ---------------------------------------------------------------------------


class AppliedTuning(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One tuning setting as the agent applied it (DOMAIN.md §6)."""

    key: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    requested: Annotated[str, msgspec.Meta(max_length=256)]
    applied: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    state: TuningState
    reason: Annotated[str, msgspec.Meta(max_length=MAX_REASON)] | None = None


class StatusReport(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /agents/{agent}/deployments/{id}/status``."""

    state: ReportState
    reason: Annotated[str, msgspec.Meta(max_length=MAX_REASON)] | None = None
    applied_tuning: Annotated[list[AppliedTuning], msgspec.Meta(max_length=64)] = []


# --- events ---------------------------------------------------------------------------


class DeploymentRequested(Event, tag="deployment.requested", frozen=True, kw_only=True):
    deployment_id: uuid.UUID
    org_id: uuid.UUID
    project_id: uuid.UUID
    environment_id: uuid.UUID
    bundle_id: uuid.UUID
    version_id: uuid.UUID
    spec_hash: str
    capabilities: tuple[str, ...] = ()
    agent_ids: tuple[uuid.UUID, ...]
    approval_id: uuid.UUID | None = None
    requested_by: uuid.UUID
    activation_timeout_s: int = DEFAULT_ACTIVATION_TIMEOUT_S
    rollback_of: uuid.UUID | None = None
    status: Literal["pending_approval", "approved"]
    at: datetime


class DeploymentApproved(Event, tag="deployment.approved", frozen=True, kw_only=True):
    approval_id: uuid.UUID
    at: datetime


class DeploymentDenied(Event, tag="deployment.denied", frozen=True, kw_only=True):
    approval_id: uuid.UUID
    reason: Literal["denied", "expired", "revoked"]
    at: datetime


class DeploymentBuildStarted(Event, tag="deployment.build_started", frozen=True, kw_only=True):
    """``secrets_key``: the per-bundle secrets key sealed under the organization's data
    key, recorded before anything is uploaded so a redelivered build reuses it
    (same key, same bytes, same content address; decision 0011)."""

    job_id: uuid.UUID
    secrets_key: InlineRef | None = None
    at: datetime


class DeploymentBuildCompleted(Event, tag="deployment.build_completed", frozen=True, kw_only=True):
    """The deploy bundle is stored: agents may fetch it (``deploying`` starts here).

    ``bundle_key`` is its object storage key (content-addressed).
    """

    bundle_digest: str
    bundle_key: str
    kid: str
    at: datetime


class DeploymentAgentActivated(Event, tag="deployment.agent_activated", frozen=True, kw_only=True):
    agent_id: uuid.UUID
    applied_tuning: tuple[AppliedTuning, ...] = ()
    at: datetime


class DeploymentAgentFailed(Event, tag="deployment.agent_failed", frozen=True, kw_only=True):
    agent_id: uuid.UUID
    reason: str | None = None
    applied_tuning: tuple[AppliedTuning, ...] = ()
    at: datetime


class DeploymentActivated(Event, tag="deployment.activated", frozen=True, kw_only=True):
    supersedes: uuid.UUID | None = None
    at: datetime


class DeploymentFailed(Event, tag="deployment.failed", frozen=True, kw_only=True):
    """``reason``: ``build_failed``, ``agent_failed`` or ``activation_timeout``."""

    reason: str
    detail: str | None = None
    agent_ids: tuple[uuid.UUID, ...] = ()  # the failed or silent agents
    at: datetime


class DeploymentSuperseded(Event, tag="deployment.superseded", frozen=True, kw_only=True):
    by_deployment_id: uuid.UUID
    at: datetime


class DeploymentRollbackStarted(
    Event, tag="deployment.rollback_started", frozen=True, kw_only=True
):
    rollback_deployment_id: uuid.UUID
    restores_deployment_id: uuid.UUID
    restores_bundle_id: uuid.UUID
    at: datetime


class DeploymentRolledBack(Event, tag="deployment.rolled_back", frozen=True, kw_only=True):
    by_deployment_id: uuid.UUID
    at: datetime


class DeploymentRollbackAbandoned(
    Event, tag="deployment.rollback_abandoned", frozen=True, kw_only=True
):
    rollback_deployment_id: uuid.UUID
    reason: str
    at: datetime


DeploymentEvent = (
    DeploymentRequested
    | DeploymentApproved
    | DeploymentDenied
    | DeploymentBuildStarted
    | DeploymentBuildCompleted
    | DeploymentAgentActivated
    | DeploymentAgentFailed
    | DeploymentActivated
    | DeploymentFailed
    | DeploymentSuperseded
    | DeploymentRollbackStarted
    | DeploymentRolledBack
    | DeploymentRollbackAbandoned
)
EVENTS: Final = (
    DeploymentRequested,
    DeploymentApproved,
    DeploymentDenied,
    DeploymentBuildStarted,
    DeploymentBuildCompleted,
    DeploymentAgentActivated,
    DeploymentAgentFailed,
    DeploymentActivated,
    DeploymentFailed,
    DeploymentSuperseded,
    DeploymentRollbackStarted,
    DeploymentRolledBack,
    DeploymentRollbackAbandoned,
)
CODEC.register(*EVENTS)
