"""The config bundles read model: each environment's bundles, without secrets.

Consumes config_bundle.* events. Inline secret references are stored in their
public form (``{"kind": "inline", "key_id": …}``, domain.adapters.public_view):
the ciphertext stays in the events, so no read table holds it. Every statement
is guarded by the stream version or is an insert that does nothing on conflict,
so applying an event twice changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

import msgspec

from domain import config_bundle as bundle_mod
from domain.adapters import public_view
from domain.codec import EventCodec, default_codec
from domain.envelope import RecordedEvent
from schema.pg import Connection

NAME: Final = "config_bundles"


# --- representation (commands/config_bundle_views.py answers with the same shape) ----


class Links(msgspec.Struct, frozen=True, kw_only=True):
    self: str


class BundleView(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    org_id: uuid.UUID
    project_id: uuid.UUID
    environment_id: uuid.UUID
    version_id: uuid.UUID
    spec_hash: str
    required_capabilities: list[str]
    tuning: msgspec.Raw
    adapters: msgspec.Raw
    parameters: msgspec.Raw
    content_hash: str
    locked: bool
    used_by: list[uuid.UUID]
    revision: int
    created_at: datetime
    updated_at: datetime
    links: Links


def bundle_path(
    org_id: uuid.UUID, project_id: uuid.UUID, env_id: uuid.UUID, bundle_id: uuid.UUID
) -> str:
    return f"/api/v1/orgs/{org_id}/projects/{project_id}/environments/{env_id}/bundles/{bundle_id}"


def bundle_from_row(row: Any) -> BundleView:
    used_by = msgspec.json.decode(row["used_by"], type=list[uuid.UUID])
    return BundleView(
        id=row["id"],
        org_id=row["org_id"],
        project_id=row["project_id"],
        environment_id=row["environment_id"],
        version_id=row["version_id"],
        spec_hash=row["spec_hash"],
        required_capabilities=msgspec.json.decode(row["required_capabilities"]),
        tuning=msgspec.Raw(row["tuning"]),
        adapters=msgspec.Raw(row["adapters"]),
        parameters=msgspec.Raw(row["parameters"]),
        content_hash=row["content_hash"],
        locked=bool(used_by),
        used_by=used_by,
        revision=row["stream_version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        links=Links(
            self=bundle_path(row["org_id"], row["project_id"], row["environment_id"], row["id"])
        ),
    )


def _public(content: bundle_mod.BundleContent) -> tuple[bytes, bytes, bytes]:
    return (
        msgspec.json.encode(content.tuning),
        msgspec.json.encode([public_view(a) for a in content.adapters]),
        msgspec.json.encode(content.parameters),
    )


# --- the projection --------------------------------------------------------------------


class ConfigBundleProjection:
    name: str = NAME
    tables: Sequence[str] = ("config_bundle_view",)

    def __init__(self, codec: EventCodec | None = None) -> None:
        self.codec = codec or default_codec()

    def handles(self, event_type: str) -> bool:
        return event_type.split(".", 1)[0] == bundle_mod.STREAM_TYPE

    async def apply(self, conn: Connection, event: RecordedEvent) -> None:
        decoded = self.codec.decode_recorded(event)
        rev = event.stream_version
        at = event.recorded_at
        sid = uuid.UUID(event.stream_id.split("-", 1)[1])
        match decoded:
            case bundle_mod.ConfigBundleCreated():
                tuning, adapters, parameters = _public(decoded.content)
                await conn.execute(
                    """
                    INSERT INTO config_bundle_view (id, org_id, project_id, environment_id,
                        version_id, spec_hash, required_capabilities, tuning, adapters,
                        parameters, content_hash, stream_version, created_at, updated_at)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)
                    ON CONFLICT (id) DO NOTHING
                    """,
                    decoded.bundle_id,
                    decoded.org_id,
                    decoded.project_id,
                    decoded.environment_id,
                    decoded.version_id,
                    decoded.spec_hash,
                    msgspec.json.encode(decoded.required_capabilities),
                    tuning,
                    adapters,
                    parameters,
                    decoded.content_hash,
                    rev,
                    at,
                )
            case bundle_mod.ConfigBundleUpdated():
                tuning, adapters, parameters = _public(decoded.content)
                await conn.execute(
                    """
                    UPDATE config_bundle_view SET tuning = $2, adapters = $3, parameters = $4,
                        content_hash = $5, stream_version = $6, updated_at = $7
                    WHERE id = $1 AND stream_version < $6
                    """,
                    sid,
                    tuning,
                    adapters,
                    parameters,
                    decoded.content_hash,
                    rev,
                    at,
                )
            case bundle_mod.ConfigBundleUsed():
                await conn.execute(
                    """
                    UPDATE config_bundle_view SET used_by = used_by || $2::jsonb,
                        stream_version = $3, updated_at = $4
                    WHERE id = $1 AND stream_version < $3
                    """,
                    sid,
                    msgspec.json.encode([decoded.deployment_id]),
                    rev,
                    at,
                )
            case bundle_mod.ConfigBundleDeleted():
                await conn.execute(
                    """
                    UPDATE config_bundle_view SET stream_version = $2, updated_at = $3,
                        deleted_at = coalesce(deleted_at, $3)
                    WHERE id = $1 AND stream_version < $2
                    """,
                    sid,
                    rev,
                    at,
                )
            case _:
                pass
