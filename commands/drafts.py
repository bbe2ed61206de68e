"""Write routes for a project's pipeline drafts and versions (OperateProject).

Saving a revision (create, or an update that changes the input or target)
appends the draft's events and ``job.queued`` for ``spec_ingest`` in one
append, so a revision never exists without the job that validates it (the
relay publishes the job; workers/spec_ingest.py records ``draft.validated``).

``POST …/drafts/{id}/preview`` runs the same validation and lowering in the
request and saves nothing. ``POST …/drafts/{id}/versions`` cuts a version
from the current revision when its validation is ``valid`` (409 with the
diagnostics otherwise); the same spec again answers the existing version with
200 (domain/version.py: the version stream's id is derived from the project
and the spec hash, so the store's expected-version check keeps it unique).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec
from litestar import Request, Response, delete, post, put
from litestar.datastructures import State
from litestar.params import FromPath

from commands.draft_views import PreviewView, draft_view, version_view
from commands.execution import (
    CommandDeps,
    Loaded,
    Outcome,
    body_command,
    check_if_match,
    deps_of,
    etag_of,
    execute,
    load,
    stream_append,
)
from commands.request_schemas import json_body
from commands.tenancy import PROJECT, authorize, load_org
from domain import draft as draft_mod
from domain import job as job_mod
from domain import project as project_mod
from domain import version as version_mod
from domain.access import Permission
from domain.codec import decode_command
from domain.errors import Conflict
from domain.organization import Name
from domain.principal import Principal
from domain.spec.diagnostics import SpecError
from domain.spec.plan import Plan
from domain.version import CreateVersion

AnyRequest = Request[Principal, Any, State]
DRAFTS = PROJECT + "/drafts"
DRAFT = DRAFTS + "/{draft_id:uuid}"

# The attempt budget recorded on each spec_ingest job; it matches the consumer's
# max_deliver (workers/streams.py DEFAULT_JOB_TYPES), which this layer may not import.
INGEST_MAX_ATTEMPTS = 5


# --- request bodies as documented (the routes decode the domain's wire structs) ----


class _CreateDraftBody(msgspec.Struct, kw_only=True):
    """Exactly one of ``spec_kv`` (raw KV text) and ``plan`` (the planning model)."""

    name: Name
    target: draft_mod.Target
    plan: Plan | None = None
    spec_kv: str | None = None


class _UpdateDraftBody(msgspec.Struct, kw_only=True):
    """At least one field; a new ``plan`` or ``spec_kv`` replaces the input whole."""

    name: Name | None = None
    target: draft_mod.Target | None = None
    plan: Plan | None = None
    spec_kv: str | None = None


class _PreviewBody(msgspec.Struct, kw_only=True):
    """An unsaved input to preview; no body previews the saved input."""

    target: draft_mod.Target | None = None
    plan: Plan | None = None
    spec_kv: str | None = None


# --- loading -----------------------------------------------------------------------


async def _load_draft(
    deps: CommandDeps,
    request: AnyRequest,
    org_id: uuid.UUID,
    project_id: uuid.UUID,
    draft_id: uuid.UUID | None,
) -> Loaded[draft_mod.Draft] | None:
    """Authorize (OperateProject), check the project, then load the draft (if named)."""
    org = await load_org(deps, org_id)
    authorize(request.user, org.state, Permission.OPERATE_PROJECT)
    project = await load(deps, project_mod.stream_id(project_id), project_mod.fold)
    project_mod.require_project(org.state, project.state)
    if draft_id is None:
        return None
    loaded = await load(deps, draft_mod.stream_id(draft_id), draft_mod.fold)
    draft_mod.require_draft(loaded.state, project_id)
    return loaded


def _ingest_append(
    deps: CommandDeps, events: tuple[draft_mod.DraftEvent, ...], draft_id: uuid.UUID
) -> list[Any]:
    job_id = draft_mod.needs_ingest(events)
    if job_id is None:
        return []
    revision = max((e.revision for e in events if isinstance(e, draft_mod.DraftUpdated)), default=1)
    return [
        job_mod.queued_append(
            job_id=job_id,
            job_type=draft_mod.SPEC_INGEST,
            payload={"draft_id": str(draft_id), "revision": revision},
            max_attempts=INGEST_MAX_ATTEMPTS,
        )
    ]


# --- drafts ------------------------------------------------------------------------


@post(
    DRAFTS,
    status_code=201,
    summary="Create a draft from raw KV text (spec_kv) or a plan; queues spec_ingest",
    operation_class=json_body(_CreateDraftBody),
)
async def create_draft(
    request: AnyRequest, org_id: FromPath[uuid.UUID], project_id: FromPath[uuid.UUID]
) -> Response[bytes]:
    deps = deps_of(request)
    cmd = decode_command(draft_mod.CreateDraft, await request.body())
    draft_id = deps.new_id()
    job_id = deps.new_id()

    async def decide(now: datetime) -> Outcome:
        await _load_draft(deps, request, org_id, project_id, None)
        events = draft_mod.create_draft(
            cmd, draft_id=draft_id, org_id=org_id, project_id=project_id, job_id=job_id
        )
        state = draft_mod.fold(events)
        assert state is not None
        appends = stream_append(
            deps, draft_mod.stream_id(draft_id), draft_mod.STREAM_TYPE, 0, events
        )
        return Outcome(
            appends=[*appends, *_ingest_append(deps, events, draft_id)],
            tenant_id=org_id,
            status_code=201,
            body=draft_view(state, now, now),
            etag=etag_of(state.revision),
        )

    return await execute(request, deps, decide)


@put(
    DRAFT,
    summary="Save a new revision of a draft (If-Match: revision); queues spec_ingest",
    operation_class=json_body(_UpdateDraftBody),
)
async def update_draft(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    draft_id: FromPath[uuid.UUID],
) -> Response[bytes]:
    deps = deps_of(request)
    cmd = decode_command(draft_mod.UpdateDraft, await request.body())
    job_id = deps.new_id()

    async def decide(now: datetime) -> Outcome:
        loaded = await _load_draft(deps, request, org_id, project_id, draft_id)
        assert loaded is not None and loaded.state is not None
        check_if_match(request, loaded.state.revision)
        events = draft_mod.update_draft(loaded.state, project_id, cmd, job_id=job_id)
        state = loaded.state
        for event in events:
            state = draft_mod.evolve(state, event)
        appends = stream_append(
            deps, loaded.stream_id, draft_mod.STREAM_TYPE, loaded.version, events
        )
        return Outcome(
            appends=[*appends, *_ingest_append(deps, events, draft_id)],
            tenant_id=org_id,
            status_code=200,
            body=draft_view(
                state, loaded.created_at or now, now if events else (loaded.updated_at or now)
            ),
            etag=etag_of(state.revision),
            position=loaded.last_position,
        )

    return await execute(request, deps, decide)


@delete(DRAFT, status_code=204, summary="Delete a draft (its versions stay)")
async def delete_draft(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    draft_id: FromPath[uuid.UUID],
) -> Response[None]:
    deps = deps_of(request)

    async def decide(now: datetime) -> Outcome:
        loaded = await _load_draft(deps, request, org_id, project_id, draft_id)
        assert loaded is not None
        assert loaded.state is not None
        check_if_match(request, loaded.state.revision)
        events = draft_mod.delete_draft(loaded.state, project_id)
        return Outcome(
            appends=stream_append(
                deps, loaded.stream_id, draft_mod.STREAM_TYPE, loaded.version, events
            ),
            tenant_id=org_id,
            status_code=204,
            body=None,
        )

    return await execute(request, deps, decide)


@post(
    DRAFT + "/preview",
    status_code=200,
    summary="Validate and lower a draft's input (or the body's unsaved one); saves nothing",
    operation_class=json_body(_PreviewBody, required=False),
)
async def preview_draft(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    draft_id: FromPath[uuid.UUID],
) -> Response[PreviewView]:
    deps = deps_of(request)
    cmd = await body_command(request, draft_mod.PreviewDraft)
    loaded = await _load_draft(deps, request, org_id, project_id, draft_id)
    assert loaded is not None and loaded.state is not None
    draft = loaded.state
    kind, text, target = draft.input_kind, draft.input, draft.target
    if cmd is not None:
        given = draft_mod.input_of(cmd.plan, cmd.spec_kv)
        assert given is not None
        kind, text, target = given.kind, given.text, cmd.target or target
    try:
        lowered = draft_mod.compile_input(kind, text, target)
    except SpecError as exc:
        return Response(
            PreviewView(
                status="invalid",
                diagnostics=list(exc.diagnostics),
                spec_hash=None,
                spec_kv=None,
                required_capabilities=[],
                report=None,
            )
        )
    return Response(
        PreviewView(
            status="valid",
            diagnostics=list(lowered.report.warnings),
            spec_hash=lowered.spec_hash,
            spec_kv=lowered.spec.decode(),
            required_capabilities=list(lowered.required_capabilities),
            report=lowered.report,
        )
    )


# --- versions ------------------------------------------------------------------------


@post(
    DRAFT + "/versions",
    status_code=201,
    summary="Cut an immutable version from the draft's valid revision (200: it exists)",
    operation_class=json_body(CreateVersion, required=False),
)
async def create_version(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    draft_id: FromPath[uuid.UUID],
) -> Response[bytes]:
    deps = deps_of(request)
    cmd = await body_command(request, CreateVersion)
    cmd = cmd if cmd is not None else CreateVersion()

    async def decide(now: datetime) -> Outcome:
        loaded = await _load_draft(deps, request, org_id, project_id, draft_id)
        assert loaded is not None and loaded.state is not None
        draft = loaded.state
        draft_mod.require_valid(draft, cmd.revision)  # 409 before any work
        try:
            lowered = draft_mod.compile_input(draft.input_kind, draft.input, draft.target)
        except SpecError:
            raise Conflict(
                "the draft's validation is out of date; save it again to revalidate",
                code="draft_validation_stale",
                context={"draft_id": str(draft.id)},
            ) from None
        vid = version_mod.version_id(project_id, lowered.spec_hash)
        existing = await load(deps, version_mod.stream_id(vid), version_mod.fold)
        draft_events, version_events = version_mod.create_version(
            draft, lowered, existing.state, revision=cmd.revision
        )
        if existing.state is not None:
            return Outcome(
                appends=[],
                tenant_id=org_id,
                status_code=200,
                body=version_view(
                    existing.state, existing.created_at or now, existing.created_at or now
                ),
                etag=f'"{existing.state.spec_hash}"',
                position=existing.last_position,
            )
        created = version_mod.fold(version_events)
        assert created is not None
        return Outcome(
            appends=[
                *stream_append(
                    deps, loaded.stream_id, draft_mod.STREAM_TYPE, loaded.version, draft_events
                ),
                *stream_append(
                    deps, version_mod.stream_id(vid), version_mod.STREAM_TYPE, 0, version_events
                ),
            ],
            tenant_id=org_id,
            status_code=201,
            body=version_view(created, now, now),
            etag=f'"{created.spec_hash}"',
        )

    return await execute(request, deps, decide)


ROUTES = [create_draft, update_draft, delete_draft, preview_draft, create_version]
