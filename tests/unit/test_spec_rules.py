"""Each validation rule of DOMAIN.md §4 on plain plans: its code, at its path."""

from __future__ import annotations

from typing import Any

from msgspec.structs import replace

from domain.spec import (
    Lane,
    LaneGraph,
    LaneGraphStage,
    Pipeline,
    Plan,
    SingleRing,
    SingleRingStage,
    validate,
)


def ring(**changes: Any) -> Plan:
    base = SingleRing(
        shards=1,
        ordering="strict",
        stages=(
            SingleRingStage(key="dataguard_check"),
            SingleRingStage(key="http_post:https://example.com/hook", depends_on=(0,)),
            SingleRingStage(key="exec:/usr/bin/tee|-a|out.log", depends_on=(0, 1)),
        ),
    )
    return Plan(
        pipeline=Pipeline(name="orders", target="SingleRing"), single_ring=replace(base, **changes)
    )


def stages(*deps: tuple[int, ...]) -> tuple[SingleRingStage, ...]:
    return tuple(SingleRingStage(key="enrich", depends_on=d) for d in deps)


def graph(**changes: Any) -> Plan:
    base = LaneGraph(
        lanes=(
            Lane(name="in", kind="Events", on_full="Block"),
            Lane(name="mid", kind="Journal", on_full="Drop"),
            Lane(name="out", kind="FanoutBroadcast", on_full="Block"),
        ),
        stages=(
            LaneGraphStage(
                name="check", key="dataguard_check", role="stage", inputs=("in",), outputs=("mid",)
            ),
            LaneGraphStage(
                name="route", key="router_v2", role="router", inputs=("mid",), outputs=("out",)
            ),
        ),
        ingress=("in",),
        egress=("out",),
    )
    return Plan(
        pipeline=Pipeline(name="fanout", target="LaneGraph"), lane_graph=replace(base, **changes)
    )


def findings(plan: Plan) -> list[tuple[str, str]]:
    return [(d.code, d.path) for d in validate(plan)]


def test_the_example_plans_are_valid() -> None:
    assert findings(ring()) == []
    assert findings(graph()) == []


# --- pipeline and target --------------------------------------------------------------


def test_a_pipeline_name_must_be_short_printable_and_unpadded() -> None:
    for name in ("", " orders", "orders\n", "x" * 101):
        plan = replace(ring(), pipeline=Pipeline(name=name, target="SingleRing"))
        assert findings(plan) == [("pipeline_name_invalid", "pipeline.name")]


def test_an_unknown_target_is_rejected() -> None:
    plan = replace(ring(), pipeline=Pipeline(name="x", target="Ring"))
    assert findings(plan) == [("target_invalid", "pipeline.target")]


def test_the_target_section_must_be_present() -> None:
    assert findings(replace(ring(), single_ring=None)) == [
        ("target_section_missing", "single_ring")
    ]


def test_the_other_targets_section_must_be_absent() -> None:
    plan = replace(ring(), lane_graph=graph().lane_graph)
    assert findings(plan) == [("target_section_extra", "lane_graph")]


# --- SingleRing ---------------------------------------------------------------------------


def test_a_single_ring_needs_at_least_one_shard() -> None:
    assert findings(ring(shards=0)) == [("shards_min", "single_ring.shards")]


def test_a_single_ring_has_one_to_four_stages() -> None:
    assert findings(ring(stages=())) == [("stage_count", "single_ring.stages")]
    five = stages((), (0,), (1,), (2,), (3,))
    assert findings(ring(stages=five)) == [("stage_count", "single_ring.stages")]
    assert findings(ring(stages=five[:4])) == []


def test_ordering_is_strict_or_per_key() -> None:
    assert findings(ring(ordering="fifo")) == [("ordering_invalid", "single_ring.ordering")]


def test_only_the_single_producer_is_supported() -> None:
    assert findings(ring(producer="multi")) == [("producer_unsupported", "single_ring.producer")]


def test_only_dedicated_scheduling_is_supported() -> None:
    assert findings(ring(scheduling="shared")) == [
        ("scheduling_unsupported", "single_ring.scheduling")
    ]


def test_strict_ordering_needs_exactly_one_shard() -> None:
    assert findings(ring(shards=2)) == [("strict_needs_one_shard", "single_ring.shards")]


def test_per_key_ordering_needs_a_shard_key() -> None:
    expected = [("per_key_needs_shard_key", "single_ring.shard_key")]
    assert findings(ring(ordering="per_key", shards=8)) == expected
    assert findings(ring(ordering="per_key", shards=8, shard_key="")) == expected
    assert findings(ring(ordering="per_key", shards=8, shard_key="customer_id")) == []


def test_a_stage_may_not_depend_on_itself() -> None:
    assert findings(ring(stages=stages((), (0, 1)))) == [
        ("depends_on_self", "single_ring.stages.1.depends_on.1")
    ]


def test_a_stage_may_depend_only_on_earlier_stages() -> None:
    assert findings(ring(stages=stages((), (0,), (0, 3)))) == [
        ("depends_on_not_earlier", "single_ring.stages.2.depends_on.1")
    ]
    assert findings(ring(stages=stages((), (-1, 0)))) == [
        ("depends_on_not_earlier", "single_ring.stages.1.depends_on.0")
    ]


def test_a_dependency_may_not_be_listed_twice() -> None:
    assert findings(ring(stages=stages((), (0,), (0, 0)))) == [
        ("depends_on_duplicate", "single_ring.stages.2.depends_on.1")
    ]


def test_dependencies_must_be_strictly_increasing() -> None:
    assert findings(ring(stages=stages((), (0,), (1, 0)))) == [
        ("depends_on_not_increasing", "single_ring.stages.2.depends_on.1")
    ]


def test_every_stage_after_the_source_declares_dependencies() -> None:
    assert findings(ring(stages=stages((), (0,), ()))) == [
        ("stage_needs_dependencies", "single_ring.stages.2.depends_on")
    ]


# --- stage keys ---------------------------------------------------------------------------


def with_key(key: str) -> list[tuple[str, str]]:
    return findings(ring(stages=(SingleRingStage(key=key),)))


def test_the_allowed_stage_key_forms_are_accepted() -> None:
    for key in (
        "dataguard_check",
        "dataguard_redact",
        "dataguard_fused",
        "http_post:http://10.0.0.1:8080/ingest?x=1",
        "http_post:https://hooks.example.com",
        "exec:/bin/sh",
        "exec:python3|-m|tool|",
        "exec:tee|a b|é",
        "Plain_Identifier_9",
    ):
        assert with_key(key) == [], key


def test_a_stage_key_of_no_known_form_is_rejected() -> None:
    for key in ("", "two words", "9lives", "dataguard-check", "http_post", "exec", "x" * 65):
        assert with_key(key) == [("stage_key_invalid", "single_ring.stages.0.key")], key


def test_http_post_needs_an_http_or_https_url_with_a_host() -> None:
    for url in ("", "ftp://example.com", "https://", "example.com", "http://h:99999", "http://a b"):
        assert with_key("http_post:" + url) == [
            ("stage_key_bad_url", "single_ring.stages.0.key")
        ], url


def test_exec_needs_a_program_without_whitespace() -> None:
    for command in ("", "|arg", "my program", "prog|a\x00"):
        assert with_key("exec:" + command) == [
            ("stage_key_bad_exec", "single_ring.stages.0.key")
        ], command


# --- LaneGraph ------------------------------------------------------------------------------


def lanes_with(index: int, **changes: Any) -> tuple[Lane, ...]:
    lanes = graph().lane_graph.lanes  # type: ignore[union-attr]
    return (*lanes[:index], replace(lanes[index], **changes), *lanes[index + 1 :])


def stages_with(index: int, **changes: Any) -> tuple[LaneGraphStage, ...]:
    items = graph().lane_graph.stages  # type: ignore[union-attr]
    return (*items[:index], replace(items[index], **changes), *items[index + 1 :])


def test_a_lane_graph_needs_a_stage() -> None:
    every = ("in", "mid", "out")
    assert findings(graph(stages=(), ingress=every, egress=every)) == [
        ("lane_graph_empty", "lane_graph.stages")
    ]


def test_lane_names_are_short_identifiers() -> None:
    plan = graph(
        lanes=lanes_with(2, name="o u t"),
        stages=stages_with(1, outputs=("o u t",)),
        egress=("o u t",),
    )
    assert findings(plan) == [("lane_name_invalid", "lane_graph.lanes.2.name")]


def test_lane_names_are_unique() -> None:
    lanes = graph().lane_graph.lanes  # type: ignore[union-attr]
    plan = graph(lanes=(*lanes, Lane(name="mid", kind="Events", on_full="Drop")))
    assert findings(plan) == [("lane_name_duplicate", "lane_graph.lanes.3.name")]


def test_a_lane_kind_must_be_known() -> None:
    assert findings(graph(lanes=lanes_with(1, kind="Queue"))) == [
        ("lane_kind_invalid", "lane_graph.lanes.1.kind")
    ]
    for kind in ("Events", "Journal", "SequencedSlots", "FanoutBroadcast"):
        assert findings(graph(lanes=lanes_with(1, kind=kind))) == []


def test_on_full_is_block_or_drop() -> None:
    assert findings(graph(lanes=lanes_with(0, on_full="Spill"))) == [
        ("lane_on_full_invalid", "lane_graph.lanes.0.on_full")
    ]


def test_stage_names_are_short_identifiers_and_unique() -> None:
    assert findings(graph(stages=stages_with(0, name=""))) == [
        ("stage_name_invalid", "lane_graph.stages.0.name")
    ]
    assert findings(graph(stages=stages_with(1, name="check"))) == [
        ("stage_name_duplicate", "lane_graph.stages.1.name")
    ]


def test_a_stage_role_must_be_known() -> None:
    assert findings(graph(stages=stages_with(1, role="sink"))) == [
        ("stage_role_invalid", "lane_graph.stages.1.role")
    ]
    for role in ("stage", "bridge", "router", "merge"):
        assert findings(graph(stages=stages_with(1, role=role))) == []


def test_every_input_output_ingress_and_egress_names_a_lane() -> None:
    assert findings(graph(stages=stages_with(1, inputs=("mid", "nope")))) == [
        ("lane_unknown", "lane_graph.stages.1.inputs.1")
    ]
    assert findings(graph(egress=("out", "ghost"))) == [("lane_unknown", "lane_graph.egress.1")]


def test_one_list_names_a_lane_once() -> None:
    assert findings(graph(stages=stages_with(0, outputs=("mid", "mid")))) == [
        ("lane_ref_duplicate", "lane_graph.stages.0.outputs.1")
    ]


def test_every_lane_has_a_producer() -> None:
    assert findings(graph(ingress=())) == [("lane_no_producer", "lane_graph.lanes.0")]


def test_every_lane_has_a_consumer() -> None:
    assert findings(graph(egress=())) == [("lane_no_consumer", "lane_graph.lanes.2")]


def test_a_lane_may_be_produced_by_ingress_and_consumed_by_egress_alone() -> None:
    assert findings(graph(ingress=("in", "out"), egress=("out", "in"))) == []


def test_stages_may_not_form_a_cycle() -> None:
    back = graph(stages=stages_with(0, inputs=("in", "out")))
    (finding,) = validate(back)
    assert (finding.code, finding.path) == ("lane_graph_cycle", "lane_graph.stages.0")
    assert "check → route → check" in finding.message
    self_loop = graph(stages=stages_with(1, inputs=("mid", "out")))
    assert findings(self_loop) == [("lane_graph_cycle", "lane_graph.stages.1")]


def test_every_finding_is_reported_at_once() -> None:
    plan = ring(shards=0, producer="multi", stages=stages((0,), ()))
    assert findings(plan) == [
        ("shards_min", "single_ring.shards"),
        ("producer_unsupported", "single_ring.producer"),
        ("depends_on_self", "single_ring.stages.0.depends_on.0"),
        ("stage_needs_dependencies", "single_ring.stages.1.depends_on"),
    ]
