"""Project: a unit of pipeline work inside one organization.

State machine (stream ``project-<id>``)::

    (none) ──create_project──► active ──update_project──► active
                                 │      (nothing changed → no event)
                                 │
                                 └──delete_project──► deleted

    deleted is terminal: every later command answers NotFound (project_not_found).

Every decision is taken against the parent organization as well: a project
whose organization is missing or deleted does not exist (organization_not_found),
and neither does one that belongs to another organization (project_not_found,
without naming the other organization: no existence leak across tenants).
Deleting an organization appends nothing to its projects' streams; read
models cascade the soft delete.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Final, Literal, assert_never

import msgspec
from msgspec.structs import replace

from domain.codec import CODEC, Event
from domain.errors import InvalidHistory, NotFound
from domain.organization import Description, Name, Organization, require_organization

STREAM_TYPE: Final = "project"

Status = Literal["active", "deleted"]


def stream_id(project_id: uuid.UUID) -> str:
    return f"{STREAM_TYPE}-{project_id}"


class Project(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    org_id: uuid.UUID
    name: str
    description: str
    status: Status
    version: int


# --- events ----------------------------------------------------------------------


class ProjectCreated(Event, tag="project.created", frozen=True, kw_only=True):
    project_id: uuid.UUID
    org_id: uuid.UUID
    name: str
    description: str = ""


class ProjectUpdated(Event, tag="project.updated", frozen=True, kw_only=True):
    """Only the fields that changed are set."""

    name: str | None = None
    description: str | None = None


class ProjectDeleted(Event, tag="project.deleted", frozen=True, kw_only=True):
    pass


ProjectEvent = ProjectCreated | ProjectUpdated | ProjectDeleted
EVENTS: Final = (ProjectCreated, ProjectUpdated, ProjectDeleted)
CODEC.register(*EVENTS)


# --- commands (wire) ---------------------------------------------------------------


class CreateProject(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Name
    description: Description = ""


class UpdateProject(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A partial update; absent or ``null`` fields stay as they are.

    An empty ``description`` clears it.
    """

    name: Name | None = None
    description: Description | None = None

    def __post_init__(self) -> None:
        if self.name is None and self.description is None:
            raise ValueError("at least one of `name`, `description` is required")


# --- evolve ----------------------------------------------------------------------------


def evolve(state: Project | None, event: ProjectEvent) -> Project:
    if isinstance(event, ProjectCreated):
        if state is not None:
            raise InvalidHistory("project created twice", context={"project_id": str(state.id)})
        return Project(
            id=event.project_id,
            org_id=event.org_id,
            name=event.name,
            description=event.description,
            status="active",
            version=1,
        )
    if state is None:
        raise InvalidHistory(f"{type(event).__name__} before project.created")
    version = state.version + 1
    match event:
        case ProjectUpdated(name=name, description=description):
            return replace(
                state,
                name=state.name if name is None else name,
                description=state.description if description is None else description,
                version=version,
            )
        case ProjectDeleted():
            return replace(state, status="deleted", version=version)
        case _:
            assert_never(event)


def fold(events: Iterable[Event]) -> Project | None:
    state: Project | None = None
    for event in events:
        if not isinstance(event, ProjectEvent):
            raise InvalidHistory(f"{type(event).__name__} is not a project event")
        state = evolve(state, event)
    return state


# --- decisions ---------------------------------------------------------------------------


def require_project(org: Organization | None, project: Project | None) -> Project:
    """The project if it and its organization exist, are active, and belong together."""
    parent = require_organization(org)
    if project is None or project.status != "active" or project.org_id != parent.id:
        context: dict[str, object] = {"org_id": str(parent.id)}
        if project is not None:
            context["project_id"] = str(project.id)
            if project.org_id == parent.id:
                context["status"] = project.status
        raise NotFound("project not found", code="project_not_found", context=context)
    return project


def create_project(
    org: Organization | None, cmd: CreateProject, *, project_id: uuid.UUID
) -> tuple[ProjectEvent, ...]:
    parent = require_organization(org)
    return (
        ProjectCreated(
            project_id=project_id, org_id=parent.id, name=cmd.name, description=cmd.description
        ),
    )


def update_project(
    org: Organization | None, project: Project | None, cmd: UpdateProject
) -> tuple[ProjectEvent, ...]:
    current = require_project(org, project)
    name = cmd.name if cmd.name is not None and cmd.name != current.name else None
    description = (
        cmd.description
        if cmd.description is not None and cmd.description != current.description
        else None
    )
    if name is None and description is None:
        return ()
    return (ProjectUpdated(name=name, description=description),)


def delete_project(org: Organization | None, project: Project | None) -> tuple[ProjectEvent, ...]:
    require_project(org, project)
    return (ProjectDeleted(),)
