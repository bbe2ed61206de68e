"""Hand-written hypothesis strategies for pipeline plans, and one mutation family per rule.

Valid plans are built so that every rule of DOMAIN.md §4 holds by construction
(not by filtering through the validator under test):

- SingleRing: ``strict`` gets one shard; ``per_key`` a non-empty shard key
  (any text: newlines, ``=``, quotes, outer spaces, non-ASCII, so the KV string
  quoting is exercised); stage ``i > 0`` depends on a non-empty increasing
  subset of ``0..i-1``.
- LaneGraph: stages get a topological rank and a shuffled position; each lane
  has one producer (ingress or a stage) and consumers (egress or stages of a
  higher rank), so there is no cycle and every lane is written and read.

A *mutation family* takes a valid plan and breaks exactly one rule, returning
the input to feed (a plan, KV text or JSON bytes) and the code and path the
rejection must carry. ``FAMILIES`` maps each diagnostic code to its family.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
from hypothesis import strategies as st
from msgspec.structs import replace

from domain.spec import kv
from domain.spec.plan import (
    Lane,
    LaneGraph,
    LaneGraphStage,
    Pipeline,
    Plan,
    SingleRing,
    SingleRingStage,
)
from domain.spec.structure import entries_from_plan

_no_surrogates = st.characters(exclude_categories=["Cs"])
_printable = st.characters(exclude_categories=["Cc", "Cs"])
_tricky = st.sampled_from(
    ["123", "-4", "007", "true", "false", '"quoted"', "a=b", "#hash", "x\\y", "é", "日本"]
)

pipeline_names = _tricky | st.text(_printable, min_size=1, max_size=100).map(str.strip).filter(
    lambda s: 1 <= len(s) <= 100
)
any_text = _tricky | st.text(_no_surrogates, max_size=40)
identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)
_label = st.from_regex(r"[a-z0-9]{1,10}", fullmatch=True)
urls = st.builds(
    lambda scheme, host, port, path: f"{scheme}://{host}{port}{path}",
    st.sampled_from(["http", "https"]),
    st.lists(_label, min_size=1, max_size=3).map(".".join),
    st.sampled_from(["", ":8080", ":1"]),
    st.sampled_from(["", "/", "/hook", "/a/b?x=1&y=é", "/p#frag"]),
)
_exec_arg = st.text(
    st.characters(exclude_categories=["Cc", "Cs"], exclude_characters="|"), max_size=12
)
exec_keys = st.builds(
    lambda program, args: "exec:" + "|".join([program, *args]),
    st.from_regex(r"[A-Za-z0-9_./-]{1,20}", fullmatch=True),
    st.lists(_exec_arg, max_size=3),
)
stage_keys = st.one_of(
    st.sampled_from(["dataguard_check", "dataguard_redact", "dataguard_fused"]),
    identifiers,
    urls.map(lambda url: "http_post:" + url),
    exec_keys,
)
names = st.from_regex(r"[A-Za-z0-9_.\-]{1,16}", fullmatch=True)
INT64_MAX = 2**63 - 1


@st.composite
def single_ring_stages(draw: st.DrawFn, min_size: int = 1) -> tuple[SingleRingStage, ...]:
    count = draw(st.integers(min_size, 4))
    stages = []
    for i in range(count):
        deps: tuple[int, ...] = ()
        if i > 0:
            chosen = draw(st.sets(st.integers(0, i - 1), min_size=1))
            deps = tuple(sorted(chosen))
        stages.append(SingleRingStage(key=draw(stage_keys), depends_on=deps))
    return tuple(stages)


@st.composite
def single_ring_plans(draw: st.DrawFn) -> Plan:
    ordering = draw(st.sampled_from(["strict", "per_key"]))
    if ordering == "strict":
        shards = 1
        shard_key = draw(st.none() | any_text)
    else:
        shards = draw(st.integers(1, 64) | st.integers(1, INT64_MAX))
        shard_key = draw(any_text.filter(bool))
    ring = SingleRing(
        shards=shards, ordering=ordering, shard_key=shard_key, stages=draw(single_ring_stages())
    )
    return Plan(pipeline=Pipeline(name=draw(pipeline_names), target="SingleRing"), single_ring=ring)


@st.composite
def lane_graph_sections(draw: st.DrawFn) -> LaneGraph:
    stage_count = draw(st.integers(1, 6))
    lane_names = draw(st.lists(names, min_size=1, max_size=6, unique=True))
    stage_names = draw(st.lists(names, min_size=stage_count, max_size=stage_count, unique=True))
    position = draw(st.permutations(range(stage_count)))  # rank r sits at position[r]
    inputs: list[list[str]] = [[] for _ in range(stage_count)]
    outputs: list[list[str]] = [[] for _ in range(stage_count)]
    ingress: list[str] = []
    egress: list[str] = []
    for lane in lane_names:
        producer = draw(st.integers(-1, stage_count - 1))  # -1: ingress
        if producer < 0:
            ingress.append(lane)
        else:
            outputs[position[producer]].append(lane)
        later = list(range(producer + 1, stage_count))
        consumers = draw(st.lists(st.sampled_from(later), unique=True, max_size=2)) if later else []
        if not consumers or draw(st.booleans()):
            egress.append(lane)
        for rank in consumers:
            inputs[position[rank]].append(lane)
    lanes = tuple(
        Lane(
            name=name,
            kind=draw(st.sampled_from(["Events", "Journal", "SequencedSlots", "FanoutBroadcast"])),
            on_full=draw(st.sampled_from(["Block", "Drop"])),
        )
        for name in lane_names
    )
    stages = tuple(
        LaneGraphStage(
            name=stage_names[i],
            key=draw(stage_keys),
            role=draw(st.sampled_from(["stage", "bridge", "router", "merge"])),
            inputs=tuple(inputs[i]),
            outputs=tuple(outputs[i]),
        )
        for i in range(stage_count)
    )
    return LaneGraph(lanes=lanes, stages=stages, ingress=tuple(ingress), egress=tuple(egress))


@st.composite
def lane_graph_plans(draw: st.DrawFn) -> Plan:
    return Plan(
        pipeline=Pipeline(name=draw(pipeline_names), target="LaneGraph"),
        lane_graph=draw(lane_graph_sections()),
    )


plans = single_ring_plans() | lane_graph_plans()


def canonical(plan: Plan) -> bytes:
    return kv.encode(entries_from_plan(plan))


# --- mutations -------------------------------------------------------------------------


@dataclass(frozen=True)
class Mutation:
    """A broken input and the finding it must produce (``line`` only for parse findings)."""

    code: str
    path: str
    plan: Plan | None = None
    text: bytes | None = None
    json: bytes | None = None
    line: int | None = None


FAMILIES: dict[str, st.SearchStrategy[Mutation]] = {}


def family(code: str) -> Callable[[Callable[..., Mutation]], Callable[..., Mutation]]:
    def register(fn: Callable[..., Mutation]) -> Callable[..., Mutation]:
        FAMILIES[code] = st.composite(fn)()
        return fn

    return register


def _ring(plan: Plan) -> SingleRing:
    assert plan.single_ring is not None
    return plan.single_ring


def _graph(plan: Plan) -> LaneGraph:
    assert plan.lane_graph is not None
    return plan.lane_graph


def _with_ring(plan: Plan, **changes: object) -> Plan:
    return replace(plan, single_ring=replace(_ring(plan), **changes))


def _with_graph(plan: Plan, **changes: object) -> Plan:
    return replace(plan, lane_graph=replace(_graph(plan), **changes))


def _set(items: tuple[object, ...], index: int, item: object) -> tuple[object, ...]:
    return (*items[:index], item, *items[index + 1 :])


def _fresh(taken: set[str]) -> str:
    name = "fresh"
    while name in taken:
        name += "_"
    return name


# pipeline and target


@family("pipeline_name_invalid")
def _bad_name(draw: st.DrawFn) -> Mutation:
    plan = draw(plans)
    name = draw(st.sampled_from(["", " padded", "padded ", "a\x01b", "tab\tin", "x" * 101]))
    return Mutation(
        "pipeline_name_invalid",
        "pipeline.name",
        plan=replace(plan, pipeline=replace(plan.pipeline, name=name)),
    )


@family("target_invalid")
def _bad_target(draw: st.DrawFn) -> Mutation:
    plan = draw(plans)
    target = draw(any_text.filter(lambda t: t not in ("SingleRing", "LaneGraph")))
    return Mutation(
        "target_invalid",
        "pipeline.target",
        plan=replace(plan, pipeline=replace(plan.pipeline, target=target)),
    )


@family("target_section_missing")
def _no_section(draw: st.DrawFn) -> Mutation:
    plan = draw(plans)
    if plan.single_ring is not None:
        return Mutation(
            "target_section_missing", "single_ring", plan=replace(plan, single_ring=None)
        )
    return Mutation("target_section_missing", "lane_graph", plan=replace(plan, lane_graph=None))


@family("target_section_extra")
def _extra_section(draw: st.DrawFn) -> Mutation:
    plan = draw(single_ring_plans())
    graph = draw(lane_graph_sections())
    return Mutation("target_section_extra", "lane_graph", plan=replace(plan, lane_graph=graph))


@family("string_unencodable")
def _surrogate(draw: st.DrawFn) -> Mutation:
    plan = draw(single_ring_plans())
    key = draw(any_text) + "\ud800" + draw(any_text)
    return Mutation(
        "string_unencodable", "single_ring.shard_key", plan=_with_ring(plan, shard_key=key)
    )


# SingleRing


@family("shards_min")
def _shards(draw: st.DrawFn) -> Mutation:
    plan = draw(single_ring_plans())
    shards = draw(st.integers(-(2**63), 0))
    return Mutation("shards_min", "single_ring.shards", plan=_with_ring(plan, shards=shards))


@family("stage_count")
def _stage_count(draw: st.DrawFn) -> Mutation:
    plan = draw(single_ring_plans())
    if draw(st.booleans()):
        return Mutation("stage_count", "single_ring.stages", plan=_with_ring(plan, stages=()))
    extra = draw(st.integers(5, 8))
    stages = tuple(
        SingleRingStage(key="dataguard_check", depends_on=(i - 1,) if i else ())
        for i in range(extra)
    )
    return Mutation("stage_count", "single_ring.stages", plan=_with_ring(plan, stages=stages))


def _not_in(values: tuple[str, ...]) -> st.SearchStrategy[str]:
    return any_text.filter(lambda v: v not in values)


@family("ordering_invalid")
def _ordering(draw: st.DrawFn) -> Mutation:
    plan = draw(single_ring_plans())
    ordering = draw(_not_in(("strict", "per_key")))
    return Mutation(
        "ordering_invalid", "single_ring.ordering", plan=_with_ring(plan, ordering=ordering)
    )


@family("producer_unsupported")
def _producer(draw: st.DrawFn) -> Mutation:
    plan = draw(single_ring_plans())
    value = draw(st.sampled_from(["multi", "Single", "mpmc"]) | _not_in(("single",)))
    return Mutation(
        "producer_unsupported", "single_ring.producer", plan=_with_ring(plan, producer=value)
    )


@family("scheduling_unsupported")
def _scheduling(draw: st.DrawFn) -> Mutation:
    plan = draw(single_ring_plans())
    value = draw(st.sampled_from(["shared", "pooled"]) | _not_in(("dedicated",)))
    return Mutation(
        "scheduling_unsupported", "single_ring.scheduling", plan=_with_ring(plan, scheduling=value)
    )


@family("strict_needs_one_shard")
def _strict(draw: st.DrawFn) -> Mutation:
    plan = draw(single_ring_plans())
    shards = draw(st.integers(2, INT64_MAX))
    return Mutation(
        "strict_needs_one_shard",
        "single_ring.shards",
        plan=_with_ring(plan, ordering="strict", shards=shards),
    )


@family("per_key_needs_shard_key")
def _per_key(draw: st.DrawFn) -> Mutation:
    plan = draw(single_ring_plans())
    key = draw(st.sampled_from([None, ""]))
    return Mutation(
        "per_key_needs_shard_key",
        "single_ring.shard_key",
        plan=_with_ring(plan, ordering="per_key", shard_key=key),
    )


def _stage_with_deps(
    draw: st.DrawFn, plan: Plan, deps_for: Callable[[int, tuple[int, ...]], tuple[int, ...]]
) -> tuple[Plan, int, tuple[int, ...]]:
    stages = _ring(plan).stages
    i = draw(st.integers(0, len(stages) - 1))
    deps = deps_for(i, stages[i].depends_on)
    new = _set(stages, i, replace(stages[i], depends_on=deps))
    return _with_ring(plan, stages=new), i, deps


@family("depends_on_self")
def _self(draw: st.DrawFn) -> Mutation:
    plan, i, deps = _stage_with_deps(draw, draw(single_ring_plans()), lambda i, d: (*d, i))
    return Mutation(
        "depends_on_self", f"single_ring.stages.{i}.depends_on.{len(deps) - 1}", plan=plan
    )


@family("depends_on_not_earlier")
def _not_earlier(draw: st.DrawFn) -> Mutation:
    ahead = draw(st.integers(1, 100))
    if draw(st.booleans()):
        plan, i, deps = _stage_with_deps(
            draw, draw(single_ring_plans()), lambda i, d: (*d, i + ahead)
        )
        at = len(deps) - 1
    else:
        plan, i, deps = _stage_with_deps(draw, draw(single_ring_plans()), lambda i, d: (-ahead, *d))
        at = 0
    return Mutation("depends_on_not_earlier", f"single_ring.stages.{i}.depends_on.{at}", plan=plan)


def _grown(draw: st.DrawFn, minimum: int) -> Plan:
    """A SingleRing plan with at least ``minimum`` stages (extra ones depend on all earlier)."""
    plan = draw(single_ring_plans())
    stages = _ring(plan).stages
    while len(stages) < minimum:
        stages = (*stages, SingleRingStage(key="x", depends_on=tuple(range(len(stages)))))
    return _with_ring(plan, stages=stages)


@family("depends_on_duplicate")
def _duplicate(draw: st.DrawFn) -> Mutation:
    plan = _grown(draw, 2)
    stages = _ring(plan).stages
    i = draw(st.integers(1, len(stages) - 1))
    deps = stages[i].depends_on
    j = draw(st.integers(0, len(deps) - 1))
    new = (*deps[: j + 1], deps[j], *deps[j + 1 :])
    plan = _with_ring(plan, stages=_set(stages, i, replace(stages[i], depends_on=new)))
    return Mutation("depends_on_duplicate", f"single_ring.stages.{i}.depends_on.{j + 1}", plan=plan)


@family("depends_on_not_increasing")
def _not_increasing(draw: st.DrawFn) -> Mutation:
    plan = _grown(draw, 3)
    stages = _ring(plan).stages
    i = draw(st.integers(2, len(stages) - 1))
    high = draw(st.integers(1, i - 1))
    low = draw(st.integers(0, high - 1))
    plan = _with_ring(plan, stages=_set(stages, i, replace(stages[i], depends_on=(high, low))))
    return Mutation("depends_on_not_increasing", f"single_ring.stages.{i}.depends_on.1", plan=plan)


@family("stage_needs_dependencies")
def _no_deps(draw: st.DrawFn) -> Mutation:
    plan = _grown(draw, 2)
    stages = _ring(plan).stages
    i = draw(st.integers(1, len(stages) - 1))
    plan = _with_ring(plan, stages=_set(stages, i, replace(stages[i], depends_on=())))
    return Mutation("stage_needs_dependencies", f"single_ring.stages.{i}.depends_on", plan=plan)


def _with_stage_key(draw: st.DrawFn, key: str) -> tuple[Plan, str]:
    plan = draw(plans)
    if plan.single_ring is not None:
        stages = plan.single_ring.stages
        i = draw(st.integers(0, len(stages) - 1))
        plan = _with_ring(plan, stages=_set(stages, i, replace(stages[i], key=key)))
        return plan, f"single_ring.stages.{i}.key"
    lg_stages = _graph(plan).stages
    i = draw(st.integers(0, len(lg_stages) - 1))
    plan = _with_graph(plan, stages=_set(lg_stages, i, replace(lg_stages[i], key=key)))
    return plan, f"lane_graph.stages.{i}.key"


@family("stage_key_invalid")
def _key_invalid(draw: st.DrawFn) -> Mutation:
    key = draw(
        st.sampled_from(
            ["", "has space", "1abc", "dataguard-check", "http:x", "http_post", "EXEC:x"]
        )
        | st.from_regex(r"[a-z]{1,5}[ \-:/!][a-z]{0,5}", fullmatch=True).filter(
            lambda k: not k.startswith(("http_post:", "exec:"))
        )
    )
    plan, path = _with_stage_key(draw, key)
    return Mutation("stage_key_invalid", path, plan=plan)


@family("stage_key_bad_url")
def _key_url(draw: st.DrawFn) -> Mutation:
    url = draw(
        st.sampled_from(
            [
                "",
                "ftp://x",
                "https://",
                "https:// x",
                "http://host:99999",
                "http://[::1",
                "example.com/x",
            ]
        )
    )
    plan, path = _with_stage_key(draw, "http_post:" + url)
    return Mutation("stage_key_bad_url", path, plan=plan)


@family("stage_key_bad_exec")
def _key_exec(draw: st.DrawFn) -> Mutation:
    command = draw(st.sampled_from(["", "|a", "my prog|x", "prog|a\x01", "\tprog"]))
    plan, path = _with_stage_key(draw, "exec:" + command)
    return Mutation("stage_key_bad_exec", path, plan=plan)


# LaneGraph


@family("lane_graph_empty")
def _empty(draw: st.DrawFn) -> Mutation:
    plan = draw(lane_graph_plans())
    every = tuple(lane.name for lane in _graph(plan).lanes)
    plan = _with_graph(plan, stages=(), ingress=every, egress=every)
    return Mutation("lane_graph_empty", "lane_graph.stages", plan=plan)


def _rename_lane(plan: Plan, index: int, new: str) -> Plan:
    graph = _graph(plan)
    old = graph.lanes[index].name

    def swap(names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(new if n == old else n for n in names)

    return _with_graph(
        plan,
        lanes=_set(graph.lanes, index, replace(graph.lanes[index], name=new)),
        stages=tuple(
            replace(s, inputs=swap(s.inputs), outputs=swap(s.outputs)) for s in graph.stages
        ),
        ingress=swap(graph.ingress),
        egress=swap(graph.egress),
    )


@family("lane_name_invalid")
def _lane_name(draw: st.DrawFn) -> Mutation:
    plan = draw(lane_graph_plans())
    i = draw(st.integers(0, len(_graph(plan).lanes) - 1))
    new = draw(st.sampled_from(["", "a b", "x" * 65, "é", "a/b", "q\n"]))
    return Mutation(
        "lane_name_invalid", f"lane_graph.lanes.{i}.name", plan=_rename_lane(plan, i, new)
    )


@family("lane_name_duplicate")
def _lane_dup(draw: st.DrawFn) -> Mutation:
    plan = draw(lane_graph_plans())
    lanes = _graph(plan).lanes
    copy = draw(st.sampled_from(lanes))
    plan = _with_graph(plan, lanes=(*lanes, copy))
    return Mutation("lane_name_duplicate", f"lane_graph.lanes.{len(lanes)}.name", plan=plan)


@family("lane_kind_invalid")
def _kind(draw: st.DrawFn) -> Mutation:
    plan = draw(lane_graph_plans())
    lanes = _graph(plan).lanes
    i = draw(st.integers(0, len(lanes) - 1))
    kind = draw(_not_in(("Events", "Journal", "SequencedSlots", "FanoutBroadcast")))
    plan = _with_graph(plan, lanes=_set(lanes, i, replace(lanes[i], kind=kind)))
    return Mutation("lane_kind_invalid", f"lane_graph.lanes.{i}.kind", plan=plan)


@family("lane_on_full_invalid")
def _on_full(draw: st.DrawFn) -> Mutation:
    plan = draw(lane_graph_plans())
    lanes = _graph(plan).lanes
    i = draw(st.integers(0, len(lanes) - 1))
    value = draw(_not_in(("Block", "Drop")))
    plan = _with_graph(plan, lanes=_set(lanes, i, replace(lanes[i], on_full=value)))
    return Mutation("lane_on_full_invalid", f"lane_graph.lanes.{i}.on_full", plan=plan)


@family("stage_name_invalid")
def _stage_name(draw: st.DrawFn) -> Mutation:
    plan = draw(lane_graph_plans())
    stages = _graph(plan).stages
    i = draw(st.integers(0, len(stages) - 1))
    new = draw(st.sampled_from(["", "a b", "y" * 65, "ü", "a:b"]))
    plan = _with_graph(plan, stages=_set(stages, i, replace(stages[i], name=new)))
    return Mutation("stage_name_invalid", f"lane_graph.stages.{i}.name", plan=plan)


@family("stage_name_duplicate")
def _stage_dup(draw: st.DrawFn) -> Mutation:
    plan = draw(lane_graph_plans())
    stages = _graph(plan).stages
    copied = draw(st.sampled_from(stages))
    twin = LaneGraphStage(name=copied.name, key="dataguard_fused", role="merge")
    plan = _with_graph(plan, stages=(*stages, twin))
    return Mutation("stage_name_duplicate", f"lane_graph.stages.{len(stages)}.name", plan=plan)


@family("stage_role_invalid")
def _role(draw: st.DrawFn) -> Mutation:
    plan = draw(lane_graph_plans())
    stages = _graph(plan).stages
    i = draw(st.integers(0, len(stages) - 1))
    role = draw(_not_in(("stage", "bridge", "router", "merge")))
    plan = _with_graph(plan, stages=_set(stages, i, replace(stages[i], role=role)))
    return Mutation("stage_role_invalid", f"lane_graph.stages.{i}.role", plan=plan)


@family("lane_unknown")
def _unknown(draw: st.DrawFn) -> Mutation:
    plan = draw(lane_graph_plans())
    graph = _graph(plan)
    ghost = _fresh({lane.name for lane in graph.lanes})
    where = draw(st.sampled_from(["inputs", "outputs", "ingress", "egress"]))
    if where in ("ingress", "egress"):
        refs: tuple[str, ...] = getattr(graph, where)
        plan = _with_graph(plan, **{where: (*refs, ghost)})
        return Mutation("lane_unknown", f"lane_graph.{where}.{len(refs)}", plan=plan)
    i = draw(st.integers(0, len(graph.stages) - 1))
    refs = getattr(graph.stages[i], where)
    stage = replace(graph.stages[i], **{where: (*refs, ghost)})
    plan = _with_graph(plan, stages=_set(graph.stages, i, stage))
    return Mutation("lane_unknown", f"lane_graph.stages.{i}.{where}.{len(refs)}", plan=plan)


@family("lane_ref_duplicate")
def _ref_dup(draw: st.DrawFn) -> Mutation:
    plan = draw(lane_graph_plans())
    graph = _graph(plan)
    lists: list[tuple[str, tuple[str, ...]]] = [
        ("lane_graph.ingress", graph.ingress),
        ("lane_graph.egress", graph.egress),
    ]
    for i, stage in enumerate(graph.stages):
        lists += [
            (f"lane_graph.stages.{i}.inputs", stage.inputs),
            (f"lane_graph.stages.{i}.outputs", stage.outputs),
        ]
    path, refs = draw(st.sampled_from([item for item in lists if item[1]]))
    doubled = (*refs, draw(st.sampled_from(refs)))
    if path == "lane_graph.ingress":
        plan = _with_graph(plan, ingress=doubled)
    elif path == "lane_graph.egress":
        plan = _with_graph(plan, egress=doubled)
    else:
        _, _, index, where = path.split(".")
        i = int(index)
        plan = _with_graph(
            plan, stages=_set(graph.stages, i, replace(graph.stages[i], **{where: doubled}))
        )
    return Mutation("lane_ref_duplicate", f"{path}.{len(refs)}", plan=plan)


def _extra_lane(plan: Plan) -> tuple[Plan, str, int]:
    graph = _graph(plan)
    name = _fresh({lane.name for lane in graph.lanes})
    lane = Lane(name=name, kind="Events", on_full="Block")
    return _with_graph(plan, lanes=(*graph.lanes, lane)), name, len(graph.lanes)


@family("lane_no_producer")
def _no_producer(draw: st.DrawFn) -> Mutation:
    plan, name, i = _extra_lane(draw(lane_graph_plans()))
    plan = _with_graph(plan, egress=(*_graph(plan).egress, name))
    return Mutation("lane_no_producer", f"lane_graph.lanes.{i}", plan=plan)


@family("lane_no_consumer")
def _no_consumer(draw: st.DrawFn) -> Mutation:
    plan, name, i = _extra_lane(draw(lane_graph_plans()))
    plan = _with_graph(plan, ingress=(*_graph(plan).ingress, name))
    return Mutation("lane_no_consumer", f"lane_graph.lanes.{i}", plan=plan)


@family("lane_graph_cycle")
def _cycle(draw: st.DrawFn) -> Mutation:
    """A self-loop on one stage, or a two-stage loop with a new, otherwise unconnected stage."""
    plan, forth, _ = _extra_lane(draw(lane_graph_plans()))
    stages = _graph(plan).stages
    a = draw(st.integers(0, len(stages) - 1))
    stage = stages[a]
    if draw(st.booleans()):
        looped = replace(stage, inputs=(*stage.inputs, forth), outputs=(*stage.outputs, forth))
        plan = _with_graph(plan, stages=_set(stages, a, looped))
        return Mutation("lane_graph_cycle", f"lane_graph.stages.{a}", plan=plan)
    plan, back, _ = _extra_lane(plan)
    taken = {s.name for s in stages}
    partner = LaneGraphStage(
        name=_fresh(taken), key="dataguard_check", role="bridge", inputs=(forth,), outputs=(back,)
    )
    looped = replace(stage, inputs=(*stage.inputs, back), outputs=(*stage.outputs, forth))
    plan = _with_graph(plan, stages=(*_set(stages, a, looped), partner))
    return Mutation("lane_graph_cycle", f"lane_graph.stages.{a}", plan=plan)


# KV text (parse and structural phases)


def _lines(plan: Plan) -> list[bytes]:
    return canonical(plan).splitlines(keepends=True)


@family("kv_missing_equals")
def _missing_equals(draw: st.DrawFn) -> Mutation:
    lines = _lines(draw(plans))
    at = draw(st.integers(0, len(lines)))
    junk = draw(st.from_regex(r"[a-z .]{1,10}", fullmatch=True).filter(lambda s: s.strip()))
    lines.insert(at, junk.encode() + b"\n")
    return Mutation("kv_missing_equals", "", text=b"".join(lines), line=at + 1)


@family("kv_bad_key")
def _bad_key(draw: st.DrawFn) -> Mutation:
    lines = _lines(draw(plans))
    at = draw(st.integers(0, len(lines)))
    key = draw(
        st.sampled_from(["Pipeline.name", "a..b", ".a", "a.", "a.01", "a-b", "a.1234567890", "é"])
    )
    lines.insert(at, key.encode() + b"=1\n")
    return Mutation("kv_bad_key", "", text=b"".join(lines), line=at + 1)


@family("kv_duplicate_key")
def _dup_key(draw: st.DrawFn) -> Mutation:
    lines = _lines(draw(plans))
    line = draw(st.sampled_from(lines))
    key = line.split(b"=", 1)[0].decode()
    return Mutation("kv_duplicate_key", key, text=b"".join([*lines, line]), line=len(lines) + 1)


def _replace_value(
    draw: st.DrawFn, plan: Plan, value: bytes, pick: Callable[[bytes], bool]
) -> Mutation:
    lines = _lines(plan)
    candidates = [i for i, line in enumerate(lines) if pick(line)]
    i = draw(st.sampled_from(candidates))
    key = lines[i].split(b"=", 1)[0]
    lines[i] = key + b"=" + value + b"\n"
    return Mutation("", key.decode(), text=b"".join(lines), line=i + 1)


def _any_line(line: bytes) -> bool:
    return True


def _with_code(mutation: Mutation, code: str) -> Mutation:
    return dataclasses.replace(mutation, code=code)


@family("kv_empty_value")
def _empty_value(draw: st.DrawFn) -> Mutation:
    value = draw(st.sampled_from([b"", b"  ", b"\t"]))
    return _with_code(_replace_value(draw, draw(plans), value, _any_line), "kv_empty_value")


@family("kv_bad_integer")
def _bad_integer(draw: st.DrawFn) -> Mutation:
    value = draw(
        st.sampled_from([b"007", b"-0", b"00", b"9223372036854775808", b"-9223372036854775809"])
        | st.integers(20, 40).map(lambda n: b"1" * n)
    )
    return _with_code(_replace_value(draw, draw(plans), value, _any_line), "kv_bad_integer")


@family("kv_bad_string")
def _bad_string(draw: st.DrawFn) -> Mutation:
    value = draw(
        st.sampled_from([b'"open', b'"a"b', b'"bad \\x"', b'"\\ud800"', b"ctl\x01x", b'"tab\tin"'])
    )
    return _with_code(_replace_value(draw, draw(plans), value, _any_line), "kv_bad_string")


@family("kv_invalid_utf8")
def _bad_utf8(draw: st.DrawFn) -> Mutation:
    lines = _lines(draw(plans))
    i = draw(st.integers(0, len(lines) - 1))
    junk = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80abc"]))
    lines[i] = lines[i][:-1] + junk + b"\n"
    return Mutation("kv_invalid_utf8", "", text=b"".join(lines), line=i + 1)


@family("spec_too_large")
def _too_large(draw: st.DrawFn) -> Mutation:
    text = canonical(draw(plans))
    pad = kv.MAX_BYTES + 1 - len(text) + draw(st.integers(0, 1000))
    return Mutation("spec_too_large", "", text=text + b"#" + b"x" * pad + b"\n")


@family("spec_too_many_keys")
def _too_many(draw: st.DrawFn) -> Mutation:
    text = canonical(draw(plans))
    count = text.count(b"\n")
    filler = b"".join(b"z.%d=1\n" % i for i in range(kv.MAX_KEYS + 1 - count))
    return Mutation("spec_too_many_keys", "", text=text + filler, line=kv.MAX_KEYS + 1)


@family("spec_key_conflict")
def _conflict(draw: st.DrawFn) -> Mutation:
    lines = _lines(draw(plans))
    line = draw(st.sampled_from(lines))
    key = line.split(b"=", 1)[0]
    nested = key + b"." + draw(st.sampled_from([b"x", b"0", b"deeper.still"]))
    lines.append(nested + b"=1\n")  # after the value: one finding, at the nested key
    return Mutation("spec_key_conflict", nested.decode(), text=b"".join(lines))


@family("spec_unknown_key")
def _unknown_key(draw: st.DrawFn) -> Mutation:
    plan = draw(plans)
    section = "single_ring" if plan.single_ring is not None else "lane_graph"
    key = draw(
        st.sampled_from([f"{section}.bogus", "pipeline.owner", "extra", f"{section}.stages.0.x"])
    )
    text = canonical(plan) + key.encode() + b"=1\n"
    return Mutation("spec_unknown_key", key, text=text)


@family("spec_missing_key")
def _missing_key(draw: st.DrawFn) -> Mutation:
    plan = draw(plans)
    required = ["pipeline.name", "pipeline.target"]
    if plan.single_ring is not None:
        required += ["single_ring.shards", "single_ring.ordering"]
    else:
        required += [
            "lane_graph.lanes.0.name",
            "lane_graph.lanes.0.kind",
            "lane_graph.stages.0.role",
        ]
    key = draw(st.sampled_from(required))
    lines = [line for line in _lines(plan) if not line.startswith(key.encode() + b"=")]
    return Mutation("spec_missing_key", key, text=b"".join(lines))


@family("spec_wrong_type")
def _wrong_type(draw: st.DrawFn) -> Mutation:
    plan = draw(single_ring_plans())
    value = draw(st.sampled_from([b"many", b"true", b'"3"', b"1.5"]))
    mutation = _replace_value(
        draw, plan, value, lambda line: line.startswith(b"single_ring.shards=")
    )
    return dataclasses.replace(mutation, code="spec_wrong_type", line=None)


@family("spec_index_gap")
def _gap(draw: st.DrawFn) -> Mutation:
    plan = draw(plans)
    if plan.single_ring is not None:
        prefix, last = "single_ring.stages", len(plan.single_ring.stages) - 1
    else:
        prefix, last = "lane_graph.lanes", len(_graph(plan).lanes) - 1
    old = f"{prefix}.{last}.".encode()
    new = f"{prefix}.{last + draw(st.integers(1, 5))}.".encode()
    text = b"".join(
        new + line[len(old) :] if line.startswith(old) else line for line in _lines(plan)
    )
    return Mutation("spec_index_gap", f"{prefix}.{last}", text=text)


# JSON plans


@family("plan_malformed_json")
def _malformed(draw: st.DrawFn) -> Mutation:
    body = msgspec.json.encode(draw(plans))
    cut = draw(st.integers(0, len(body) - 1))
    return Mutation("plan_malformed_json", "/", json=body[:cut])


@family("plan_invalid")
def _invalid_json(draw: st.DrawFn) -> Mutation:
    plan = draw(plans)
    data = msgspec.to_builtins(plan)
    choice = draw(st.sampled_from(["name_type", "unknown", "missing"]))
    if choice == "name_type":
        data["pipeline"]["name"] = 5
        path = "/pipeline/name"
    elif choice == "unknown":
        data["pipeline"]["owner"] = "x"
        path = "/pipeline/owner"
    else:
        del data["pipeline"]["target"]
        path = "/pipeline/target"
    return Mutation("plan_invalid", path, json=msgspec.json.encode(data))
