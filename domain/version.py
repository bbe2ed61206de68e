"""Version: an immutable pipeline spec cut from a valid draft revision.

State machine (stream ``version-<id>``)::

    (none) ──create_version──► created      (nothing ever follows)

Unique per (project, ``spec_hash``), enforced by the event store: the version
id is derived from the pair (``version_id``), so its stream is the same for
every attempt to cut that spec in that project, and the append expects
version 0. Cutting a spec that exists returns the existing version (no
events); of two concurrent cuts one appends and the other, retried by the
write side, finds the version. ``number`` counts versions per draft: the
draft's stream gets ``draft.version_created`` in the same append, so two cuts
from one draft cannot take the same number.

The canonical spec is stored in parts like a draft's input (``PART_CHARS``
characters each), to keep each event far below NATS's message limit.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Final

import msgspec
from msgspec.structs import replace

from domain.codec import CODEC, Event
from domain.draft import Draft, DraftEvent, DraftVersionCreated, require_valid, split_text
from domain.errors import Conflict, InvalidHistory, NotFound
from domain.spec.lower import CompileReport, Lowered

STREAM_TYPE: Final = "version"
_NAMESPACE: Final = uuid.UUID("6f1d2c0e-5b8a-4f5e-9a51-3c1f0e0b7a11")


def version_id(project_id: uuid.UUID, spec_hash: str) -> uuid.UUID:
    """The id of the version of ``spec_hash`` in ``project_id`` (deterministic)."""
    return uuid.uuid5(_NAMESPACE, f"{project_id}/{spec_hash}")


def stream_id(id_: uuid.UUID) -> str:
    return f"{STREAM_TYPE}-{id_}"


class Version(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    org_id: uuid.UUID
    project_id: uuid.UUID
    draft_id: uuid.UUID
    draft_revision: int
    number: int
    target: str
    spec_hash: str
    required_capabilities: tuple[str, ...]
    report: CompileReport
    spec: str
    version: int


class VersionCreated(Event, tag="version.created", frozen=True, kw_only=True):
    version_id: uuid.UUID
    org_id: uuid.UUID
    project_id: uuid.UUID
    draft_id: uuid.UUID
    draft_revision: int
    number: int
    target: str
    spec_hash: str
    required_capabilities: tuple[str, ...] = ()
    report: CompileReport
    spec: str  # the first part of the canonical spec
    parts: int = 1


class VersionSpecPart(Event, tag="version.spec_part", frozen=True, kw_only=True):
    index: int
    text: str


VersionEvent = VersionCreated | VersionSpecPart
EVENTS: Final = (VersionCreated, VersionSpecPart)
CODEC.register(*EVENTS)


class CreateVersion(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``revision``: the draft revision meant (409 if it is no longer the current one)."""

    revision: int | None = None


def evolve(state: Version | None, event: VersionEvent) -> Version:
    if isinstance(event, VersionCreated):
        if state is not None:
            raise InvalidHistory("version created twice", context={"version_id": str(state.id)})
        return Version(
            id=event.version_id,
            org_id=event.org_id,
            project_id=event.project_id,
            draft_id=event.draft_id,
            draft_revision=event.draft_revision,
            number=event.number,
            target=event.target,
            spec_hash=event.spec_hash,
            required_capabilities=event.required_capabilities,
            report=event.report,
            spec=event.spec,
            version=1,
        )
    if state is None:
        raise InvalidHistory(f"{type(event).__name__} before version.created")
    return replace(state, spec=state.spec + event.text, version=state.version + 1)


def fold(events: Iterable[Event]) -> Version | None:
    state: Version | None = None
    for event in events:
        if not isinstance(event, VersionEvent):
            raise InvalidHistory(f"{type(event).__name__} is not a version event")
        state = evolve(state, event)
    return state


def require_version(version: Version | None, project_id: uuid.UUID) -> Version:
    if version is None or version.project_id != project_id:
        raise NotFound("version not found", code="version_not_found")
    return version


def create_version(
    draft: Draft,
    lowered: Lowered,
    existing: Version | None,
    *,
    revision: int | None = None,
) -> tuple[tuple[DraftEvent, ...], tuple[VersionEvent, ...]]:
    """(draft events, version events) cutting the draft's current input.

    ``lowered`` is the draft's current input lowered again by the caller (the
    validation recorded only its hash); ``existing`` is the version stream of
    its spec hash in this project. Existing → no events at all.
    """
    validation = require_valid(draft, revision)
    if lowered.spec_hash != validation.spec_hash:
        # Lowering is deterministic; a different hash means the rules changed
        # since the validation: revalidate rather than cut an unvalidated spec.
        raise Conflict(
            "the draft's validation is out of date; save it again to revalidate",
            code="draft_validation_stale",
            context={"draft_id": str(draft.id)},
        )
    if existing is not None:
        return (), ()
    id_ = version_id(draft.project_id, lowered.spec_hash)
    number = draft.versions + 1
    parts = split_text(lowered.spec.decode())
    created = VersionCreated(
        version_id=id_,
        org_id=draft.org_id,
        project_id=draft.project_id,
        draft_id=draft.id,
        draft_revision=draft.revision,
        number=number,
        target=lowered.plan.pipeline.target,
        spec_hash=lowered.spec_hash,
        required_capabilities=lowered.required_capabilities,
        report=lowered.report,
        spec=parts[0],
        parts=len(parts),
    )
    rest = tuple(VersionSpecPart(index=i, text=t) for i, t in enumerate(parts[1:], 1))
    marker = DraftVersionCreated(
        version_id=id_, number=number, revision=draft.revision, spec_hash=lowered.spec_hash
    )
    return (marker,), (created, *rest)
