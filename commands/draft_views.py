"""Representations the draft and version write routes answer with.

The same shapes, field for field, as the query routes' (projections/drafts.py
builds those from read tables), so a client sees one shape whatever answered.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

import msgspec

from domain.draft import Draft
from domain.spec.diagnostics import Diagnostic
from domain.spec.lower import CompileReport
from domain.version import Version


class Links(msgspec.Struct, frozen=True, kw_only=True):
    self: str


class ValidationView(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    revision: int
    diagnostics: list[Diagnostic]
    spec_hash: str | None
    required_capabilities: list[str]


class DraftDetailView(msgspec.Struct, frozen=True, kw_only=True):
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
    report: CompileReport
    created_at: datetime
    updated_at: datetime
    links: Links


class PreviewView(msgspec.Struct, frozen=True, kw_only=True):
    """What saving this input would validate to; ``spec_kv`` is the canonical spec."""

    status: Literal["valid", "invalid"]
    diagnostics: list[Diagnostic]
    spec_hash: str | None
    spec_kv: str | None
    required_capabilities: list[str]
    report: CompileReport | None


def project_path(org_id: uuid.UUID, project_id: uuid.UUID) -> str:
    return f"/api/v1/orgs/{org_id}/projects/{project_id}"


def draft_view(draft: Draft, created_at: datetime, updated_at: datetime) -> DraftDetailView:
    v = draft.validation
    kv = draft.input_kind == "spec_kv"
    return DraftDetailView(
        id=draft.id,
        org_id=draft.org_id,
        project_id=draft.project_id,
        name=draft.name,
        target=draft.target,
        input_kind=draft.input_kind,
        revision=draft.revision,
        validation=ValidationView(
            status=v.status,
            revision=v.revision,
            diagnostics=list(v.diagnostics),
            spec_hash=v.spec_hash,
            required_capabilities=list(v.required_capabilities),
        ),
        versions=draft.versions,
        created_at=created_at,
        updated_at=updated_at,
        links=Links(self=f"{project_path(draft.org_id, draft.project_id)}/drafts/{draft.id}"),
        spec_kv=draft.input if kv else None,
        plan=None if kv else msgspec.Raw(draft.input.encode()),
    )


def version_view(version: Version, created_at: datetime, updated_at: datetime) -> VersionView:
    return VersionView(
        id=version.id,
        org_id=version.org_id,
        project_id=version.project_id,
        draft_id=version.draft_id,
        draft_revision=version.draft_revision,
        number=version.number,
        target=version.target,
        spec_hash=version.spec_hash,
        required_capabilities=list(version.required_capabilities),
        report=version.report,
        created_at=created_at,
        updated_at=updated_at,
        links=Links(
            self=f"{project_path(version.org_id, version.project_id)}/versions/{version.id}"
        ),
    )
