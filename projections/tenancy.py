"""The tenancy read model: organizations, their members, projects, environments.

Consumes organization.*, project.* and environment.* events. Every statement is
an idempotent upsert guarded by ``revision`` (the stream version), so applying
an event twice (a rebuild, a replay) changes nothing. Deleting a parent marks
its children deleted; events are never deleted.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from domain import environment as env_mod
from domain import organization as org_mod
from domain import project as project_mod
from domain.codec import EventCodec, default_codec
from domain.envelope import RecordedEvent
from schema.pg import Connection

NAME = "tenancy"
_STREAM_TYPES = (org_mod.STREAM_TYPE, project_mod.STREAM_TYPE, env_mod.STREAM_TYPE)


# --- representations (the same shapes the write routes answer with) -------------------


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


def org_from_row(row: Any) -> OrganizationView:
    return OrganizationView(
        id=row["id"],
        name=row["name"],
        settings=msgspec.json.decode(row["settings"]),
        revision=row["revision"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        links=Links(self=f"/api/v1/orgs/{row['id']}"),
    )


def project_from_row(row: Any) -> ProjectView:
    return ProjectView(
        id=row["id"],
        org_id=row["org_id"],
        name=row["name"],
        description=row["description"],
        revision=row["revision"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        links=Links(self=f"/api/v1/orgs/{row['org_id']}/projects/{row['id']}"),
    )


def environment_from_row(row: Any) -> EnvironmentView:
    return EnvironmentView(
        id=row["id"],
        org_id=row["org_id"],
        project_id=row["project_id"],
        name=row["name"],
        posture=row["posture"],
        settings=msgspec.json.decode(row["settings"], type=EnvironmentSettingsView),
        revision=row["revision"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        links=Links(
            self=f"/api/v1/orgs/{row['org_id']}/projects/{row['project_id']}"
            f"/environments/{row['id']}"
        ),
    )


# --- the projection ---------------------------------------------------------------------


def _id_of(stream_id: str) -> uuid.UUID:
    return uuid.UUID(stream_id.split("-", 1)[1])


class TenancyProjection:
    name: str = NAME
    tables: Sequence[str] = ("org_view", "org_member_view", "project_view", "environment_view")

    def __init__(self, codec: EventCodec | None = None) -> None:
        self.codec = codec or default_codec()

    def handles(self, event_type: str) -> bool:
        return event_type.split(".", 1)[0] in _STREAM_TYPES

    async def apply(self, conn: Connection, event: RecordedEvent) -> None:
        decoded = self.codec.decode_recorded(event)
        rev = event.stream_version
        at = event.recorded_at
        sid = _id_of(event.stream_id)
        match decoded:
            case org_mod.OrganizationCreated():
                await conn.execute(
                    """
                    INSERT INTO org_view (id, name, settings, revision, created_at, updated_at)
                    VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (id) DO NOTHING
                    """,
                    decoded.org_id,
                    decoded.name,
                    msgspec.json.encode(decoded.settings),
                    rev,
                    at,
                )
            case org_mod.OrganizationUpdated():
                await conn.execute(
                    """
                    UPDATE org_view SET name = coalesce($2, name),
                        settings = coalesce($3, settings), revision = $4, updated_at = $5
                    WHERE id = $1 AND revision < $4
                    """,
                    sid,
                    decoded.name,
                    None if decoded.settings is None else msgspec.json.encode(decoded.settings),
                    rev,
                    at,
                )
            case org_mod.OrganizationDeleted():
                await self._delete_org(conn, sid, rev, at)
            case org_mod.OrganizationMemberAdded() | org_mod.OrganizationMemberRoleChanged():
                await self._touch(conn, "org_view", sid, rev, at)
                await conn.execute(
                    """
                    INSERT INTO org_member_view (org_id, user_id, role, updated_at)
                    VALUES ($1, $2, $3, $4)
                    ON CONFLICT (org_id, user_id) DO UPDATE SET role = $3, updated_at = $4
                    """,
                    sid,
                    decoded.user_id,
                    decoded.role,
                    at,
                )
            case org_mod.OrganizationApiKeyIssued() | org_mod.OrganizationApiKeyRevoked():
                # Keys live in the credential table; the org's revision still moves.
                await self._touch(conn, "org_view", sid, rev, at)
            case org_mod.OrganizationMemberRemoved():
                await self._touch(conn, "org_view", sid, rev, at)
                await conn.execute(
                    "DELETE FROM org_member_view WHERE org_id = $1 AND user_id = $2",
                    sid,
                    decoded.user_id,
                )
            case project_mod.ProjectCreated():
                await conn.execute(
                    """
                    INSERT INTO project_view (id, org_id, name, description, revision,
                                              created_at, updated_at, deleted_at)
                    VALUES ($1, $2, $3, $4, $5, $6, $6,
                            (SELECT deleted_at FROM org_view WHERE id = $2))
                    ON CONFLICT (id) DO NOTHING
                    """,
                    decoded.project_id,
                    decoded.org_id,
                    decoded.name,
                    decoded.description,
                    rev,
                    at,
                )
            case project_mod.ProjectUpdated():
                await conn.execute(
                    """
                    UPDATE project_view SET name = coalesce($2, name),
                        description = coalesce($3, description), revision = $4, updated_at = $5
                    WHERE id = $1 AND revision < $4
                    """,
                    sid,
                    decoded.name,
                    decoded.description,
                    rev,
                    at,
                )
            case project_mod.ProjectDeleted():
                await self._delete_project(conn, sid, rev, at)
            case env_mod.EnvironmentCreated():
                await conn.execute(
                    """
                    INSERT INTO environment_view (id, org_id, project_id, name, posture, settings,
                                                  revision, created_at, updated_at, deleted_at)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8,
                            (SELECT deleted_at FROM project_view WHERE id = $3))
                    ON CONFLICT (id) DO NOTHING
                    """,
                    decoded.environment_id,
                    decoded.org_id,
                    decoded.project_id,
                    decoded.name,
                    decoded.posture,
                    msgspec.json.encode(decoded.settings),
                    rev,
                    at,
                )
            case env_mod.EnvironmentUpdated():
                await conn.execute(
                    """
                    UPDATE environment_view SET name = coalesce($2, name),
                        posture = coalesce($3, posture), settings = coalesce($4, settings),
                        revision = $5, updated_at = $6
                    WHERE id = $1 AND revision < $5
                    """,
                    sid,
                    decoded.name,
                    decoded.posture,
                    None if decoded.settings is None else msgspec.json.encode(decoded.settings),
                    rev,
                    at,
                )
            case env_mod.EnvironmentDeleted():
                await conn.execute(
                    """
                    UPDATE environment_view SET revision = $2, updated_at = $3,
                        deleted_at = coalesce(deleted_at, $3)
                    WHERE id = $1 AND revision < $2
                    """,
                    sid,
                    rev,
                    at,
                )
            case _:
                pass

    async def _touch(
        self, conn: Connection, table: str, id_: uuid.UUID, rev: int, at: datetime
    ) -> None:
        await conn.execute(
            f"UPDATE {table} SET revision = $2, updated_at = $3 WHERE id = $1 AND revision < $2",
            id_,
            rev,
            at,
        )

    async def _delete_org(
        self, conn: Connection, org_id: uuid.UUID, rev: int, at: datetime
    ) -> None:
        await conn.execute(
            """
            UPDATE org_view SET revision = $2, updated_at = $3,
                deleted_at = coalesce(deleted_at, $3)
            WHERE id = $1 AND revision < $2
            """,
            org_id,
            rev,
            at,
        )
        for table in ("project_view", "environment_view"):
            await conn.execute(
                f"UPDATE {table} SET deleted_at = $2 WHERE org_id = $1 AND deleted_at IS NULL",
                org_id,
                at,
            )

    async def _delete_project(
        self, conn: Connection, project_id: uuid.UUID, rev: int, at: datetime
    ) -> None:
        await conn.execute(
            """
            UPDATE project_view SET revision = $2, updated_at = $3,
                deleted_at = coalesce(deleted_at, $3)
            WHERE id = $1 AND revision < $2
            """,
            project_id,
            rev,
            at,
        )
        await conn.execute(
            """
            UPDATE environment_view SET deleted_at = $2
            WHERE project_id = $1 AND deleted_at IS NULL
            """,
            project_id,
            at,
        )
