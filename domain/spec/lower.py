"""Lowering: a valid plan → canonical spec, ``spec_hash``, capabilities, compile report.

``lower(plan)`` runs the validator and fails closed (``SpecInvalid``, no spec)
on any error. The spec is ``kv.encode`` of the plan's entries, so its bytes are
canonical by construction; it must also fit the parse limits (a spec the
parser would refuse is never produced), and every string must be UTF-8
(``string_unencodable`` for a lone surrogate, possible only from Python callers:
JSON cannot carry one).

``required_capabilities`` are the governed capabilities the stages need
(``http_post`` and ``exec`` are side-effecting), sorted and distinct: part of
the version a spec becomes.

Entry points by input: ``lower(plan)``; ``compile_plan_json(body)`` for a JSON
plan; ``compile_kv(text)`` for raw KV draft input (parse → structural →
semantic → lower), which adds a ``spec_not_canonical`` warning when the text
was not already canonical, and places each structural or semantic finding at
the line of the key it names (or of the first key under its path), column 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import msgspec
from msgspec.structs import replace

from domain.codec import decode_command
from domain.errors import InvalidInput
from domain.spec import kv
from domain.spec.diagnostics import Diagnostic, SpecInvalid
from domain.spec.plan import Plan
from domain.spec.structure import entries_from_plan, plan_from_entries
from domain.spec.validate import capability_of, validate

__all__ = [
    "CompileReport",
    "Lowered",
    "compile_kv",
    "compile_plan_json",
    "decode_plan",
    "lower",
    "plan_from_kv",
]

CAPABILITIES: Final = ("exec", "http_post")


class CompileReport(msgspec.Struct, frozen=True, kw_only=True):
    target: str
    stage_count: int
    lane_count: int
    key_count: int
    byte_count: int
    spec_hash: str
    capabilities_by_stage: dict[str, str]
    """Stage key path (``single_ring.stages.1.key``) → capability, for governed stages."""
    warnings: tuple[Diagnostic, ...] = ()


class Lowered(msgspec.Struct, frozen=True, kw_only=True):
    plan: Plan
    spec: bytes
    spec_hash: str
    required_capabilities: tuple[str, ...]
    report: CompileReport


def decode_plan(body: bytes) -> Plan:
    """A JSON plan; ``SpecInvalid`` (``plan_malformed_json``/``plan_invalid``, pointer paths)."""
    try:
        return decode_command(Plan, body)
    except InvalidInput as exc:
        code = "plan_malformed_json" if exc.code == "malformed_json" else "plan_invalid"
        found = [Diagnostic(code=code, path=e.path, message=e.message) for e in exc.errors]
        raise SpecInvalid(exc.detail, found) from None


def plan_from_kv(text: str | bytes) -> Plan:
    """Raw KV draft input as a plan (parse and structural phases; not yet validated)."""
    return _plan_located(text)[0]


def _plan_located(text: str | bytes) -> tuple[Plan, dict[str, int]]:
    entries, lines = kv.parse_located(text)
    try:
        return plan_from_entries(entries), lines
    except SpecInvalid as exc:
        raise _located(exc, lines) from None


def _located(error: SpecInvalid, lines: Mapping[str, int]) -> SpecInvalid:
    """The error with each finding placed at the line of its key (or first key under it)."""
    placed = []
    for found in error.diagnostics:
        line = lines.get(found.path)
        if line is None and found.path:
            prefix = found.path + "."
            under = [number for key, number in lines.items() if key.startswith(prefix)]
            line = min(under) if under else None
        placed.append(found if line is None else replace(found, line=line, column=1))
    return SpecInvalid(error.detail, placed)


def _stage_keys(plan: Plan) -> list[tuple[str, str]]:
    keys: list[tuple[str, str]] = []
    if plan.single_ring is not None:
        keys.extend(
            (f"single_ring.stages.{i}.key", s.key) for i, s in enumerate(plan.single_ring.stages)
        )
    if plan.lane_graph is not None:
        keys.extend(
            (f"lane_graph.stages.{i}.key", s.key) for i, s in enumerate(plan.lane_graph.stages)
        )
    return keys


def _encode(entries: dict[str, kv.Value]) -> bytes:
    if len(entries) > kv.MAX_KEYS:
        raise SpecInvalid(
            f"the spec would hold {len(entries)} keys, over the limit of {kv.MAX_KEYS}",
            [Diagnostic(code="spec_too_many_keys", path="", message="over 10,000 keys")],
        )
    try:
        spec = kv.write_ordered(entries.items())  # already in canonical order
    except ValueError:
        bad = [
            Diagnostic(
                code="string_unencodable",
                path=key,
                message="the string holds a lone surrogate, which UTF-8 cannot carry",
            )
            for key, value in entries.items()
            if isinstance(value, str) and not value.isascii() and _has_surrogate(value)
        ]
        raise SpecInvalid("a string cannot be written as UTF-8", bad) from None
    if len(spec) > kv.MAX_BYTES:
        raise SpecInvalid(
            f"the spec would be {len(spec)} bytes, over the limit of {kv.MAX_BYTES}",
            [Diagnostic(code="spec_too_large", path="", message="over 1 MiB")],
        )
    return spec


def _has_surrogate(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def lower(plan: Plan) -> Lowered:
    """The canonical spec of a valid plan; ``SpecInvalid`` with every finding otherwise."""
    found = validate(plan)
    if any(d.severity == "error" for d in found):
        first = next(d for d in found if d.severity == "error")
        raise SpecInvalid(f"plan breaks a rule: {first.path}: {first.message}", found)
    entries = entries_from_plan(plan)
    spec = _encode(entries)
    digest = kv.spec_hash(spec)
    by_stage: dict[str, str] = {}
    for path, key in _stage_keys(plan):
        capability = capability_of(key)
        if capability is not None:
            by_stage[path] = capability
    report = CompileReport(
        target=plan.pipeline.target,
        stage_count=len(plan.single_ring.stages if plan.single_ring else ())
        + len(plan.lane_graph.stages if plan.lane_graph else ()),
        lane_count=len(plan.lane_graph.lanes) if plan.lane_graph else 0,
        key_count=len(entries),
        byte_count=len(spec),
        spec_hash=digest,
        capabilities_by_stage=by_stage,
        warnings=tuple(d for d in found if d.severity != "error"),
    )
    return Lowered(
        plan=plan,
        spec=spec,
        spec_hash=digest,
        required_capabilities=tuple(sorted(set(by_stage.values()))),
        report=report,
    )


def compile_plan_json(body: bytes) -> Lowered:
    """A JSON plan, decoded, validated and lowered."""
    return lower(decode_plan(body))


def compile_kv(text: str | bytes) -> Lowered:
    """Raw KV draft input, parsed into a plan, validated and lowered."""
    plan, lines = _plan_located(text)
    data = text.encode("utf-8") if isinstance(text, str) else text
    try:
        lowered = lower(plan)
    except SpecInvalid as exc:
        raise _located(exc, lines) from None
    if lowered.spec == data:
        return lowered
    warning = Diagnostic(
        code="spec_not_canonical",
        path="",
        message="the input is not in canonical form; the stored spec is its canonical encoding",
        severity="warning",
    )
    report = replace(lowered.report, warnings=(warning, *lowered.report.warnings))
    return replace(lowered, report=report)
