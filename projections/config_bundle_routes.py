"""Query routes for an environment's config bundles. They read only
``config_bundle_view`` (kept by ``projections/config_bundles.py``), which holds
no secret: an inline secret reference shows its key id only.

Visibility is the environment's (``ViewEnvironment``); a bundle of another
environment, project or organization is 404, like one that does not exist.
``?min_position=N`` waits (bounded) until the projection has applied N.
"""

from __future__ import annotations

import uuid

from litestar import Response, get
from litestar.params import FromPath

from domain.access import Permission
from domain.paging import Page
from projections.config_bundles import NAME, BundleView, bundle_from_row
from projections.routes import PROJECT
from projections.rows import Cursor, Limit, etag, fetch_one, fetch_page, keyset
from projections.scope import AnyRequest, MinPosition, ReadModel

BUNDLES = PROJECT + "/environments/{env_id:uuid}/bundles"
_BUNDLES = ReadModel(NAME, "the config bundles read model")


@get(BUNDLES, summary="Config bundles of an environment (inline secrets by key id only)")
async def list_config_bundles(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    env_id: FromPath[uuid.UUID],
    min_position: MinPosition = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Page[BundleView]:
    page = keyset(limit, cursor)
    pool = await _BUNDLES.ready_for_environment(
        request, org_id, project_id, env_id, Permission.VIEW_ENVIRONMENT, min_position
    )
    return await fetch_page(
        pool,
        page,
        """
        SELECT * FROM config_bundle_view
        WHERE environment_id = $1 AND project_id = $2 AND org_id = $3 AND deleted_at IS NULL
        """,
        env_id,
        project_id,
        org_id,
        build=bundle_from_row,
    )


@get(BUNDLES + "/{bundle_id:uuid}", summary="A config bundle (inline secrets by key id only)")
async def get_config_bundle(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    env_id: FromPath[uuid.UUID],
    bundle_id: FromPath[uuid.UUID],
    min_position: MinPosition = None,
) -> Response[BundleView]:
    pool = await _BUNDLES.ready_for_environment(
        request, org_id, project_id, env_id, Permission.VIEW_ENVIRONMENT, min_position
    )
    row = await fetch_one(
        pool,
        "config bundle",
        "bundle_not_found",
        """
        SELECT * FROM config_bundle_view
        WHERE id = $1 AND environment_id = $2 AND project_id = $3 AND org_id = $4
          AND deleted_at IS NULL
        """,
        bundle_id,
        env_id,
        project_id,
        org_id,
    )
    view = bundle_from_row(row)
    return Response(view, headers=etag(view.revision))


ROUTES = [list_config_bundles, get_config_bundle]
