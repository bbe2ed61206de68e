"""The semantic phase: every rule of DOMAIN.md §4 over a plan, one function per family.

``validate(plan)`` returns every finding (it does not stop at the first), each a
``Diagnostic`` with a code from the table in ``domain.spec.diagnostics`` and a
dotted spec path. Rules are independent where they can be: a check that only
makes sense once another holds is skipped while that one fails (``strict``
needs ``shards = 1`` is not reported while ``shards < 1``), so one broken rule
gives one finding.

Decisions where DOMAIN.md §4 is silent:

- a SingleRing *source* stage is stage 0, the only one that can have no
  earlier stage; every stage with index > 0 must declare dependencies;
- names (pipeline, lanes, LaneGraph stages) have a size and alphabet, and lane
  and LaneGraph stage names are unique; a LaneGraph has at least one stage;
- one list (a stage's inputs or outputs, ingress, egress) names a lane at most once;
- a plain-identifier stage key is ``[A-Za-z_][A-Za-z0-9_]{0,63}``; an
  ``http_post:`` URL is ``http``/``https`` with a host, no whitespace or control
  characters, at most 2048 characters; an ``exec:`` program is non-empty with
  no whitespace or control characters, and arguments (split on ``|``, which
  therefore cannot occur inside one) hold no control characters; a bare
  ``http_post`` or ``exec`` (no ``:``) is not taken as a plain identifier, so a
  side-effecting stage cannot lose its argument and its capability silently;
- a cycle is reported once, at the lowest-index stage of the first cycle found.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from typing import Final
from urllib.parse import urlsplit

from domain.spec.diagnostics import Diagnostic
from domain.spec.plan import (
    LANE_KINDS,
    ON_FULL,
    ORDERINGS,
    PRODUCERS,
    ROLES,
    SCHEDULINGS,
    TARGETS,
    LaneGraph,
    Plan,
    SingleRing,
)

__all__ = ["DATAGUARD_KEYS", "capability_of", "validate"]

DATAGUARD_KEYS: Final = frozenset({"dataguard_check", "dataguard_redact", "dataguard_fused"})
MAX_STAGES_SINGLE_RING: Final = 4
MAX_NAME: Final = 100
MAX_URL: Final = 2048

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}(?![\s\S])")
_LANE_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}(?![\s\S])")
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f-\x9f]|\s")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_GOVERNED_NAMES: Final = frozenset({"http_post", "exec"})  # need their ":" argument

Found = list[Diagnostic]


def _add(found: Found, code: str, path: str, message: str) -> None:
    found.append(Diagnostic(code=code, path=path, message=message))


def validate(plan: Plan) -> tuple[Diagnostic, ...]:
    """Every rule finding about ``plan``; empty when the plan may be lowered."""
    found: Found = []
    check_pipeline(plan, found)
    if plan.single_ring is not None:
        check_single_ring(plan.single_ring, found)
    if plan.lane_graph is not None:
        check_lane_graph(plan.lane_graph, found)
    return tuple(found)


# --- pipeline and target -----------------------------------------------------------


def check_pipeline(plan: Plan, found: Found) -> None:
    """pipeline_name_invalid, target_invalid, target_section_missing/extra."""
    name = plan.pipeline.name
    if not 1 <= len(name) <= MAX_NAME or _CONTROL.search(name) or name.strip() != name:
        _add(
            found,
            "pipeline_name_invalid",
            "pipeline.name",
            f"name must be 1..{MAX_NAME} characters, no control characters, no outer spaces",
        )
    target = plan.pipeline.target
    if target not in TARGETS:
        _add(found, "target_invalid", "pipeline.target", f"target must be one of {TARGETS}")
        return
    own, other = (
        ("single_ring", "lane_graph") if target == "SingleRing" else ("lane_graph", "single_ring")
    )
    if getattr(plan, own) is None:
        _add(found, "target_section_missing", own, f"target {target} needs the {own} section")
    if getattr(plan, other) is not None:
        _add(found, "target_section_extra", other, f"target {target} takes no {other} section")


# --- stage keys and capabilities ------------------------------------------------------


def capability_of(key: str) -> str | None:
    """The governed capability a stage key needs (side-effecting stages), if any."""
    if key.startswith("http_post:"):
        return "http_post"
    if key.startswith("exec:"):
        return "exec"
    return None


def check_stage_key(key: str, path: str, found: Found) -> None:
    """stage_key_invalid, stage_key_bad_url, stage_key_bad_exec."""
    if key in DATAGUARD_KEYS or (_IDENTIFIER.match(key) and key not in _GOVERNED_NAMES):
        return
    if key.startswith("http_post:"):
        problem = _url_problem(key[len("http_post:") :])
        if problem:
            _add(found, "stage_key_bad_url", path, f"http_post needs an http(s) URL: {problem}")
        return
    if key.startswith("exec:"):
        problem = _exec_problem(key[len("exec:") :])
        if problem:
            _add(found, "stage_key_bad_exec", path, f"exec:<program>|<arg>|...: {problem}")
        return
    _add(
        found,
        "stage_key_invalid",
        path,
        "stage key must be dataguard_check, dataguard_redact, dataguard_fused, "
        "http_post:<URL>, exec:<program>|<arg>|... or an identifier",
    )


def _url_problem(url: str) -> str | None:
    if not url:
        return "the URL is empty"
    if len(url) > MAX_URL:
        return f"the URL is over {MAX_URL} characters"
    if _CONTROL_OR_SPACE.search(url):
        return "the URL holds whitespace or control characters"
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError as exc:
        return f"the URL does not parse ({exc})"
    if parts.scheme not in ("http", "https"):
        return "the scheme must be http or https"
    if not parts.hostname:
        return "the URL has no host"
    return None


def _exec_problem(command: str) -> str | None:
    program, *args = command.split("|")
    if not program:
        return "the program is empty"
    if _CONTROL_OR_SPACE.search(program):
        return "the program holds whitespace or control characters"
    if any(_CONTROL.search(arg) for arg in args):
        return "an argument holds control characters"
    return None


# --- SingleRing -------------------------------------------------------------------------


def check_single_ring(ring: SingleRing, found: Found) -> None:
    check_ring_settings(ring, found)
    check_ring_stages(ring, found)


def check_ring_settings(ring: SingleRing, found: Found) -> None:
    """shards_min, ordering_invalid, producer_unsupported, scheduling_unsupported,
    strict_needs_one_shard, per_key_needs_shard_key."""
    if ring.shards < 1:
        _add(found, "shards_min", "single_ring.shards", "shards must be at least 1")
    if ring.ordering not in ORDERINGS:
        _add(
            found,
            "ordering_invalid",
            "single_ring.ordering",
            f"ordering must be one of {ORDERINGS}",
        )
    elif ring.ordering == "strict" and ring.shards > 1:
        _add(
            found,
            "strict_needs_one_shard",
            "single_ring.shards",
            "strict ordering needs exactly 1 shard",
        )
    elif ring.ordering == "per_key" and not ring.shard_key:
        _add(
            found,
            "per_key_needs_shard_key",
            "single_ring.shard_key",
            "per_key ordering needs a shard_key",
        )
    if ring.producer not in PRODUCERS:
        _add(
            found,
            "producer_unsupported",
            "single_ring.producer",
            "only producer=single is supported",
        )
    if ring.scheduling not in SCHEDULINGS:
        _add(
            found,
            "scheduling_unsupported",
            "single_ring.scheduling",
            "only scheduling=dedicated is supported",
        )


def check_ring_stages(ring: SingleRing, found: Found) -> None:
    """stage_count, stage keys, depends_on_* and stage_needs_dependencies."""
    count = len(ring.stages)
    if not 1 <= count <= MAX_STAGES_SINGLE_RING:
        _add(
            found,
            "stage_count",
            "single_ring.stages",
            f"a SingleRing has 1 to {MAX_STAGES_SINGLE_RING} stages, not {count}",
        )
    for i, stage in enumerate(ring.stages):
        path = f"single_ring.stages.{i}"
        check_stage_key(stage.key, f"{path}.key", found)
        check_depends_on(i, stage.depends_on, path, found)


def check_depends_on(index: int, depends_on: tuple[int, ...], path: str, found: Found) -> None:
    """Strictly increasing indices of earlier stages; a stage past the source declares some."""
    if index > 0 and not depends_on:
        _add(
            found,
            "stage_needs_dependencies",
            f"{path}.depends_on",
            f"stage {index} is not the source stage and must declare dependencies",
        )
    previous: int | None = None
    for j, dep in enumerate(depends_on):
        at = f"{path}.depends_on.{j}"
        if dep == index:
            _add(found, "depends_on_self", at, f"stage {index} depends on itself")
        elif not 0 <= dep < index:
            _add(
                found,
                "depends_on_not_earlier",
                at,
                f"stage {index} may depend only on stages 0..{index - 1}, not {dep}",
            )
        elif previous is not None and dep == previous:
            _add(found, "depends_on_duplicate", at, f"stage {dep} is listed twice")
        elif previous is not None and dep < previous:
            _add(
                found,
                "depends_on_not_increasing",
                at,
                f"dependencies must be strictly increasing ({dep} after {previous})",
            )
        previous = dep


# --- LaneGraph ---------------------------------------------------------------------------


def check_lane_graph(graph: LaneGraph, found: Found) -> None:
    lanes = check_lanes(graph, found)
    check_graph_stages(graph, found)
    check_lane_refs(graph, lanes, found)
    check_lane_ends(graph, found)
    check_cycles(graph, lanes, found)


def check_lanes(graph: LaneGraph, found: Found) -> dict[str, int]:
    """lane_name_invalid, lane_name_duplicate, lane_kind_invalid, lane_on_full_invalid.

    Returns the index of each lane name's first declaration."""
    first: dict[str, int] = {}
    for i, lane in enumerate(graph.lanes):
        path = f"lane_graph.lanes.{i}"
        if not _LANE_NAME.match(lane.name):
            # Still registered below: references to it are not also "unknown".
            _add(found, "lane_name_invalid", f"{path}.name", "lane name is 1..64 of [A-Za-z0-9_.-]")
        if lane.name in first:
            _add(
                found,
                "lane_name_duplicate",
                f"{path}.name",
                f"lane {lane.name!r} is already declared at lanes.{first[lane.name]}",
            )
        else:
            first[lane.name] = i
        if lane.kind not in LANE_KINDS:
            _add(found, "lane_kind_invalid", f"{path}.kind", f"kind must be one of {LANE_KINDS}")
        if lane.on_full not in ON_FULL:
            _add(
                found,
                "lane_on_full_invalid",
                f"{path}.on_full",
                f"on_full must be one of {ON_FULL}",
            )
    return first


def check_graph_stages(graph: LaneGraph, found: Found) -> None:
    """lane_graph_empty, stage_name_invalid, stage_name_duplicate, stage_role_invalid, keys."""
    if not graph.stages:
        _add(found, "lane_graph_empty", "lane_graph.stages", "a LaneGraph needs at least one stage")
    first: dict[str, int] = {}
    for i, stage in enumerate(graph.stages):
        path = f"lane_graph.stages.{i}"
        if not _LANE_NAME.match(stage.name):
            _add(
                found, "stage_name_invalid", f"{path}.name", "stage name is 1..64 of [A-Za-z0-9_.-]"
            )
        elif stage.name in first:
            _add(
                found,
                "stage_name_duplicate",
                f"{path}.name",
                f"stage {stage.name!r} is already declared at stages.{first[stage.name]}",
            )
        else:
            first[stage.name] = i
        check_stage_key(stage.key, f"{path}.key", found)
        if stage.role not in ROLES:
            _add(found, "stage_role_invalid", f"{path}.role", f"role must be one of {ROLES}")


def _ref_lists(graph: LaneGraph) -> Iterable[tuple[str, tuple[str, ...]]]:
    for i, stage in enumerate(graph.stages):
        yield f"lane_graph.stages.{i}.inputs", stage.inputs
        yield f"lane_graph.stages.{i}.outputs", stage.outputs
    yield "lane_graph.ingress", graph.ingress
    yield "lane_graph.egress", graph.egress


def check_lane_refs(graph: LaneGraph, lanes: dict[str, int], found: Found) -> None:
    """lane_unknown, lane_ref_duplicate: every input/output/ingress/egress names a lane once."""
    for path, names in _ref_lists(graph):
        seen: set[str] = set()
        for j, name in enumerate(names):
            if name not in lanes:
                _add(found, "lane_unknown", f"{path}.{j}", f"no lane is named {name!r}")
            elif name in seen:
                _add(found, "lane_ref_duplicate", f"{path}.{j}", f"lane {name!r} is listed twice")
            seen.add(name)


def check_lane_ends(graph: LaneGraph, found: Found) -> None:
    """lane_no_producer, lane_no_consumer: every lane is written and read."""
    produced = set(graph.ingress)
    consumed = set(graph.egress)
    for stage in graph.stages:
        produced.update(stage.outputs)
        consumed.update(stage.inputs)
    for i, lane in enumerate(graph.lanes):
        if lane.name not in produced:
            _add(
                found,
                "lane_no_producer",
                f"lane_graph.lanes.{i}",
                f"lane {lane.name!r} has no producer (a stage output or ingress)",
            )
        if lane.name not in consumed:
            _add(
                found,
                "lane_no_consumer",
                f"lane_graph.lanes.{i}",
                f"lane {lane.name!r} has no consumer (a stage input or egress)",
            )


def check_cycles(graph: LaneGraph, lanes: dict[str, int], found: Found) -> None:
    """lane_graph_cycle: stages must not reach themselves through lanes.

    The graph is bipartite (stage → lane it outputs, lane → stage that inputs it),
    so its size is the number of references, never producers times consumers.
    Kahn's algorithm removes every node not on or behind a cycle; from any node
    left, walking back along remaining predecessors must revisit a node, which
    lies on a cycle.
    """
    stage_count = len(graph.stages)
    lane_node = {name: stage_count + index for index, name in enumerate(lanes)}
    size = stage_count + len(lane_node)
    successors: list[list[int]] = [[] for _ in range(size)]
    predecessors: list[list[int]] = [[] for _ in range(size)]
    for s, stage in enumerate(graph.stages):
        for name in stage.outputs:
            lane = lane_node.get(name)
            if lane is not None:
                successors[s].append(lane)
                predecessors[lane].append(s)
        for name in stage.inputs:
            lane = lane_node.get(name)
            if lane is not None:
                successors[lane].append(s)
                predecessors[s].append(lane)
    indegree = [len(p) for p in predecessors]
    ready = deque(node for node in range(size) if indegree[node] == 0)
    removed = [False] * size
    while ready:
        node = ready.popleft()
        removed[node] = True
        for nxt in successors[node]:
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                ready.append(nxt)
    start = next((node for node in range(size) if not removed[node]), None)
    if start is None:
        return
    order: dict[int, int] = {}
    node = start
    while node not in order:
        order[node] = len(order)
        node = next(p for p in predecessors[node] if not removed[p])
    cycle = [n for n, position in order.items() if position >= order[node]]
    stages = sorted(n for n in cycle if n < stage_count)
    forward = [n for n in sorted(cycle, key=order.__getitem__, reverse=True) if n < stage_count]
    turn = forward.index(stages[0])  # the walk went backwards; start at the lowest index
    names = " → ".join(graph.stages[n].name for n in forward[turn:] + forward[: turn + 1])
    _add(
        found,
        "lane_graph_cycle",
        f"lane_graph.stages.{stages[0]}",
        f"stages form a cycle through lanes: {names}",
    )
