"""Draft: a project's pipeline plan being edited, and what its validation found.

State machine (stream ``draft-<id>``)::

    (none) ──create──► active(revision 1, validation pending)
                         │
                         ├─update (name/target/input) ──► active(revision + 1)
                         │      input or target changed → validation pending
                         │      for the new revision, and a spec_ingest job
                         │      (only the name changed → validation kept)
                         ├─record_validation(r) ──► active (valid | invalid for r)
                         │      r is not the revision of the current input,
                         │      or r already recorded → () (late or duplicate job)
                         ├─record_version ──► active (versions + 1)
                         └─delete ──► deleted (terminal: NotFound afterwards)

``revision`` counts saved revisions (create is 1) and is the draft's ETag;
it is not the stream version, so a validation recorded by the worker never
makes an editor's ``If-Match`` stale. ``input_revision`` is the revision whose
input (and target) the current validation must be about.

The input is stored as given, raw KV text or a plan's JSON, because a draft may
be work in progress that does not parse yet; only the limits of a spec
(``spec_too_large``, ``spec_too_many_keys``) are checked when it is saved.
Every event's payload stays far below NATS's default 1 MB message limit (the
relay publishes each event): an input is split into parts of ``PART_CHARS``
characters (at most 6 bytes each once JSON-escaped), the first in the saving
event, the others in ``draft.input_part`` events of the same append.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Annotated, Any, Final, Literal, assert_never

import msgspec
from msgspec.structs import replace

from domain.codec import CODEC, Event
from domain.errors import Conflict, FieldError, InvalidHistory, InvalidInput, NotFound
from domain.organization import Name
from domain.spec import kv
from domain.spec.diagnostics import Diagnostic, SpecError, SpecInvalid
from domain.spec.lower import Lowered, compile_kv, compile_plan_json, decode_plan
from domain.spec.plan import TARGETS
from domain.spec.structure import entries_from_plan

STREAM_TYPE: Final = "draft"
PART_CHARS: Final = 65_536
SPEC_INGEST: Final = "spec_ingest"

InputKind = Literal["spec_kv", "plan"]
Target = Literal["SingleRing", "LaneGraph"]
ValidationStatus = Literal["pending", "valid", "invalid"]
Status = Literal["active", "deleted"]


def stream_id(draft_id: uuid.UUID) -> str:
    return f"{STREAM_TYPE}-{draft_id}"


def split_text(text: str) -> tuple[str, ...]:
    """``text`` in parts of at most ``PART_CHARS`` characters (one part if shorter)."""
    if len(text) <= PART_CHARS:
        return (text,)
    return tuple(text[i : i + PART_CHARS] for i in range(0, len(text), PART_CHARS))


# --- state -----------------------------------------------------------------------


class Validation(msgspec.Struct, frozen=True, kw_only=True):
    status: ValidationStatus
    revision: int  # the draft revision whose input this is about
    diagnostics: tuple[Diagnostic, ...] = ()
    spec_hash: str | None = None
    required_capabilities: tuple[str, ...] = ()


class Draft(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    org_id: uuid.UUID
    project_id: uuid.UUID
    name: str
    target: str
    input_kind: InputKind
    input: str
    revision: int
    input_revision: int
    validation: Validation
    versions: int  # versions numbered from this draft so far
    status: Status
    version: int  # stream version


# --- events ----------------------------------------------------------------------


class DraftCreated(Event, tag="draft.created", frozen=True, kw_only=True):
    draft_id: uuid.UUID
    org_id: uuid.UUID
    project_id: uuid.UUID
    name: str
    target: str
    input_kind: InputKind
    input: str  # the first part
    parts: int = 1
    job_id: uuid.UUID | None = None  # its spec_ingest job


class DraftUpdated(Event, tag="draft.updated", frozen=True, kw_only=True):
    """A new revision; ``None`` fields stay as they were (input: all or nothing)."""

    revision: int
    name: str | None = None
    target: str | None = None
    input_kind: InputKind | None = None
    input: str | None = None  # the first part
    parts: int = 1
    job_id: uuid.UUID | None = None


class DraftInputPart(Event, tag="draft.input_part", frozen=True, kw_only=True):
    revision: int
    index: int
    text: str


class DraftValidated(Event, tag="draft.validated", frozen=True, kw_only=True):
    revision: int
    status: Literal["valid", "invalid"]
    diagnostics: tuple[Diagnostic, ...] = ()
    spec_hash: str | None = None
    required_capabilities: tuple[str, ...] = ()
    job_id: uuid.UUID | None = None


class DraftVersionCreated(Event, tag="draft.version_created", frozen=True, kw_only=True):
    version_id: uuid.UUID
    number: int
    revision: int
    spec_hash: str


class DraftDeleted(Event, tag="draft.deleted", frozen=True, kw_only=True):
    pass


DraftEvent = (
    DraftCreated
    | DraftUpdated
    | DraftInputPart
    | DraftValidated
    | DraftVersionCreated
    | DraftDeleted
)
EVENTS: Final = (
    DraftCreated,
    DraftUpdated,
    DraftInputPart,
    DraftValidated,
    DraftVersionCreated,
    DraftDeleted,
)
CODEC.register(*EVENTS)


# --- commands (wire) ---------------------------------------------------------------


class CreateDraft(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Exactly one of ``spec_kv`` (raw KV text) and ``plan`` (the JSON plan)."""

    name: Name
    target: Annotated[Target, msgspec.Meta(description="execution target")]
    plan: dict[str, Any] | None = None
    spec_kv: str | None = None

    def __post_init__(self) -> None:
        if (self.plan is None) == (self.spec_kv is None):
            raise ValueError("exactly one of `plan`, `spec_kv` is required")


class UpdateDraft(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A partial update: absent fields stay; a new input replaces the old one whole."""

    name: Name | None = None
    target: Target | None = None
    plan: dict[str, Any] | None = None
    spec_kv: str | None = None

    def __post_init__(self) -> None:
        if self.plan is not None and self.spec_kv is not None:
            raise ValueError("at most one of `plan`, `spec_kv`")
        if self.name is None and self.target is None and self.plan is None and self.spec_kv is None:
            raise ValueError("at least one of `name`, `target`, `plan`, `spec_kv` is required")


class PreviewDraft(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An unsaved input to preview instead of the saved one (an empty body: the saved one)."""

    target: Target | None = None
    plan: dict[str, Any] | None = None
    spec_kv: str | None = None

    def __post_init__(self) -> None:
        if (self.plan is None) == (self.spec_kv is None):
            raise ValueError("exactly one of `plan`, `spec_kv` is required")


class DraftInput(msgspec.Struct, frozen=True, kw_only=True):
    kind: InputKind
    text: str


def input_of(plan: dict[str, Any] | None, spec_kv: str | None) -> DraftInput | None:
    """The input a command carries, checked against the limits of a spec."""
    if spec_kv is not None:
        found = DraftInput(kind="spec_kv", text=spec_kv)
    elif plan is not None:
        found = DraftInput(kind="plan", text=msgspec.json.encode(plan).decode())
    else:
        return None
    check_limits(found)
    return found


def check_limits(draft_input: DraftInput) -> None:
    """``spec_too_large`` / ``spec_too_many_keys`` (422, path ``/spec_kv`` or ``/plan``)."""
    path = "/" + draft_input.kind
    try:
        if draft_input.kind == "spec_kv":
            kv.check_limits(draft_input.text)
            return
        text = draft_input.text.encode()
        if len(text) > kv.MAX_BYTES:
            raise _limit(
                "spec_too_large", path, f"the plan is {len(text)} bytes, over 1 MiB of JSON"
            )
        try:
            keys = len(entries_from_plan(decode_plan(text)))
        except SpecError:
            return  # it does not decode: the validation will say why
        if keys > kv.MAX_KEYS:
            raise _limit(
                "spec_too_many_keys", path, f"the plan lowers to {keys} keys, over {kv.MAX_KEYS}"
            )
    except SpecError as exc:
        first = exc.diagnostics[0]
        raise _limit(first.code, path, first.message) from None


def _limit(code: str, path: str, message: str) -> InvalidInput:
    return InvalidInput(
        f"the spec is over a limit: {message}", code=code, errors=(FieldError(path, message),)
    )


# --- evolve ----------------------------------------------------------------------


def evolve(state: Draft | None, event: DraftEvent) -> Draft:
    if isinstance(event, DraftCreated):
        if state is not None:
            raise InvalidHistory("draft created twice", context={"draft_id": str(state.id)})
        return Draft(
            id=event.draft_id,
            org_id=event.org_id,
            project_id=event.project_id,
            name=event.name,
            target=event.target,
            input_kind=event.input_kind,
            input=event.input,
            revision=1,
            input_revision=1,
            validation=Validation(status="pending", revision=1),
            versions=0,
            status="active",
            version=1,
        )
    if state is None:
        raise InvalidHistory(f"{type(event).__name__} before draft.created")
    version = state.version + 1
    match event:
        case DraftUpdated():
            changed = event.input is not None or (
                event.target is not None and event.target != state.target
            )
            return replace(
                state,
                revision=event.revision,
                name=state.name if event.name is None else event.name,
                target=state.target if event.target is None else event.target,
                input_kind=state.input_kind if event.input_kind is None else event.input_kind,
                input=state.input if event.input is None else event.input,
                input_revision=event.revision if changed else state.input_revision,
                validation=(
                    Validation(status="pending", revision=event.revision)
                    if changed
                    else state.validation
                ),
                version=version,
            )
        case DraftInputPart(text=text):
            return replace(state, input=state.input + text, version=version)
        case DraftValidated():
            return replace(
                state,
                validation=Validation(
                    status=event.status,
                    revision=event.revision,
                    diagnostics=event.diagnostics,
                    spec_hash=event.spec_hash,
                    required_capabilities=event.required_capabilities,
                ),
                version=version,
            )
        case DraftVersionCreated(number=number):
            return replace(state, versions=max(state.versions, number), version=version)
        case DraftDeleted():
            return replace(state, status="deleted", version=version)
        case _:
            assert_never(event)


def fold(events: Iterable[Event]) -> Draft | None:
    state: Draft | None = None
    for event in events:
        if not isinstance(event, DraftEvent):
            raise InvalidHistory(f"{type(event).__name__} is not a draft event")
        state = evolve(state, event)
    return state


# --- errors ----------------------------------------------------------------------


class DraftNotValid(Conflict):
    """A version needs a ``valid`` validation of the draft's current input."""

    code = "draft_not_valid"

    def __init__(self, draft: Draft) -> None:
        validation = draft.validation
        pending = validation.status == "pending"
        super().__init__(
            "the draft's validation is still pending; retry once spec_ingest has run"
            if pending
            else "the draft is not valid; no version can be created from it",
            code="draft_validation_pending" if pending else "draft_not_valid",
            errors=tuple(
                FieldError(d.path, f"{d.code}: {d.message}")
                for d in validation.diagnostics
                if d.severity == "error"
            ),
            context={"draft_id": str(draft.id), "status": validation.status},
        )
        self.diagnostics = validation.diagnostics


# --- decisions -------------------------------------------------------------------


def require_draft(draft: Draft | None, project_id: uuid.UUID) -> Draft:
    """The draft if it exists, is active and belongs to the project."""
    if draft is None or draft.status != "active" or draft.project_id != project_id:
        raise NotFound("draft not found", code="draft_not_found")
    return draft


def _saved(
    first: DraftCreated | DraftUpdated, revision: int, parts: tuple[str, ...]
) -> tuple[DraftEvent, ...]:
    rest = tuple(
        DraftInputPart(revision=revision, index=i, text=text) for i, text in enumerate(parts[1:], 1)
    )
    return (first, *rest)


def create_draft(
    cmd: CreateDraft,
    *,
    draft_id: uuid.UUID,
    org_id: uuid.UUID,
    project_id: uuid.UUID,
    job_id: uuid.UUID,
) -> tuple[DraftEvent, ...]:
    """The caller has checked that the project exists and is active."""
    draft_input = input_of(cmd.plan, cmd.spec_kv)
    assert draft_input is not None  # CreateDraft requires one
    parts = split_text(draft_input.text)
    created = DraftCreated(
        draft_id=draft_id,
        org_id=org_id,
        project_id=project_id,
        name=cmd.name,
        target=cmd.target,
        input_kind=draft_input.kind,
        input=parts[0],
        parts=len(parts),
        job_id=job_id,
    )
    return _saved(created, 1, parts)


def update_draft(
    draft: Draft | None, project_id: uuid.UUID, cmd: UpdateDraft, *, job_id: uuid.UUID
) -> tuple[DraftEvent, ...]:
    """A new revision if anything changes; it needs ``spec_ingest`` when ``job_id`` is
    used (``needs_ingest``): the input or the target changed."""
    current = require_draft(draft, project_id)
    draft_input = input_of(cmd.plan, cmd.spec_kv)
    if draft_input is not None and (
        draft_input.kind == current.input_kind and draft_input.text == current.input
    ):
        draft_input = None
    name = cmd.name if cmd.name is not None and cmd.name != current.name else None
    target = cmd.target if cmd.target is not None and cmd.target != current.target else None
    if name is None and target is None and draft_input is None:
        return ()
    revision = current.revision + 1
    ingest = draft_input is not None or target is not None
    parts = split_text(draft_input.text) if draft_input is not None else ("",)
    updated = DraftUpdated(
        revision=revision,
        name=name,
        target=target,
        input_kind=draft_input.kind if draft_input is not None else None,
        input=parts[0] if draft_input is not None else None,
        parts=len(parts),
        job_id=job_id if ingest else None,
    )
    return _saved(updated, revision, parts)


def needs_ingest(events: Iterable[DraftEvent]) -> uuid.UUID | None:
    """The spec_ingest job id a save asks for, if any."""
    for event in events:
        if isinstance(event, DraftCreated | DraftUpdated) and event.job_id is not None:
            return event.job_id
    return None


def delete_draft(draft: Draft | None, project_id: uuid.UUID) -> tuple[DraftEvent, ...]:
    require_draft(draft, project_id)
    return (DraftDeleted(),)


def compile_input(kind: InputKind, text: str, target: str) -> Lowered:
    """Parse, validate and lower a draft input (``SpecError`` with every finding).

    A plan whose ``pipeline.target`` is not the draft's target is invalid
    (``draft_target_mismatch``): the draft's target is what its versions claim.
    """
    data = text.encode()
    lowered = compile_kv(data) if kind == "spec_kv" else compile_plan_json(data)
    if lowered.plan.pipeline.target != target:
        found = Diagnostic(
            code="draft_target_mismatch",
            path="pipeline.target",
            message=f"the draft's target is {target}, the spec's is {lowered.plan.pipeline.target}",
        )
        raise SpecInvalid("the spec's target is not the draft's", (found,))
    return lowered


def validation_of(draft: Draft) -> tuple[Validation, Lowered | None]:
    """What the draft's current input validates to (pure; the spec_ingest job records it)."""
    try:
        lowered = compile_input(draft.input_kind, draft.input, draft.target)
    except SpecError as exc:
        return (
            Validation(
                status="invalid", revision=draft.input_revision, diagnostics=exc.diagnostics
            ),
            None,
        )
    return (
        Validation(
            status="valid",
            revision=draft.input_revision,
            diagnostics=lowered.report.warnings,
            spec_hash=lowered.spec_hash,
            required_capabilities=lowered.required_capabilities,
        ),
        lowered,
    )


def record_validation(
    draft: Draft | None, revision: int, result: Validation, *, job_id: uuid.UUID | None = None
) -> tuple[DraftEvent, ...]:
    """``draft.validated`` for ``revision``, unless that is no longer the current input's
    revision, the draft is gone, or it was recorded already (duplicate deliveries)."""
    if draft is None or draft.status != "active":
        return ()
    if revision != draft.input_revision or result.revision != revision:
        return ()
    if draft.validation.status != "pending" and draft.validation.revision == revision:
        return ()
    if result.status == "pending":
        return ()
    return (
        DraftValidated(
            revision=revision,
            status=result.status,
            diagnostics=result.diagnostics,
            spec_hash=result.spec_hash,
            required_capabilities=result.required_capabilities,
            job_id=job_id,
        ),
    )


def require_valid(draft: Draft, revision: int | None = None) -> Validation:
    """The draft's validation if it is ``valid`` for the current input (409 otherwise)."""
    if revision is not None and revision != draft.revision:
        raise Conflict(
            f"revision {revision} is not the draft's current revision {draft.revision}",
            code="draft_revision_not_current",
            errors=(FieldError("/revision", f"the current revision is {draft.revision}"),),
            context={"draft_id": str(draft.id), "current": draft.revision},
        )
    validation = draft.validation
    if validation.status != "valid" or validation.revision != draft.input_revision:
        raise DraftNotValid(draft)
    return validation


__all__ = [
    "EVENTS",
    "PART_CHARS",
    "SPEC_INGEST",
    "STREAM_TYPE",
    "TARGETS",
    "CreateDraft",
    "Draft",
    "DraftCreated",
    "DraftDeleted",
    "DraftEvent",
    "DraftInput",
    "DraftInputPart",
    "DraftNotValid",
    "DraftUpdated",
    "DraftValidated",
    "DraftVersionCreated",
    "PreviewDraft",
    "UpdateDraft",
    "Validation",
    "compile_input",
    "create_draft",
    "delete_draft",
    "evolve",
    "fold",
    "input_of",
    "needs_ingest",
    "record_validation",
    "require_draft",
    "require_valid",
    "split_text",
    "stream_id",
    "update_draft",
    "validation_of",
]
