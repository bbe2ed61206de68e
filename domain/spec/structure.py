"""The structural phase: flat KV entries ↔ plan (parse → **structural** → semantic).

``plan_from_entries`` builds the key tree, then walks it against the shape of
the plan, reporting ``spec_key_conflict``, ``spec_unknown_key``,
``spec_missing_key``, ``spec_wrong_type`` and ``spec_index_gap`` with dotted
paths. Only a tree with none of those is turned into a ``Plan``; values are
then checked by the validator.

Strings are decided by the text (``kv``): a bare ``123`` is an integer. Where
the plan wants a string, an integer or boolean is taken as the text it was
written as (``pipeline.name=2024`` names the pipeline ``"2024"``); the
canonical spec then writes it quoted. Where the plan wants an integer, a
string is ``spec_wrong_type``.

A list is the keys ``N`` under its path, ``0`` to ``n - 1`` without gaps; an
empty list has no keys (so it is absent from the spec, and absent means empty).
``entries_from_plan`` is the inverse walk, emitting every field except an
absent ``shard_key`` and empty lists, in canonical order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import msgspec

from domain.spec.diagnostics import Diagnostic, SpecInvalid
from domain.spec.kv import Value
from domain.spec.plan import LaneGraph, Plan, SingleRing

__all__ = ["entries_from_plan", "plan_from_entries"]

Node = dict[str | int, Any]


class _List:
    __slots__ = ("item",)

    def __init__(self, item: Shape) -> None:
        self.item = item


class _Record:
    __slots__ = ("fields",)

    def __init__(self, fields: Mapping[str, tuple[Shape, bool]]) -> None:
        self.fields = dict(fields)


Shape = str | _List | _Record  # "str" or "int" for leaves

_STAGE_REF = _List("str")
SHAPE: Final = _Record(
    {
        "pipeline": (_Record({"name": ("str", True), "target": ("str", True)}), True),
        "single_ring": (
            _Record(
                {
                    "shards": ("int", True),
                    "ordering": ("str", True),
                    "shard_key": ("str", False),
                    "producer": ("str", False),
                    "scheduling": ("str", False),
                    "stages": (
                        _List(_Record({"key": ("str", True), "depends_on": (_List("int"), False)})),
                        False,
                    ),
                }
            ),
            False,
        ),
        "lane_graph": (
            _Record(
                {
                    "lanes": (
                        _List(
                            _Record(
                                {
                                    "name": ("str", True),
                                    "kind": ("str", True),
                                    "on_full": ("str", True),
                                }
                            )
                        ),
                        False,
                    ),
                    "stages": (
                        _List(
                            _Record(
                                {
                                    "name": ("str", True),
                                    "key": ("str", True),
                                    "role": ("str", True),
                                    "inputs": (_STAGE_REF, False),
                                    "outputs": (_STAGE_REF, False),
                                }
                            )
                        ),
                        False,
                    ),
                    "ingress": (_STAGE_REF, False),
                    "egress": (_STAGE_REF, False),
                }
            ),
            False,
        ),
    }
)


def _diag(code: str, path: str, message: str) -> Diagnostic:
    return Diagnostic(code=code, path=path, message=message)


def _tree(entries: Mapping[str, Value], found: list[Diagnostic]) -> Node:
    """The nested tree of the keys: name segments as ``str``, index segments as ``int``."""
    root: Node = {}
    for key, value in entries.items():
        node = root
        *parents, last = [int(raw) if raw.isdigit() else raw for raw in key.split(".")]
        for position, segment in enumerate(parents):
            child = node.get(segment)
            if child is None:
                child = node[segment] = {}
            elif type(child) is not dict:
                prefix = ".".join(key.split(".")[: position + 1])
                found.append(
                    _diag(
                        "spec_key_conflict",
                        key,
                        f"{prefix!r} is set to a value, so {key!r} cannot be nested under it",
                    )
                )
                break
            node = child
        else:
            if last in node:
                found.append(
                    _diag(
                        "spec_key_conflict",
                        key,
                        f"{key!r} is set, but other keys are nested under it",
                    )
                )
            else:
                node[last] = value
    return root


Trail = list[str | int]


def _path(trail: Trail, last: str | int | None = None) -> str:
    """The dotted path of a trail (built only when there is something to report)."""
    parts = [*trail, last] if last is not None else trail
    return ".".join(map(str, parts))


def _convert(node: Any, shape: Shape, trail: Trail, found: list[Diagnostic]) -> Any:
    """``node`` as plain data for ``msgspec.convert``; findings go to ``found``.

    ``trail`` is the key path so far, pushed and popped in place: the hot path
    (no finding) never builds a path string.
    """
    is_tree = type(node) is dict
    if shape == "str":
        if is_tree:
            return _wrong(trail, "a string", found)
        if type(node) is str:
            return node
        if type(node) is bool:
            return "true" if node else "false"
        return str(node)
    if shape == "int":
        if type(node) is not int:
            return _wrong(trail, "an integer", found)
        return node
    if not is_tree:
        what = "a list (keys .0, .1, ...)" if isinstance(shape, _List) else "keys nested under it"
        return _wrong(trail, what, found)
    if isinstance(shape, _List):
        return _convert_list(node, shape, trail, found)
    assert isinstance(shape, _Record)
    fields = shape.fields
    out: dict[str, Any] = {}
    for key, child in node.items():
        field = fields.get(key) if type(key) is str else None
        if field is None:
            found.append(_diag("spec_unknown_key", _path(trail, key), "unknown key"))
            continue
        kind = field[0]
        if kind == "str" and type(child) is str:
            out[key] = child  # the common leaf, without a call
            continue
        trail.append(key)
        out[key] = _convert(child, kind, trail, found)
        trail.pop()
    if len(out) < len(fields):
        for name, (_, required) in fields.items():
            if required and name not in node:
                found.append(
                    _diag("spec_missing_key", _path(trail, name), "required key is missing")
                )
    return out


def _convert_list(node: Node, shape: _List, trail: Trail, found: list[Diagnostic]) -> list[Any]:
    indices: list[int] = []
    for key in node:
        if type(key) is int:
            indices.append(key)
        else:
            found.append(_diag("spec_unknown_key", _path(trail, key), "a list holds only indices"))
    indices.sort()
    if indices and indices[-1] != len(indices) - 1:
        for expected, index in enumerate(indices):
            if index != expected:
                found.append(
                    _diag(
                        "spec_index_gap",
                        _path(trail, expected),
                        f"index {expected} is missing (indices run 0, 1, 2, ... without gaps;"
                        f" next is {index})",
                    )
                )
                break
    item = shape.item
    out = []
    for index in indices:
        trail.append(index)
        out.append(_convert(node[index], item, trail, found))
        trail.pop()
    return out


def _wrong(trail: Trail, expected: str, found: list[Diagnostic]) -> None:
    found.append(_diag("spec_wrong_type", _path(trail), f"expected {expected}"))


def plan_from_entries(entries: Mapping[str, Value]) -> Plan:
    """The plan the entries describe; ``SpecInvalid`` with every structural finding."""
    found: list[Diagnostic] = []
    tree = _tree(entries, found)
    data = _convert(tree, SHAPE, [], found)
    if found:
        raise SpecInvalid(f"spec does not fit the plan: {found[0].message}", found)
    return msgspec.convert(data, Plan)


def entries_from_plan(plan: Plan) -> dict[str, Value]:
    """The flat spec entries of a plan, in canonical key order.

    The order is by construction (fields written alphabetically, list items by
    index, sections ``lane_graph`` < ``pipeline`` < ``single_ring``), so lowering
    can skip the sort; ``tests/unit/test_spec_lower.py`` and the round-trip
    property check it against ``kv.sort_key``.
    """
    out: dict[str, Value] = {}
    if plan.lane_graph is not None:
        _lane_graph(plan.lane_graph, out)
    out["pipeline.name"] = plan.pipeline.name
    out["pipeline.target"] = plan.pipeline.target
    if plan.single_ring is not None:
        _single_ring(plan.single_ring, out)
    return out


def _single_ring(ring: SingleRing, out: dict[str, Value]) -> None:
    out["single_ring.ordering"] = ring.ordering
    out["single_ring.producer"] = ring.producer
    out["single_ring.scheduling"] = ring.scheduling
    if ring.shard_key is not None:
        out["single_ring.shard_key"] = ring.shard_key
    out["single_ring.shards"] = ring.shards
    for i, stage in enumerate(ring.stages):
        for j, dep in enumerate(stage.depends_on):
            out[f"single_ring.stages.{i}.depends_on.{j}"] = dep
        out[f"single_ring.stages.{i}.key"] = stage.key


def _lane_graph(graph: LaneGraph, out: dict[str, Value]) -> None:
    for j, lane_name in enumerate(graph.egress):
        out[f"lane_graph.egress.{j}"] = lane_name
    for j, lane_name in enumerate(graph.ingress):
        out[f"lane_graph.ingress.{j}"] = lane_name
    for i, lane in enumerate(graph.lanes):
        prefix = f"lane_graph.lanes.{i}."
        out[prefix + "kind"] = lane.kind
        out[prefix + "name"] = lane.name
        out[prefix + "on_full"] = lane.on_full
    for i, stage in enumerate(graph.stages):
        prefix = f"lane_graph.stages.{i}."
        for j, lane_name in enumerate(stage.inputs):
            out[f"{prefix}inputs.{j}"] = lane_name
        out[prefix + "key"] = stage.key
        out[prefix + "name"] = stage.name
        for j, lane_name in enumerate(stage.outputs):
            out[f"{prefix}outputs.{j}"] = lane_name
        out[prefix + "role"] = stage.role
