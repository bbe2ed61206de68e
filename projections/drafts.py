"""The drafts read model: drafts with their latest validation, and versions.

Consumes draft.* and version.* events. Every statement is guarded by the
stream version (``stream_version < $v``) or is an insert that does nothing on
conflict, so applying an event twice changes nothing. Input and spec parts
(domain/draft.py) arrive in stream order and are appended to the text.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

import msgspec

from domain import draft as draft_mod
from domain import version as version_mod
from domain.codec import EventCodec, default_codec
from domain.envelope import RecordedEvent
from domain.spec.diagnostics import Diagnostic
from schema.pg import Connection

NAME: Final = "drafts"
_STREAM_TYPES: Final = (draft_mod.STREAM_TYPE, version_mod.STREAM_TYPE)


# --- representations (commands/draft_views.py answers with the same shapes) -----------


class Links(msgspec.Struct, frozen=True, kw_only=True):
    self: str


class ValidationView(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    revision: int
    diagnostics: list[Diagnostic]
    spec_hash: str | None
    required_capabilities: list[str]


class DraftView(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    org_id: uuid.UUID
    project_id: uuid.UUID
    name: str
    target: str
    input_kind: str
    revision: int
    validation: ValidationView
    versions: int
    created_at: datetime
    updated_at: datetime
    links: Links


class DraftDetailView(DraftView, frozen=True, kw_only=True):
    """One draft with its input: ``spec_kv`` text or the ``plan`` object."""

    spec_kv: str | None
    plan: msgspec.Raw | None


class VersionView(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    org_id: uuid.UUID
    project_id: uuid.UUID
    draft_id: uuid.UUID
    draft_revision: int
    number: int
    target: str
    spec_hash: str
    required_capabilities: list[str]
    report: msgspec.Raw
    created_at: datetime
    updated_at: datetime
    links: Links


def project_path(org_id: uuid.UUID, project_id: uuid.UUID) -> str:
    return f"/api/v1/orgs/{org_id}/projects/{project_id}"


def draft_from_row(row: Any) -> DraftView:
    return DraftView(**_draft_fields(row))


def draft_detail_from_row(row: Any) -> DraftDetailView:
    kv = row["input_kind"] == "spec_kv"
    return DraftDetailView(
        **_draft_fields(row),
        spec_kv=row["input"] if kv else None,
        plan=None if kv else msgspec.Raw(row["input"].encode()),
    )


def _draft_fields(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "org_id": row["org_id"],
        "project_id": row["project_id"],
        "name": row["name"],
        "target": row["target"],
        "input_kind": row["input_kind"],
        "revision": row["revision"],
        "validation": ValidationView(
            status=row["validation_status"],
            revision=row["validation_revision"],
            diagnostics=msgspec.json.decode(row["diagnostics"], type=list[Diagnostic]),
            spec_hash=row["spec_hash"],
            required_capabilities=msgspec.json.decode(row["required_capabilities"]),
        ),
        "versions": row["versions"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "links": Links(self=f"{project_path(row['org_id'], row['project_id'])}/drafts/{row['id']}"),
    }


def version_from_row(row: Any) -> VersionView:
    return VersionView(
        id=row["id"],
        org_id=row["org_id"],
        project_id=row["project_id"],
        draft_id=row["draft_id"],
        draft_revision=row["draft_revision"],
        number=row["number"],
        target=row["target"],
        spec_hash=row["spec_hash"],
        required_capabilities=msgspec.json.decode(row["required_capabilities"]),
        report=msgspec.Raw(row["report"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        links=Links(self=f"{project_path(row['org_id'], row['project_id'])}/versions/{row['id']}"),
    )


# --- the projection ---------------------------------------------------------------------


def _id_of(stream_id: str) -> uuid.UUID:
    return uuid.UUID(stream_id.split("-", 1)[1])


class DraftProjection:
    name: str = NAME
    tables: Sequence[str] = ("draft_view", "version_view")

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
            case draft_mod.DraftCreated():
                await conn.execute(
                    """
                    INSERT INTO draft_view (id, org_id, project_id, name, target, input_kind,
                        input, revision, input_revision, validation_status,
                        validation_revision, stream_version, created_at, updated_at)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, 1, 1, 'pending', 1, $8, $9, $9)
                    ON CONFLICT (id) DO NOTHING
                    """,
                    decoded.draft_id,
                    decoded.org_id,
                    decoded.project_id,
                    decoded.name,
                    decoded.target,
                    decoded.input_kind,
                    decoded.input,
                    rev,
                    at,
                )
            case draft_mod.DraftUpdated():
                # The input revision moves (and validation resets) when the input
                # or the target changed: the same rule as domain.draft.evolve.
                await conn.execute(
                    """
                    UPDATE draft_view SET
                        name = coalesce($2, name),
                        input_kind = coalesce($4, input_kind),
                        input = coalesce($5, input),
                        input_revision = CASE WHEN $5::text IS NOT NULL
                            OR ($3::text IS NOT NULL AND $3 <> target)
                            THEN $6 ELSE input_revision END,
                        validation_status = CASE WHEN $5::text IS NOT NULL
                            OR ($3::text IS NOT NULL AND $3 <> target)
                            THEN 'pending' ELSE validation_status END,
                        validation_revision = CASE WHEN $5::text IS NOT NULL
                            OR ($3::text IS NOT NULL AND $3 <> target)
                            THEN $6 ELSE validation_revision END,
                        diagnostics = CASE WHEN $5::text IS NOT NULL
                            OR ($3::text IS NOT NULL AND $3 <> target)
                            THEN '[]'::jsonb ELSE diagnostics END,
                        spec_hash = CASE WHEN $5::text IS NOT NULL
                            OR ($3::text IS NOT NULL AND $3 <> target)
                            THEN NULL ELSE spec_hash END,
                        required_capabilities = CASE WHEN $5::text IS NOT NULL
                            OR ($3::text IS NOT NULL AND $3 <> target)
                            THEN '[]'::jsonb ELSE required_capabilities END,
                        target = coalesce($3, target),
                        revision = $6, stream_version = $7, updated_at = $8
                    WHERE id = $1 AND stream_version < $7
                    """,
                    sid,
                    decoded.name,
                    decoded.target,
                    decoded.input_kind,
                    decoded.input,
                    decoded.revision,
                    rev,
                    at,
                )
            case draft_mod.DraftInputPart():
                await conn.execute(
                    """
                    UPDATE draft_view SET input = input || $2, stream_version = $3
                    WHERE id = $1 AND stream_version < $3
                    """,
                    sid,
                    decoded.text,
                    rev,
                )
            case draft_mod.DraftValidated():
                await conn.execute(
                    """
                    UPDATE draft_view SET validation_status = $2, validation_revision = $3,
                        diagnostics = $4, spec_hash = $5, required_capabilities = $6,
                        stream_version = $7, updated_at = $8
                    WHERE id = $1 AND stream_version < $7
                    """,
                    sid,
                    decoded.status,
                    decoded.revision,
                    msgspec.json.encode(decoded.diagnostics),
                    decoded.spec_hash,
                    msgspec.json.encode(decoded.required_capabilities),
                    rev,
                    at,
                )
            case draft_mod.DraftVersionCreated():
                await conn.execute(
                    """
                    UPDATE draft_view SET versions = greatest(versions, $2),
                        stream_version = $3, updated_at = $4
                    WHERE id = $1 AND stream_version < $3
                    """,
                    sid,
                    decoded.number,
                    rev,
                    at,
                )
            case draft_mod.DraftDeleted():
                await conn.execute(
                    """
                    UPDATE draft_view SET stream_version = $2, updated_at = $3,
                        deleted_at = coalesce(deleted_at, $3)
                    WHERE id = $1 AND stream_version < $2
                    """,
                    sid,
                    rev,
                    at,
                )
            case version_mod.VersionCreated():
                await conn.execute(
                    """
                    INSERT INTO version_view (id, org_id, project_id, draft_id, draft_revision,
                        number, target, spec_hash, required_capabilities, report, spec,
                        stream_version, created_at, updated_at)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)
                    ON CONFLICT (id) DO NOTHING
                    """,
                    decoded.version_id,
                    decoded.org_id,
                    decoded.project_id,
                    decoded.draft_id,
                    decoded.draft_revision,
                    decoded.number,
                    decoded.target,
                    decoded.spec_hash,
                    msgspec.json.encode(decoded.required_capabilities),
                    msgspec.json.encode(decoded.report),
                    decoded.spec,
                    rev,
                    at,
                )
            case version_mod.VersionSpecPart():
                await conn.execute(
                    """
                    UPDATE version_view SET spec = spec || $2, stream_version = $3
                    WHERE id = $1 AND stream_version < $3
                    """,
                    sid,
                    decoded.text,
                    rev,
                )
            case _:
                pass
