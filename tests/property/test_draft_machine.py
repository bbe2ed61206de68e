"""The draft state machine of domain/draft.py's docstring, against a small model.

Saves, renames and retargets interleave with spec_ingest jobs for any revision
(current, superseded, repeated: late and duplicate deliveries) and with version
cuts. The events are kept encoded and folded through the codec on every step,
as the write side and the worker read them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from domain import draft as draft_mod
from domain import version as version_mod
from domain.codec import default_codec
from domain.envelope import NewEvent
from domain.errors import Conflict
from domain.spec import compile_kv

CODEC = default_codec()
PROJECT = uuid.UUID(int=2)


def _spec(shards: int, key: str) -> str:
    return compile_kv(
        "pipeline.name=p\npipeline.target=SingleRing\nsingle_ring.ordering=per_key\n"
        f"single_ring.shard_key=k\nsingle_ring.shards={shards}\nsingle_ring.stages.0.key={key}\n"
    ).spec.decode()


VALID = [_spec(1, "a"), _spec(2, "http_post:https://h.example/x"), _spec(3, "b")]
INPUTS = [*VALID, VALID[0].replace("shards=1", "shards=0"), "not = a spec\nx", ""]


@dataclass
class Model:
    revision: int = 1
    input_revision: int = 1
    text: str = ""
    target: str = "SingleRing"
    recorded: set[int] = field(default_factory=set)  # revisions validated
    versions: int = 0


class DraftMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.stored: list[NewEvent] = []
        self.model = Model()
        self.by_hash: dict[str, version_mod.Version] = {}

    def state(self) -> draft_mod.Draft:
        folded = draft_mod.fold(
            CODEC.decode(e.event_type, e.schema_version, e.payload) for e in self.stored
        )
        assert folded is not None
        return folded

    def append(self, events: tuple[draft_mod.DraftEvent, ...]) -> None:
        self.stored.extend(CODEC.encode(e) for e in events)

    @initialize(text=st.sampled_from(INPUTS))
    def create(self, text: str) -> None:
        cmd = draft_mod.CreateDraft(name="d", target="SingleRing", spec_kv=text)
        self.append(
            draft_mod.create_draft(
                cmd,
                draft_id=uuid.UUID(int=1),
                org_id=uuid.UUID(int=3),
                project_id=PROJECT,
                job_id=uuid.uuid4(),
            )
        )
        self.model.text = text

    @rule(text=st.sampled_from(INPUTS))
    def save(self, text: str) -> None:
        events = draft_mod.update_draft(
            self.state(), PROJECT, draft_mod.UpdateDraft(spec_kv=text), job_id=uuid.uuid4()
        )
        if text == self.model.text:
            assert events == ()
            return
        assert draft_mod.needs_ingest(events) is not None
        self.append(events)
        self.model.revision += 1
        self.model.input_revision = self.model.revision
        self.model.text = text

    @rule(name=st.sampled_from(["d", "e"]))
    def rename(self, name: str) -> None:
        events = draft_mod.update_draft(
            self.state(), PROJECT, draft_mod.UpdateDraft(name=name), job_id=uuid.uuid4()
        )
        assert draft_mod.needs_ingest(events) is None
        self.append(events)
        self.model.revision += len(events)

    @rule(new_target=st.sampled_from(["SingleRing", "LaneGraph"]))
    def retarget(self, new_target: str) -> None:
        target = new_target
        events = draft_mod.update_draft(
            self.state(),
            PROJECT,
            draft_mod.UpdateDraft(target=target),  # type: ignore[arg-type]
            job_id=uuid.uuid4(),
        )
        self.append(events)
        if events:
            self.model.revision += 1
            self.model.input_revision = self.model.revision
            self.model.target = target

    @rule(back=st.integers(min_value=0, max_value=3))
    def run_job(self, back: int) -> None:
        """spec_ingest for a revision ``back`` saves ago: current, late or duplicate."""
        revision = max(1, self.model.revision - back)
        state = self.state()
        result, _ = draft_mod.validation_of(state)
        events = draft_mod.record_validation(state, revision, result)
        fresh = revision == self.model.input_revision and revision not in self.model.recorded
        assert bool(events) == fresh
        self.append(events)
        if fresh:
            self.model.recorded.add(revision)

    @rule()
    def cut_version(self) -> None:
        state = self.state()
        valid = (
            self.model.input_revision in self.model.recorded
            and self.model.text in VALID
            and self.model.target == "SingleRing"
        )
        if not valid:
            with pytest.raises(Conflict):
                draft_mod.require_valid(state)
            return
        lowered = draft_mod.compile_input(state.input_kind, state.input, state.target)
        existing = self.by_hash.get(lowered.spec_hash)
        draft_events, version_events = version_mod.create_version(state, lowered, existing)
        if existing is not None:
            assert (draft_events, version_events) == ((), ())
            return
        version = version_mod.fold(version_events)
        assert version is not None
        self.model.versions += 1
        assert version.number == self.model.versions
        self.by_hash[version.spec_hash] = version
        self.append(draft_events)

    @invariant()
    def matches_the_model(self) -> None:
        if not self.stored:
            return
        state = self.state()
        assert (state.revision, state.input_revision) == (
            self.model.revision,
            self.model.input_revision,
        )
        assert (state.input, state.target) == (self.model.text, self.model.target)
        assert state.versions == self.model.versions
        validation = state.validation
        if self.model.input_revision in self.model.recorded:
            assert validation.status in ("valid", "invalid")
            assert validation.revision == self.model.input_revision
            assert (validation.status == "valid") == (
                self.model.text in VALID and self.model.target == "SingleRing"
            )
        else:
            assert validation.status == "pending"
            assert validation.revision == self.model.input_revision


TestDraftMachine = DraftMachine.TestCase
TestDraftMachine.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)


no_newline = st.text(alphabet=st.characters(blacklist_characters="\n"), min_size=1, max_size=8)


@given(st.text(max_size=200) | no_newline.map(lambda t: t * 40_000))
@settings(max_examples=30, deadline=None)
def test_any_input_is_stored_in_bounded_parts_and_folded_back_whole(text: str) -> None:
    parts = draft_mod.split_text(text)
    assert "".join(parts) == text
    assert all(len(p) <= draft_mod.PART_CHARS for p in parts)
    if len(text.encode()) > draft_mod.kv.MAX_BYTES or text.count("\n") >= 10_000:
        return
    events = draft_mod.create_draft(
        draft_mod.CreateDraft(name="d", target="SingleRing", spec_kv=text),
        draft_id=uuid.UUID(int=1),
        org_id=uuid.UUID(int=3),
        project_id=PROJECT,
        job_id=uuid.UUID(int=4),
    )
    encoded = [CODEC.encode(e) for e in events]
    assert max(len(e.payload) for e in encoded) < 512 * 1024
    folded = draft_mod.fold(CODEC.decode(e.event_type, 1, e.payload) for e in encoded)
    assert folded is not None and folded.input == text
