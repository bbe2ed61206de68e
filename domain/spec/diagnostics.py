"""Diagnostics: every finding about a plan or a spec, and the errors that carry them.

A diagnostic is ``{code, path, message, severity}`` (plus ``line`` and
``column`` for findings about KV text). ``code`` is stable: clients and tests
match on it, never on ``message``.

Paths (decision):

- ``spec`` form, a dotted spec key path (``single_ring.stages.2.depends_on.0``),
  for every finding about the spec tree: parse, structural and semantic codes.
  The plan mirrors the spec key tree field for field, so the same dotted path
  names the plan field; ``pointer()`` turns it into a JSON pointer
  (``/single_ring/stages/2/depends_on/0``) for a JSON editor. ``""`` is the
  whole spec.
- ``pointer`` form, a JSON pointer (``/single_ring/shards``), only for the
  ``plan_*`` codes: a JSON plan that does not even decode into the plan structs.

Parse findings always carry ``line`` and ``column`` (1-based; the column
counts characters, not bytes, of the line as decoded). Structural and semantic
findings about raw KV input (``compile_kv``, ``plan_from_kv``) carry the line
of the key they name, or of the first key under their path, with column 1;
a finding about a key that is not in the text (``spec_missing_key``, a list
that is absent) has none. Findings about a plan carry none.

Error hierarchy (all ``InvalidInput``, so HTTP 422)::

    SpecError            .diagnostics: tuple[Diagnostic, ...]
    ├── SpecSyntaxError  the KV text does not parse (the only error the parser raises)
    └── SpecInvalid      the plan or the spec breaks a rule; no version is created

Codes (severity ``error`` unless marked). Path column: ``""`` the whole text;
*key* the dotted key of the line concerned (the ``spec`` form; ``""`` when the
key itself does not parse); *spec* the dotted spec path of the field; *pointer*
a JSON pointer into the JSON plan.

==========================  ========================================================  =======
code                        rule                                                      path
==========================  ========================================================  =======
spec_too_large              the text is over 1 MiB (1,048,576 bytes) of UTF-8         ``""``
spec_too_many_keys          the text holds over 10,000 keys                           ``""``
kv_invalid_utf8             the bytes are not UTF-8                                   ``""``
kv_missing_equals           a line that is not blank or a comment has no ``=``        ``""``
kv_bad_key                  a key is not dot-separated ``[a-z_][a-z0-9_]*`` names     key
                            and ``0|[1-9][0-9]{0,8}`` indices
kv_duplicate_key            the same key appears twice                                key
kv_empty_value              nothing after ``=`` (write ``""`` for an empty string)    key
kv_bad_integer              a number with a leading zero, ``-0``, or outside int64    key
kv_bad_string               a bare value with a control character, or a malformed     key
                            quoted string
spec_key_conflict           a key is both a value and a prefix of another key         key
spec_unknown_key            a key the target does not define                          key
spec_missing_key            a required key is absent                                  key
spec_wrong_type             a value of the wrong type (integer for a string, ...)     key
spec_index_gap              list indices are not 0, 1, 2, ... without gaps            key
plan_malformed_json         a JSON plan is not JSON                                   pointer
plan_invalid                a JSON plan does not fit the plan structs                 pointer
target_invalid              ``pipeline.target`` is not ``SingleRing``/``LaneGraph``   spec
target_section_missing      the target's section (``single_ring``/``lane_graph``)     spec
                            is absent
target_section_extra        the other target's section is present                     spec
pipeline_name_invalid       name is 1..100 chars, no control chars, no outer spaces   spec
string_unencodable          a string holds a lone surrogate (not UTF-8 encodable)     spec
shards_min                  ``single_ring.shards >= 1``                               spec
stage_count                 SingleRing has 1 to 4 stages                              spec
ordering_invalid            ordering is ``strict`` or ``per_key``                     spec
producer_unsupported        ``producer=single`` only                                  spec
scheduling_unsupported      ``scheduling=dedicated`` only                             spec
strict_needs_one_shard      ``ordering=strict`` needs ``shards = 1``                  spec
per_key_needs_shard_key     ``ordering=per_key`` needs a non-empty ``shard_key``      spec
depends_on_self             a stage depends on itself                                 spec
depends_on_not_earlier      a dependency names a later (or negative) stage index      spec
depends_on_duplicate        the same dependency twice                                 spec
depends_on_not_increasing   dependencies are not in increasing order                  spec
stage_needs_dependencies    a non-source stage (index > 0) has no dependencies        spec
stage_key_invalid           a stage key is none of the allowed forms (a bare          spec
                            ``http_post`` or ``exec`` is not taken as an identifier)
stage_key_bad_url           ``http_post:`` is not followed by an http(s) URL          spec
stage_key_bad_exec          ``exec:`` has an empty or malformed program               spec
lane_graph_empty            a LaneGraph has no stage                                  spec
lane_name_invalid           a lane name is not 1..64 of ``[A-Za-z0-9_.-]``            spec
lane_name_duplicate         two lanes share a name                                    spec
lane_kind_invalid           kind is Events, Journal, SequencedSlots, FanoutBroadcast  spec
lane_on_full_invalid        on_full is Block or Drop                                  spec
stage_name_invalid          a stage name is not 1..64 of ``[A-Za-z0-9_.-]``           spec
stage_name_duplicate        two LaneGraph stages share a name                         spec
stage_role_invalid          role is stage, bridge, router or merge                    spec
lane_unknown                an input, output, ingress or egress names no lane         spec
lane_ref_duplicate          one list names the same lane twice                        spec
lane_no_producer            a lane has no producer (stage output or ingress)          spec
lane_no_consumer            a lane has no consumer (stage input or egress)            spec
lane_graph_cycle            stages form a cycle through lanes                         spec
spec_not_canonical          (warning) raw KV input differs from its canonical form    ``""``
==========================  ========================================================  =======
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal

import msgspec

from domain.errors import FieldError, InvalidInput

Severity = Literal["error", "warning"]

MAX_REPORTED: Final = 100
"""At most this many diagnostics are kept per error (the rest are counted)."""


class Diagnostic(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    path: str
    message: str
    severity: Severity = "error"
    line: int | None = None
    column: int | None = None


def pointer(path: str) -> str:
    """A dotted spec path as a JSON pointer: ``a.b.0`` → ``/a/b/0``; ``""`` → ``""``."""
    return "/" + path.replace(".", "/") if path else ""


class SpecError(InvalidInput):
    """Base of spec failures; ``diagnostics`` holds every finding (errors first)."""

    code = "spec_error"

    def __init__(self, detail: str, diagnostics: Iterable[Diagnostic]) -> None:
        found = tuple(diagnostics)
        kept = found[:MAX_REPORTED]
        super().__init__(
            detail,
            errors=tuple(FieldError(d.path, f"{d.code}: {d.message}") for d in kept),
            context={"codes": sorted({d.code for d in found}), "count": len(found)},
        )
        self.diagnostics = kept


class SpecSyntaxError(SpecError):
    code = "spec_syntax_error"


class SpecInvalid(SpecError):
    code = "spec_invalid"


def errors_of(diagnostics: Iterable[Diagnostic]) -> tuple[Diagnostic, ...]:
    return tuple(d for d in diagnostics if d.severity == "error")
