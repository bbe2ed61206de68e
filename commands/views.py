"""Resource representations returned by write routes.

They match, field for field, what the query routes return for the same
resource (projections/tenancy.py builds those from read tables); a test
compares the two so that a client sees one shape whatever answered it.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec

from domain.environment import Environment
from domain.organization import Organization
from domain.project import Project


class Links(msgspec.Struct, frozen=True, kw_only=True):
    self: str


class EnvironmentSettingsView(msgspec.Struct, frozen=True, kw_only=True):
    max_inflight_deployments: int
    artifact_retention_days: int


class OrganizationView(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    name: str
    settings: dict[str, str | int | bool | None]
    revision: int
    created_at: datetime
    updated_at: datetime
    links: Links


class ProjectView(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    org_id: uuid.UUID
    name: str
    description: str
    revision: int
    created_at: datetime
    updated_at: datetime
    links: Links


class EnvironmentView(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    org_id: uuid.UUID
    project_id: uuid.UUID
    name: str
    posture: str
    settings: EnvironmentSettingsView
    revision: int
    created_at: datetime
    updated_at: datetime
    links: Links


def org_path(org_id: uuid.UUID) -> str:
    return f"/api/v1/orgs/{org_id}"


def project_path(org_id: uuid.UUID, project_id: uuid.UUID) -> str:
    return f"{org_path(org_id)}/projects/{project_id}"


def environment_path(org_id: uuid.UUID, project_id: uuid.UUID, env_id: uuid.UUID) -> str:
    return f"{project_path(org_id, project_id)}/environments/{env_id}"


def organization_view(
    org: Organization, created_at: datetime, updated_at: datetime
) -> OrganizationView:
    return OrganizationView(
        id=org.id,
        name=org.name,
        settings=dict(org.settings),
        revision=org.version,
        created_at=created_at,
        updated_at=updated_at,
        links=Links(self=org_path(org.id)),
    )


def project_view(project: Project, created_at: datetime, updated_at: datetime) -> ProjectView:
    return ProjectView(
        id=project.id,
        org_id=project.org_id,
        name=project.name,
        description=project.description,
        revision=project.version,
        created_at=created_at,
        updated_at=updated_at,
        links=Links(self=project_path(project.org_id, project.id)),
    )


def environment_view(
    env: Environment, created_at: datetime, updated_at: datetime
) -> EnvironmentView:
    return EnvironmentView(
        id=env.id,
        org_id=env.org_id,
        project_id=env.project_id,
        name=env.name,
        posture=env.posture,
        settings=EnvironmentSettingsView(
            max_inflight_deployments=env.settings.max_inflight_deployments,
            artifact_retention_days=env.settings.artifact_retention_days,
        ),
        revision=env.version,
        created_at=created_at,
        updated_at=updated_at,
        links=Links(self=environment_path(env.org_id, env.project_id, env.id)),
    )
