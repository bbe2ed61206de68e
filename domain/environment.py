"""Environment: where a project's pipelines run, with a posture and limits.

State machine (stream ``environment-<id>``)::

    (none) ──create_environment──► active ──update_environment──► active
                                     │      (nothing changed → no event)
                                     │
                                     └──delete_environment──► deleted

    deleted is terminal: every later command answers NotFound (environment_not_found).

Every decision is taken against the parent project and organization too; a
missing, deleted or foreign parent makes the environment not exist
(organization_not_found, then project_not_found, then environment_not_found).
Parents' deletions cascade in read models only.

Settings: ``max_inflight_deployments`` (1..100, default 3) and
``artifact_retention_days`` (1..3650, default 30; 90 for an environment created
with posture ``prod``, DOMAIN.md §8). The posture default applies once, at
creation: changing the posture later keeps the stored settings. An update's
``settings`` is merged field by field over the current settings; the event
carries the complete new settings.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Annotated, Final, Literal, assert_never

import msgspec
from msgspec.structs import replace

from domain.codec import CODEC, Event
from domain.errors import InvalidHistory, NotFound
from domain.organization import Name, Organization
from domain.project import Project, require_project

STREAM_TYPE: Final = "environment"

Posture = Literal["dev", "staging", "prod"]
POSTURES: Final[tuple[Posture, ...]] = ("dev", "staging", "prod")
Status = Literal["active", "deleted"]

DEFAULT_MAX_INFLIGHT_DEPLOYMENTS: Final = 3
DEFAULT_ARTIFACT_RETENTION_DAYS: Final[dict[Posture, int]] = {"dev": 30, "staging": 30, "prod": 90}

MaxInflightDeployments = Annotated[int, msgspec.Meta(ge=1, le=100)]
ArtifactRetentionDays = Annotated[int, msgspec.Meta(ge=1, le=3650)]


def stream_id(environment_id: uuid.UUID) -> str:
    return f"{STREAM_TYPE}-{environment_id}"


class EnvironmentSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Settings as stored in state and events (limits are checked on input, not on read)."""

    max_inflight_deployments: int = DEFAULT_MAX_INFLIGHT_DEPLOYMENTS
    artifact_retention_days: int = 30


class Environment(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    org_id: uuid.UUID
    project_id: uuid.UUID
    name: str
    posture: Posture
    settings: EnvironmentSettings
    status: Status
    version: int


# --- events ----------------------------------------------------------------------


class EnvironmentCreated(Event, tag="environment.created", frozen=True, kw_only=True):
    environment_id: uuid.UUID
    org_id: uuid.UUID
    project_id: uuid.UUID
    name: str
    posture: Posture
    settings: EnvironmentSettings = EnvironmentSettings()


class EnvironmentUpdated(Event, tag="environment.updated", frozen=True, kw_only=True):
    """Only the fields that changed are set; ``settings`` is the complete new settings."""

    name: str | None = None
    posture: Posture | None = None
    settings: EnvironmentSettings | None = None


class EnvironmentDeleted(Event, tag="environment.deleted", frozen=True, kw_only=True):
    pass


EnvironmentEvent = EnvironmentCreated | EnvironmentUpdated | EnvironmentDeleted
EVENTS: Final = (EnvironmentCreated, EnvironmentUpdated, EnvironmentDeleted)
CODEC.register(*EVENTS)


# --- commands (wire) ---------------------------------------------------------------


class EnvironmentSettingsInput(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """Settings in a request: absent fields take the default (create) or stay (update)."""

    max_inflight_deployments: MaxInflightDeployments | None = None
    artifact_retention_days: ArtifactRetentionDays | None = None


class CreateEnvironment(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Name
    posture: Posture
    settings: EnvironmentSettingsInput | None = None


class UpdateEnvironment(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A partial update; absent or ``null`` fields stay as they are."""

    name: Name | None = None
    posture: Posture | None = None
    settings: EnvironmentSettingsInput | None = None

    def __post_init__(self) -> None:
        if self.name is None and self.posture is None and self.settings is None:
            raise ValueError("at least one of `name`, `posture`, `settings` is required")


def default_settings(posture: Posture) -> EnvironmentSettings:
    return EnvironmentSettings(
        max_inflight_deployments=DEFAULT_MAX_INFLIGHT_DEPLOYMENTS,
        artifact_retention_days=DEFAULT_ARTIFACT_RETENTION_DAYS[posture],
    )


def merge_settings(
    base: EnvironmentSettings, given: EnvironmentSettingsInput | None
) -> EnvironmentSettings:
    """``base`` with every field that ``given`` sets replaced."""
    if given is None:
        return base
    return EnvironmentSettings(
        max_inflight_deployments=(
            base.max_inflight_deployments
            if given.max_inflight_deployments is None
            else given.max_inflight_deployments
        ),
        artifact_retention_days=(
            base.artifact_retention_days
            if given.artifact_retention_days is None
            else given.artifact_retention_days
        ),
    )


# --- evolve ----------------------------------------------------------------------------


def evolve(state: Environment | None, event: EnvironmentEvent) -> Environment:
    if isinstance(event, EnvironmentCreated):
        if state is not None:
            raise InvalidHistory(
                "environment created twice", context={"environment_id": str(state.id)}
            )
        return Environment(
            id=event.environment_id,
            org_id=event.org_id,
            project_id=event.project_id,
            name=event.name,
            posture=event.posture,
            settings=event.settings,
            status="active",
            version=1,
        )
    if state is None:
        raise InvalidHistory(f"{type(event).__name__} before environment.created")
    version = state.version + 1
    match event:
        case EnvironmentUpdated(name=name, posture=posture, settings=settings):
            return replace(
                state,
                name=state.name if name is None else name,
                posture=state.posture if posture is None else posture,
                settings=state.settings if settings is None else settings,
                version=version,
            )
        case EnvironmentDeleted():
            return replace(state, status="deleted", version=version)
        case _:
            assert_never(event)


def fold(events: Iterable[Event]) -> Environment | None:
    state: Environment | None = None
    for event in events:
        if not isinstance(event, EnvironmentEvent):
            raise InvalidHistory(f"{type(event).__name__} is not an environment event")
        state = evolve(state, event)
    return state


# --- decisions ---------------------------------------------------------------------------


def require_environment(
    org: Organization | None, project: Project | None, environment: Environment | None
) -> Environment:
    """The environment if it and its project and organization exist, are active, and nest."""
    parent = require_project(org, project)
    env = environment
    if (
        env is None
        or env.status != "active"
        or env.project_id != parent.id
        or env.org_id != parent.org_id
    ):
        context: dict[str, object] = {"org_id": str(parent.org_id), "project_id": str(parent.id)}
        if env is not None:
            context["environment_id"] = str(env.id)
            if env.project_id == parent.id:
                context["status"] = env.status
        raise NotFound("environment not found", code="environment_not_found", context=context)
    return env


def create_environment(
    org: Organization | None,
    project: Project | None,
    cmd: CreateEnvironment,
    *,
    environment_id: uuid.UUID,
) -> tuple[EnvironmentEvent, ...]:
    parent = require_project(org, project)
    return (
        EnvironmentCreated(
            environment_id=environment_id,
            org_id=parent.org_id,
            project_id=parent.id,
            name=cmd.name,
            posture=cmd.posture,
            settings=merge_settings(default_settings(cmd.posture), cmd.settings),
        ),
    )


def update_environment(
    org: Organization | None,
    project: Project | None,
    environment: Environment | None,
    cmd: UpdateEnvironment,
) -> tuple[EnvironmentEvent, ...]:
    current = require_environment(org, project, environment)
    name = cmd.name if cmd.name is not None and cmd.name != current.name else None
    posture = cmd.posture if cmd.posture is not None and cmd.posture != current.posture else None
    merged = merge_settings(current.settings, cmd.settings)
    settings = merged if merged != current.settings else None
    if name is None and posture is None and settings is None:
        return ()
    return (EnvironmentUpdated(name=name, posture=posture, settings=settings),)


def delete_environment(
    org: Organization | None, project: Project | None, environment: Environment | None
) -> tuple[EnvironmentEvent, ...]:
    require_environment(org, project, environment)
    return (EnvironmentDeleted(),)
