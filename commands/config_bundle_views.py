"""The representation the config bundle write routes answer with.

The same shape, field for field, as the query routes' (projections/config_bundles.py
builds it from the read table). Inline secret references show only
``{"kind": "inline", "key_id": …}``: neither the value nor its ciphertext is
ever part of a response.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec

from domain.adapters import public_view
from domain.config_bundle import ConfigBundle


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
    tuning: Any
    adapters: list[dict[str, Any]]
    parameters: dict[str, Any]
    content_hash: str
    locked: bool
    used_by: list[uuid.UUID]
    revision: int
    created_at: datetime
    updated_at: datetime
    links: Links


def bundle_view(bundle: ConfigBundle, created_at: datetime, updated_at: datetime) -> BundleView:
    return BundleView(
        id=bundle.id,
        org_id=bundle.org_id,
        project_id=bundle.project_id,
        environment_id=bundle.environment_id,
        version_id=bundle.version_id,
        spec_hash=bundle.spec_hash,
        required_capabilities=list(bundle.required_capabilities),
        tuning=bundle.content.tuning,
        adapters=[public_view(a) for a in bundle.content.adapters],
        parameters=dict(bundle.content.parameters),
        content_hash=bundle.content_hash,
        locked=bundle.locked,
        used_by=list(bundle.used_by),
        revision=bundle.version,
        created_at=created_at,
        updated_at=updated_at,
        links=Links(
            self=f"/api/v1/orgs/{bundle.org_id}/projects/{bundle.project_id}"
            f"/environments/{bundle.environment_id}/bundles/{bundle.id}"
        ),
    )
