"""Query routes for a project's drafts and versions. They read only read tables
(``draft_view``, ``version_view``, kept by ``projections/drafts.py``).

Visibility is the project's (``ViewProject``); a draft or version of another
project or organization is 404, like one that does not exist.
``?min_position=N`` waits (bounded) until the drafts projection has applied N:
a draft's validation, recorded by the ``spec_ingest`` job, is visible once
its position is (or poll ``validation.status``).
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

import asyncpg
from litestar import MediaType, Response, get
from litestar.params import FromPath, QueryParameter

from domain.access import Permission
from domain.errors import FieldError, InvalidInput
from domain.paging import Page
from projections.drafts import (
    NAME,
    DraftDetailView,
    DraftView,
    VersionView,
    draft_detail_from_row,
    draft_from_row,
    version_from_row,
)
from projections.routes import PROJECT
from projections.rows import Cursor, Limit, etag, fetch_one, fetch_page, keyset
from projections.scope import AnyRequest, MinPosition, ReadModel

DRAFTS = PROJECT + "/drafts"
VERSIONS = PROJECT + "/versions"
_SPEC_HASH = re.compile(r"sha256:[0-9a-f]{64}")

SpecHashFilter = Annotated[
    str | None,
    QueryParameter(description="Only the version of this spec hash (sha256:<64 hex>)"),
]
_DRAFTS = ReadModel(NAME, "the drafts read model")


@get(DRAFTS, summary="Drafts of a project (without their input)")
async def list_drafts(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    min_position: MinPosition = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Page[DraftView]:
    page = keyset(limit, cursor)
    pool = await _DRAFTS.ready_for_project(
        request, org_id, project_id, Permission.VIEW_PROJECT, min_position
    )
    return await fetch_page(
        pool,
        page,
        """
        SELECT id, org_id, project_id, name, target, input_kind, revision,
               validation_status, validation_revision, diagnostics, spec_hash,
               required_capabilities, versions, created_at, updated_at
        FROM draft_view
        WHERE project_id = $1 AND org_id = $2 AND deleted_at IS NULL
        """,
        project_id,
        org_id,
        build=draft_from_row,
    )


@get(DRAFTS + "/{draft_id:uuid}", summary="A draft with its input and latest validation")
async def get_draft(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    draft_id: FromPath[uuid.UUID],
    min_position: MinPosition = None,
) -> Response[DraftDetailView]:
    pool = await _DRAFTS.ready_for_project(
        request, org_id, project_id, Permission.VIEW_PROJECT, min_position
    )
    row = await fetch_one(
        pool,
        "draft",
        "draft_not_found",
        """
        SELECT * FROM draft_view
        WHERE id = $1 AND project_id = $2 AND org_id = $3 AND deleted_at IS NULL
        """,
        draft_id,
        project_id,
        org_id,
    )
    view = draft_detail_from_row(row)
    return Response(view, headers=etag(view.revision))


@get(VERSIONS, summary="Versions of a project; ?spec_hash= resolves a version by its hash")
async def list_versions(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    spec_hash: SpecHashFilter = None,
    min_position: MinPosition = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Page[VersionView]:
    if spec_hash is not None and not _SPEC_HASH.fullmatch(spec_hash):
        raise InvalidInput(
            "spec_hash is sha256: and 64 lower-case hex digits",
            code="invalid_spec_hash",
            errors=(FieldError("query.spec_hash", "sha256:<64 lower-case hex digits>"),),
        )
    page = keyset(limit, cursor)
    pool = await _DRAFTS.ready_for_project(
        request, org_id, project_id, Permission.VIEW_PROJECT, min_position
    )
    return await fetch_page(
        pool,
        page,
        """
        SELECT * FROM version_view
        WHERE project_id = $1 AND org_id = $2
          AND ($3::text IS NULL OR spec_hash = $3)
        """,
        project_id,
        org_id,
        spec_hash,
        build=version_from_row,
    )


async def _version_row(
    pool: asyncpg.Pool, org_id: uuid.UUID, project_id: uuid.UUID, version_id: uuid.UUID
) -> Any:
    return await fetch_one(
        pool,
        "version",
        "version_not_found",
        "SELECT * FROM version_view WHERE id = $1 AND project_id = $2 AND org_id = $3",
        version_id,
        project_id,
        org_id,
    )


@get(VERSIONS + "/{version_id:uuid}", summary="A version (immutable)")
async def get_version(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    version_id: FromPath[uuid.UUID],
    min_position: MinPosition = None,
) -> Response[VersionView]:
    pool = await _DRAFTS.ready_for_project(
        request, org_id, project_id, Permission.VIEW_PROJECT, min_position
    )
    view = version_from_row(await _version_row(pool, org_id, project_id, version_id))
    return Response(view, headers=etag(view.spec_hash))


@get(
    VERSIONS + "/{version_id:uuid}/spec.kv",
    summary="A version's canonical spec, as KV text",
    media_type=MediaType.TEXT,
)
async def get_version_spec(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    version_id: FromPath[uuid.UUID],
    min_position: MinPosition = None,
) -> Response[bytes]:
    pool = await _DRAFTS.ready_for_project(
        request, org_id, project_id, Permission.VIEW_PROJECT, min_position
    )
    row = await _version_row(pool, org_id, project_id, version_id)
    return Response(
        row["spec"].encode(),
        media_type="text/plain; charset=utf-8",
        headers={
            **etag(row["spec_hash"]),
            "Content-Disposition": f'attachment; filename="{version_id}.spec.kv"',
        },
    )


ROUTES = [list_drafts, get_draft, list_versions, get_version, get_version_spec]
