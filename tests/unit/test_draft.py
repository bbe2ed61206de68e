"""The draft and version aggregates (domain/draft.py, domain/version.py): pure, no I/O."""

from __future__ import annotations

import uuid

import msgspec
import pytest

from domain import draft as draft_mod
from domain import version as version_mod
from domain.codec import convert_command, default_codec
from domain.errors import Conflict, InvalidInput, NotFound
from domain.spec import compile_kv, kv

CODEC = default_codec()
ORG = uuid.UUID(int=1)
PROJECT = uuid.UUID(int=2)
DRAFT = uuid.UUID(int=3)
VALID = compile_kv(
    b"pipeline.name=p\npipeline.target=SingleRing\nsingle_ring.ordering=strict\n"
    b"single_ring.shards=1\nsingle_ring.stages.0.key=exec:/bin/true\n"
).spec.decode()
INVALID = VALID.replace("single_ring.shards=1", "single_ring.shards=2")


def created(text: str = VALID, **kw: object) -> tuple[draft_mod.DraftEvent, ...]:
    cmd = convert_command(
        draft_mod.CreateDraft, {"name": "d", "target": "SingleRing", "spec_kv": text, **kw}
    )
    return draft_mod.create_draft(
        cmd, draft_id=DRAFT, org_id=ORG, project_id=PROJECT, job_id=uuid.UUID(int=9)
    )


def roundtrip(events: tuple[draft_mod.DraftEvent, ...]) -> draft_mod.Draft:
    """Fold the events as read back from the store (encoded and decoded)."""
    decoded = [
        CODEC.decode(e.event_type, e.schema_version, e.payload) for e in map(CODEC.encode, events)
    ]
    state = draft_mod.fold(decoded)
    assert state is not None
    return state


def update(state: draft_mod.Draft, **fields: object) -> draft_mod.Draft:
    cmd = convert_command(draft_mod.UpdateDraft, fields)
    for event in draft_mod.update_draft(state, PROJECT, cmd, job_id=uuid.uuid4()):
        state = draft_mod.evolve(state, event)
    return state


def validated(state: draft_mod.Draft) -> draft_mod.Draft:
    result, _ = draft_mod.validation_of(state)
    for event in draft_mod.record_validation(state, state.input_revision, result):
        state = draft_mod.evolve(state, event)
    return state


def test_a_new_draft_is_revision_1_pending_and_asks_for_spec_ingest() -> None:
    events = created()
    state = roundtrip(events)
    assert (state.revision, state.input, state.input_kind) == (1, VALID, "spec_kv")
    assert state.validation == draft_mod.Validation(status="pending", revision=1)
    assert draft_mod.needs_ingest(events) == uuid.UUID(int=9)


def test_a_rename_keeps_the_validation_and_a_new_input_resets_it() -> None:
    state = validated(roundtrip(created()))
    assert state.validation.status == "valid"
    renamed = update(state, name="other")
    assert (renamed.revision, renamed.input_revision) == (2, 1)
    assert renamed.validation == state.validation
    changed = update(renamed, spec_kv=INVALID)
    assert (changed.revision, changed.input_revision) == (3, 3)
    assert changed.validation == draft_mod.Validation(status="pending", revision=3)
    retargeted = update(validated(changed), target="LaneGraph")
    assert retargeted.validation.status == "pending"


def test_an_update_that_changes_nothing_appends_nothing() -> None:
    state = roundtrip(created())
    cmd = draft_mod.UpdateDraft(name="d", spec_kv=VALID, target="SingleRing")
    assert draft_mod.update_draft(state, PROJECT, cmd, job_id=uuid.uuid4()) == ()


def test_a_rename_does_not_queue_spec_ingest() -> None:
    state = roundtrip(created())
    events = draft_mod.update_draft(
        state, PROJECT, draft_mod.UpdateDraft(name="x"), job_id=uuid.uuid4()
    )
    assert draft_mod.needs_ingest(events) is None


def test_a_deleted_or_foreign_draft_is_not_found() -> None:
    state = roundtrip(created())
    with pytest.raises(NotFound):
        draft_mod.update_draft(state, uuid.uuid4(), draft_mod.UpdateDraft(name="x"), job_id=DRAFT)
    (deleted,) = draft_mod.delete_draft(state, PROJECT)
    gone = draft_mod.evolve(state, deleted)
    with pytest.raises(NotFound) as caught:
        draft_mod.delete_draft(gone, PROJECT)
    assert caught.value.code == "draft_not_found"
    assert draft_mod.record_validation(gone, 1, draft_mod.validation_of(state)[0]) == ()


def test_validation_is_recorded_once_and_only_for_the_current_input() -> None:
    state = roundtrip(created(INVALID))
    result, lowered = draft_mod.validation_of(state)
    assert lowered is None and result.status == "invalid"
    assert [d.code for d in result.diagnostics] == ["strict_needs_one_shard"]
    (event,) = draft_mod.record_validation(state, 1, result)
    after = draft_mod.evolve(state, event)
    assert draft_mod.record_validation(after, 1, result) == ()  # a duplicate delivery
    newer = update(after, spec_kv=VALID)
    assert draft_mod.record_validation(newer, 1, result) == ()  # superseded
    assert draft_mod.record_validation(newer, 4, result) == ()  # not a revision of it


def test_a_version_needs_a_valid_current_revision() -> None:
    pending = roundtrip(created())
    with pytest.raises(Conflict) as caught:
        draft_mod.require_valid(pending)
    assert caught.value.code == "draft_validation_pending"
    invalid = validated(roundtrip(created(INVALID)))
    with pytest.raises(Conflict) as caught:
        draft_mod.require_valid(invalid)
    assert caught.value.code == "draft_not_valid"
    assert caught.value.errors[0].path == "single_ring.shards"
    valid = validated(pending)
    assert draft_mod.require_valid(valid).spec_hash == kv.spec_hash(VALID.encode())
    with pytest.raises(Conflict) as caught:
        draft_mod.require_valid(update(valid, name="n"), revision=1)
    assert caught.value.code == "draft_revision_not_current"


def test_versions_are_numbered_per_draft_and_unique_per_project_and_hash() -> None:
    state = validated(roundtrip(created()))
    lowered = draft_mod.compile_input(state.input_kind, state.input, state.target)
    draft_events, version_events = version_mod.create_version(state, lowered, None)
    version = version_mod.fold(version_events)
    assert version is not None
    assert (version.number, version.spec, version.required_capabilities) == (1, VALID, ("exec",))
    assert version.id == version_mod.version_id(PROJECT, lowered.spec_hash)
    assert version.id != version_mod.version_id(uuid.uuid4(), lowered.spec_hash)
    assert version_mod.create_version(state, lowered, version) == ((), ())
    for event in draft_events:
        state = draft_mod.evolve(state, event)
    assert state.versions == 1
    changed = validated(update(state, spec_kv=VALID.replace("exec:/bin/true", "x")))
    lowered = draft_mod.compile_input("spec_kv", changed.input, changed.target)
    _, second = version_mod.create_version(changed, lowered, None)
    assert version_mod.fold(second).number == 2  # type: ignore[union-attr]


def test_the_target_of_the_spec_must_be_the_drafts() -> None:
    state = roundtrip(created(target="LaneGraph"))
    result, _ = draft_mod.validation_of(state)
    assert [(d.code, d.path) for d in result.diagnostics] == [
        ("draft_target_mismatch", "pipeline.target")
    ]


def test_inputs_over_the_limits_are_refused_before_they_are_stored() -> None:
    with pytest.raises(InvalidInput) as caught:
        created("a=" + "x" * kv.MAX_BYTES)
    assert (caught.value.code, caught.value.errors[0].path) == ("spec_too_large", "/spec_kv")
    with pytest.raises(InvalidInput) as caught:
        created("".join(f"k.{i}=1\n" for i in range(kv.MAX_KEYS + 1)))
    assert caught.value.code == "spec_too_many_keys"
    lanes = [{"name": f"l{i}", "kind": "Events", "on_full": "Block"} for i in range(3334)]
    plan = {"pipeline": {"name": "p", "target": "LaneGraph"}, "lane_graph": {"lanes": lanes}}
    with pytest.raises(InvalidInput) as caught:
        created(None, plan=plan, spec_kv=None)  # type: ignore[arg-type]
    assert (caught.value.code, caught.value.errors[0].path) == ("spec_too_many_keys", "/plan")
    # Text that does not parse yet is a draft all the same.
    assert roundtrip(created("not a spec")).input == "not a spec"


def test_a_command_names_exactly_one_input() -> None:
    for body in ({}, {"plan": {}, "spec_kv": "a=1"}):
        with pytest.raises(InvalidInput):
            convert_command(draft_mod.CreateDraft, {"name": "d", "target": "SingleRing", **body})
    with pytest.raises(InvalidInput):
        convert_command(draft_mod.UpdateDraft, {})


def test_a_large_input_travels_in_parts_each_far_below_the_nats_limit() -> None:
    # Control characters are the worst case for JSON escaping (\\u00XX: 6 bytes each).
    text = "\x01" * (kv.MAX_BYTES - 1)
    parts = draft_mod.split_text(text)
    assert "".join(parts) == text and all(len(p) <= draft_mod.PART_CHARS for p in parts)
    cmd = draft_mod.CreateDraft(name="d", target="SingleRing", spec_kv=text)
    events = draft_mod.create_draft(
        cmd, draft_id=DRAFT, org_id=ORG, project_id=PROJECT, job_id=DRAFT
    )
    assert len(events) == len(parts)
    assert max(len(CODEC.encode(e).payload) for e in events) < 512 * 1024
    assert roundtrip(events).input == text


def test_draft_events_survive_the_codec() -> None:
    state = validated(roundtrip(created()))
    assert msgspec.json.decode(
        msgspec.json.encode(state.validation), type=draft_mod.Validation
    ) == (state.validation)
