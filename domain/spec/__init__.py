"""Pipeline specs (DOMAIN.md §4): plan model, KV codec, validation, lowering.

    plan.py         the plan structs (the UI's JSON model) and their JSON schema
    kv.py           KV text: parse, canonical encode, spec_hash, size limits
    structure.py    KV entries ↔ plan (the structural phase)
    validate.py     the rules (the semantic phase), one function per family
    lower.py        plan → canonical spec, required capabilities, compile report
    diagnostics.py  Diagnostic, the error types and the table of codes

Pipeline: text ─parse→ entries ─structure→ plan ─validate→ findings ─lower→ spec.
Every failure is a ``SpecError`` carrying diagnostics; nothing invalid is lowered.
"""

from domain.spec.diagnostics import (
    Diagnostic,
    SpecError,
    SpecInvalid,
    SpecSyntaxError,
    pointer,
)
from domain.spec.kv import MAX_BYTES, MAX_KEYS, canonicalize, encode, is_canonical, parse, spec_hash
from domain.spec.lower import (
    CompileReport,
    Lowered,
    compile_kv,
    compile_plan_json,
    decode_plan,
    lower,
    plan_from_kv,
)
from domain.spec.plan import (
    Lane,
    LaneGraph,
    LaneGraphStage,
    Pipeline,
    Plan,
    SingleRing,
    SingleRingStage,
    plan_json_schema,
)
from domain.spec.structure import entries_from_plan, plan_from_entries
from domain.spec.validate import capability_of, validate

__all__ = [
    "MAX_BYTES",
    "MAX_KEYS",
    "CompileReport",
    "Diagnostic",
    "Lane",
    "LaneGraph",
    "LaneGraphStage",
    "Lowered",
    "Pipeline",
    "Plan",
    "SingleRing",
    "SingleRingStage",
    "SpecError",
    "SpecInvalid",
    "SpecSyntaxError",
    "canonicalize",
    "capability_of",
    "compile_kv",
    "compile_plan_json",
    "decode_plan",
    "encode",
    "entries_from_plan",
    "is_canonical",
    "lower",
    "parse",
    "plan_from_entries",
    "plan_from_kv",
    "plan_json_schema",
    "pointer",
    "spec_hash",
    "validate",
]
