"""How deployments and approvals are shown over HTTP (DOMAIN.md §11).

One shape whether a write route answers from the aggregate it just changed or a
query route from the read model (which stores the same folded state), so both
sides build it here from domain state. Pure: no I/O, times are given.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec

from domain.approval import Approval, effective_status
from domain.approval import Status as ApprovalStatus
from domain.deployment import AgentReport, Deployment, HistoryEntry, rollout
from domain.tuning import Tuning


class Links(msgspec.Struct, frozen=True, kw_only=True):
    self: str


class RolloutView(msgspec.Struct, frozen=True, kw_only=True):
    targeted: int
    activated: list[uuid.UUID]
    failed: list[uuid.UUID]
    pending: list[uuid.UUID]


class DeploymentView(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    org_id: uuid.UUID
    project_id: uuid.UUID
    environment_id: uuid.UUID
    bundle_id: uuid.UUID
    version_id: uuid.UUID
    spec_hash: str
    capabilities: list[str]
    status: str
    approval_id: uuid.UUID | None
    approval_status: ApprovalStatus | None
    agent_ids: list[uuid.UUID]
    requested_by: uuid.UUID
    requested_tuning: Tuning | None
    history: list[HistoryEntry]
    reports: list[AgentReport]  # per agent, with the tuning it applied
    rollout: RolloutView
    rollback_of: uuid.UUID | None
    rollback_id: uuid.UUID | None
    supersedes: uuid.UUID | None
    superseded_by: uuid.UUID | None
    bundle_digest: str | None
    kid: str | None
    failure_reason: str | None
    failure_detail: str | None
    revision: int
    created_at: datetime
    updated_at: datetime
    links: Links


class ApprovalView(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    org_id: uuid.UUID
    project_id: uuid.UUID
    environment_id: uuid.UUID
    environment_posture: str
    subject_kind: str
    subject_id: uuid.UUID
    spec_hash: str
    capabilities: list[str]
    status: ApprovalStatus  # with time applied: a lapsed request reads ``expired``
    requested_by: uuid.UUID
    requested_at: datetime
    expires_at: datetime
    decided_by: uuid.UUID | None
    decided_at: datetime | None
    reason: str | None
    kid: str | None
    credential: str | None  # a signed statement agents receive, not a secret
    credential_expires_at: datetime | None
    revision: int
    created_at: datetime
    updated_at: datetime
    links: Links


def environment_path(org_id: uuid.UUID, project_id: uuid.UUID, env_id: uuid.UUID) -> str:
    return f"/api/v1/orgs/{org_id}/projects/{project_id}/environments/{env_id}"


def deployment_view(
    state: Deployment,
    *,
    approval_status: ApprovalStatus | None,
    requested_tuning: Tuning | None,
    created_at: datetime,
    updated_at: datetime,
) -> DeploymentView:
    out = rollout(state)
    base = environment_path(state.org_id, state.project_id, state.environment_id)
    return DeploymentView(
        id=state.id,
        org_id=state.org_id,
        project_id=state.project_id,
        environment_id=state.environment_id,
        bundle_id=state.bundle_id,
        version_id=state.version_id,
        spec_hash=state.spec_hash,
        capabilities=list(state.capabilities),
        status=state.status,
        approval_id=state.approval_id,
        approval_status=approval_status,
        agent_ids=list(state.agent_ids),
        requested_by=state.requested_by,
        requested_tuning=requested_tuning,
        history=list(state.history),
        reports=list(state.reports),
        rollout=RolloutView(
            targeted=out.targeted,
            activated=list(out.activated),
            failed=list(out.failed),
            pending=list(out.pending),
        ),
        rollback_of=state.rollback_of,
        rollback_id=state.rollback_id,
        supersedes=state.supersedes,
        superseded_by=state.superseded_by,
        bundle_digest=state.bundle_digest,
        kid=state.kid,
        failure_reason=state.failure_reason,
        failure_detail=state.failure_detail,
        revision=state.version,
        created_at=created_at,
        updated_at=updated_at,
        links=Links(self=f"{base}/deployments/{state.id}"),
    )


def approval_view(
    state: Approval, *, now: datetime, created_at: datetime, updated_at: datetime
) -> ApprovalView:
    base = environment_path(state.org_id, state.project_id, state.environment_id)
    return ApprovalView(
        id=state.id,
        org_id=state.org_id,
        project_id=state.project_id,
        environment_id=state.environment_id,
        environment_posture=state.environment_posture,
        subject_kind=state.subject_kind,
        subject_id=state.subject_id,
        spec_hash=state.spec_hash,
        capabilities=list(state.capabilities),
        status=effective_status(state, now),
        requested_by=state.requested_by,
        requested_at=state.requested_at,
        expires_at=state.expires_at,
        decided_by=state.decided_by,
        decided_at=state.decided_at,
        reason=state.reason,
        kid=state.kid,
        credential=state.credential,
        credential_expires_at=state.credential_expires_at,
        revision=state.version,
        created_at=created_at,
        updated_at=updated_at,
        links=Links(self=f"{base}/approvals/{state.id}"),
    )
