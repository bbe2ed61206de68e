"""Lowering, raw KV ingestion, JSON plans and the structural phase."""

from __future__ import annotations

import msgspec
import pytest

from domain.errors import InvalidInput
from domain.spec import (
    Pipeline,
    Plan,
    SingleRing,
    SingleRingStage,
    SpecInvalid,
    SpecSyntaxError,
    compile_kv,
    compile_plan_json,
    decode_plan,
    entries_from_plan,
    kv,
    lower,
    plan_from_kv,
    plan_json_schema,
    pointer,
)

RING = b"""pipeline.name=orders
pipeline.target=SingleRing
single_ring.ordering=per_key
single_ring.producer=single
single_ring.scheduling=dedicated
single_ring.shard_key=customer_id
single_ring.shards=8
single_ring.stages.0.key=dataguard_check
single_ring.stages.1.depends_on.0=0
single_ring.stages.1.key=http_post:https://example.com/hook
single_ring.stages.2.depends_on.0=0
single_ring.stages.2.depends_on.1=1
single_ring.stages.2.key=exec:/usr/bin/tee|-a
"""

GRAPH = b"""pipeline.name=fanout
pipeline.target=LaneGraph
lane_graph.lanes.0.name=in
lane_graph.lanes.0.kind=Events
lane_graph.lanes.0.on_full=Block
lane_graph.stages.0.name=redact
lane_graph.stages.0.key=dataguard_redact
lane_graph.stages.0.role=stage
lane_graph.stages.0.inputs.0=in
lane_graph.ingress.0=in
"""


def structural(text: bytes) -> list[tuple[str, str]]:
    with pytest.raises(SpecInvalid) as caught:
        plan_from_kv(text)
    return [(d.code, d.path) for d in caught.value.diagnostics]


def test_lowering_yields_the_canonical_spec_its_hash_and_capabilities() -> None:
    lowered = compile_kv(RING)
    assert lowered.spec == RING
    assert lowered.spec_hash.startswith("sha256:")
    assert lowered.required_capabilities == ("exec", "http_post")
    report = lowered.report
    assert (report.target, report.stage_count, report.key_count) == ("SingleRing", 3, 13)
    assert report.byte_count == len(RING)
    assert report.capabilities_by_stage == {
        "single_ring.stages.1.key": "http_post",
        "single_ring.stages.2.key": "exec",
    }
    assert report.warnings == ()


def test_plan_entries_come_out_in_canonical_key_order() -> None:
    for text in (RING, GRAPH):
        keys = list(entries_from_plan(plan_from_kv(text)))
        assert keys == sorted(keys, key=kv.sort_key)


def test_a_spec_without_side_effecting_stages_requires_no_capabilities() -> None:
    assert compile_kv(GRAPH).required_capabilities == ()


def test_raw_kv_input_is_accepted_and_stored_in_canonical_form_with_a_warning() -> None:
    messy = b"# hand written\r\n" + b"\n".join(reversed(RING.splitlines())) + b"\n"
    lowered = compile_kv(messy)
    assert lowered.spec == RING
    assert [w.code for w in lowered.report.warnings] == ["spec_not_canonical"]


def test_integer_and_boolean_text_is_taken_as_a_string_where_a_string_is_expected() -> None:
    text = RING.replace(b"pipeline.name=orders", b"pipeline.name=2024")
    lowered = compile_kv(text)
    assert lowered.plan.pipeline.name == "2024"
    assert b'pipeline.name="2024"\n' in lowered.spec


def test_unknown_missing_and_mistyped_keys_are_structural_findings() -> None:
    text = RING.replace(b"single_ring.shards=8", b"single_ring.shards=eight")
    text = text.replace(b"pipeline.target=SingleRing\n", b"") + b"single_ring.colour=red\n"
    assert sorted(structural(text)) == [
        ("spec_missing_key", "pipeline.target"),
        ("spec_unknown_key", "single_ring.colour"),
        ("spec_wrong_type", "single_ring.shards"),
    ]


def test_findings_about_raw_kv_carry_the_line_of_their_key() -> None:
    text = RING.replace(b"single_ring.shards=8", b"single_ring.shards=eight")
    with pytest.raises(SpecInvalid) as caught:
        compile_kv(text + b"single_ring.extra.deep=1\n")
    placed = {(d.code, d.path, d.line, d.column) for d in caught.value.diagnostics}
    assert placed == {
        ("spec_wrong_type", "single_ring.shards", 7, 1),
        ("spec_unknown_key", "single_ring.extra", 14, 1),
    }
    with pytest.raises(SpecInvalid) as caught:
        compile_kv(RING.replace(b"stages.2.depends_on.1=1", b"stages.2.depends_on.1=2"))
    (finding,) = caught.value.diagnostics
    assert (finding.code, finding.line) == ("depends_on_self", 12)


def test_list_indices_must_run_without_gaps() -> None:
    text = RING.replace(b"single_ring.stages.2.", b"single_ring.stages.3.")
    assert structural(text) == [("spec_index_gap", "single_ring.stages.2")]


def test_a_key_cannot_be_both_a_value_and_a_prefix() -> None:
    assert structural(RING + b"pipeline.name.first=x\n") == [
        ("spec_key_conflict", "pipeline.name.first")
    ]


def test_invalid_plans_fail_closed_with_every_finding() -> None:
    plan = Plan(
        pipeline=Pipeline(name="x", target="SingleRing"),
        single_ring=SingleRing(shards=2, ordering="strict", stages=()),
    )
    with pytest.raises(SpecInvalid) as caught:
        lower(plan)
    assert isinstance(caught.value, InvalidInput)
    assert caught.value.status == 422
    assert {d.code for d in caught.value.diagnostics} == {"strict_needs_one_shard", "stage_count"}
    assert caught.value.errors[0].path == "single_ring.shards"


def test_a_lone_surrogate_cannot_be_lowered() -> None:
    plan = Plan(
        pipeline=Pipeline(name="x", target="SingleRing"),
        single_ring=SingleRing(
            shards=1, ordering="strict", shard_key="\udc00", stages=(SingleRingStage(key="a"),)
        ),
    )
    with pytest.raises(SpecInvalid) as caught:
        lower(plan)
    assert [(d.code, d.path) for d in caught.value.diagnostics] == [
        ("string_unencodable", "single_ring.shard_key")
    ]


def test_a_plan_that_would_lower_past_the_key_limit_fails_closed() -> None:
    stages = tuple(SingleRingStage(key="a", depends_on=tuple(range(i))) for i in range(4))
    plan = Plan(
        pipeline=Pipeline(name="x" * 100, target="SingleRing"),
        single_ring=SingleRing(
            shards=1, ordering="strict", shard_key="k" * (1 << 20), stages=stages
        ),
    )
    with pytest.raises(SpecInvalid) as caught:
        lower(plan)
    assert [d.code for d in caught.value.diagnostics] == ["spec_too_large"]


def test_a_json_plan_is_decoded_strictly_with_pointer_paths() -> None:
    plan = compile_kv(RING).plan
    body = msgspec.json.encode(plan)
    assert decode_plan(body) == plan
    assert compile_plan_json(body).spec == RING
    with pytest.raises(SpecInvalid) as caught:
        decode_plan(body.replace(b'"shards":8', b'"shards":"8"'))
    assert [(d.code, d.path) for d in caught.value.diagnostics] == [
        ("plan_invalid", "/single_ring/shards")
    ]
    with pytest.raises(SpecInvalid) as caught:
        decode_plan(b"{")
    assert caught.value.diagnostics[0].code == "plan_malformed_json"


def test_the_json_schema_lists_allowed_values_for_an_editor() -> None:
    schema = plan_json_schema()
    defs = schema["$defs"]
    assert set(defs) >= {"Plan", "Pipeline", "SingleRing", "LaneGraph", "Lane", "LaneGraphStage"}
    assert defs["Pipeline"]["properties"]["target"]["enum"] == ["SingleRing", "LaneGraph"]
    assert defs["Lane"]["properties"]["on_full"]["enum"] == ["Block", "Drop"]
    assert defs["SingleRing"]["properties"]["shards"]["minimum"] == 1
    assert defs["SingleRing"]["additionalProperties"] is False


def test_a_dotted_spec_path_maps_to_a_json_pointer() -> None:
    assert pointer("single_ring.stages.2.depends_on.0") == "/single_ring/stages/2/depends_on/0"
    assert pointer("") == ""


def test_parse_errors_come_before_any_structural_finding() -> None:
    with pytest.raises(SpecSyntaxError):
        compile_kv(RING + b"bad line\n")
