"""Properties of the spec pipeline (DOMAIN.md §4).

- valid plans of both targets lower to canonical bytes that decode to the same
  plan and encode again to identical bytes, with a stable hash;
- KV entries of every allowed value (any string without lone surrogates,
  int64, booleans) survive encode → parse, and canonical text is a fixed point;
- each mutation family breaks one rule and is rejected with exactly that rule's
  code, at that path (and line, for parse findings); every documented code has
  a family;
- the parser raises nothing but ``SpecSyntaxError`` on arbitrary text (the
  100,000-input fuzz run is in the slow set), and the whole pipeline nothing but
  ``SpecError`` on randomly mutated valid specs (slow set).
"""

from __future__ import annotations

import random
import re

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.spec import (
    Plan,
    SpecError,
    SpecSyntaxError,
    compile_kv,
    compile_plan_json,
    decode_plan,
    diagnostics,
    entries_from_plan,
    kv,
    lower,
    plan_from_kv,
)
from tests.property.spec_strategies import (
    FAMILIES,
    Mutation,
    lane_graph_plans,
    single_ring_plans,
)

FAST = settings(max_examples=30, deadline=None)


@FAST
@given(single_ring_plans() | lane_graph_plans())
def test_valid_plans_round_trip_through_canonical_bytes_with_a_stable_hash(plan: Plan) -> None:
    lowered = lower(plan)
    again = plan_from_kv(lowered.spec)
    assert again == plan
    relowered = lower(again)
    assert relowered.spec == lowered.spec
    assert relowered.spec_hash == lowered.spec_hash == kv.spec_hash(lowered.spec)
    assert kv.canonicalize(lowered.spec) == lowered.spec
    assert kv.encode(entries_from_plan(plan)) == lowered.spec
    assert compile_kv(lowered.spec).report.warnings == ()


@FAST
@given(single_ring_plans() | lane_graph_plans())
def test_a_json_plan_lowers_to_the_same_spec_as_the_plan_itself(plan: Plan) -> None:
    body = msgspec.json.encode(plan)
    assert decode_plan(body) == plan
    assert compile_plan_json(body).spec == lower(plan).spec


_keys = st.lists(
    st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True) | st.integers(0, 999_999_999).map(str),
    min_size=1,
    max_size=4,
).map(".".join)
_values = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=30),
    st.sampled_from(
        ["", " ", "true", "-0", "007", '"', "#", "=", "a\r", "\x85", "\u2028", " \\ud800", "\\"]
    ),
)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=20))
def test_every_allowed_value_survives_encode_then_parse(entries: dict[str, kv.Value]) -> None:
    encoded = kv.encode(entries)
    parsed = kv.parse(encoded)
    assert parsed == entries
    assert all(type(parsed[k]) is type(v) for k, v in entries.items())
    assert kv.encode(parsed) == encoded
    assert encoded.endswith(b"\n") or not entries


def _rejection(mutation: Mutation) -> SpecError:
    try:
        if mutation.plan is not None:
            lower(mutation.plan)
        elif mutation.text is not None:
            compile_kv(mutation.text)
        else:
            assert mutation.json is not None
            compile_plan_json(mutation.json)
    except SpecError as exc:
        return exc
    raise AssertionError(f"accepted a plan that breaks {mutation.code}")


@pytest.mark.parametrize("code", sorted(FAMILIES))
def test_a_mutation_breaking_one_rule_is_rejected_with_that_rules_code_and_path(
    code: str,
) -> None:
    examples = 3 if code in ("spec_too_large", "spec_too_many_keys") else 10

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(FAMILIES[code])
    def check(mutation: Mutation) -> None:
        error = _rejection(mutation)
        found = {(d.code, d.path) for d in error.diagnostics}
        assert found == {(mutation.code, mutation.path)}, error.diagnostics
        if mutation.line is not None:
            assert [d.line for d in error.diagnostics] == [mutation.line]
        if mutation.code.startswith(("kv_", "spec_too")):
            assert isinstance(error, SpecSyntaxError)
            assert all(d.line is not None and d.column is not None for d in error.diagnostics)

    check()


def _documented_codes() -> set[str]:
    table = diagnostics.__doc__ or ""
    return set(re.findall(r"^([a-z_0-9]+)\s{2,}", table, re.MULTILINE)) - {"code"}


def test_every_documented_error_code_has_a_mutation_family() -> None:
    documented = _documented_codes()
    assert "shards_min" in documented
    assert documented - {"spec_not_canonical"} == set(FAMILIES)


_fuzz_alphabet = st.characters(codec="utf-8") | st.sampled_from(list('=."\\\n\r\t #-0123456789'))


@settings(max_examples=300, deadline=None)
@given(st.text(_fuzz_alphabet, max_size=200) | st.binary(max_size=200))
def test_the_parser_raises_only_its_own_error_on_arbitrary_text(text: str | bytes) -> None:
    try:
        kv.parse(text)
    except SpecSyntaxError as exc:
        assert exc.diagnostics
        assert all(d.line is not None and d.column is not None for d in exc.diagnostics)


_PIECES = [
    "pipeline.name",
    "single_ring.stages.0.key",
    "lane_graph.lanes.1.kind",
    "=",
    "==",
    '"',
    '\\"',
    "\\u00e9",
    "\\ud800",
    "\\",
    "\n",
    "\r\n",
    "\r",
    "#",
    " ",
    "\t",
    "true",
    "-",
    "0",
    "007",
    "9223372036854775808",
    ".",
    "..",
    "é",
    "\x00",
    "\x85",
    "\u2028",
    "\ufeff",
    "a",
    "Z",
]


def _random_input(rng: random.Random) -> str | bytes:
    kind = rng.random()
    if kind < 0.45:
        return "".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 20)))
    if kind < 0.8:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 40)))
    return "".join(chr(rng.randint(0, 0x10FFFF)) for _ in range(rng.randint(0, 20)))


@pytest.mark.slow
def test_the_parser_raises_only_its_own_error_on_100000_random_texts() -> None:
    rng = random.Random(20261203)
    rejected = 0
    for _ in range(100_000):
        text = _random_input(rng)
        try:
            entries = kv.parse(text)
        except SpecSyntaxError as exc:
            rejected += 1
            assert exc.diagnostics
        else:
            assert kv.parse(kv.encode(entries)) == entries
    assert 0 < rejected < 100_000


_VALID_TEXTS = [
    b"pipeline.name=orders\npipeline.target=SingleRing\nsingle_ring.ordering=per_key\n"
    b"single_ring.shard_key=k\nsingle_ring.shards=2\nsingle_ring.stages.0.key=dataguard_check\n"
    b"single_ring.stages.1.depends_on.0=0\nsingle_ring.stages.1.key=http_post:https://h.io/x\n",
    b"pipeline.name=g\npipeline.target=LaneGraph\nlane_graph.egress.0=b\nlane_graph.ingress.0=a\n"
    b"lane_graph.lanes.0.kind=Events\nlane_graph.lanes.0.name=a\nlane_graph.lanes.0.on_full=Block\n"
    b"lane_graph.lanes.1.kind=Journal\nlane_graph.lanes.1.name=b\nlane_graph.lanes.1.on_full=Drop\n"
    b"lane_graph.stages.0.inputs.0=a\nlane_graph.stages.0.key=exec:tee|-a\n"
    b"lane_graph.stages.0.name=s\nlane_graph.stages.0.outputs.0=b\nlane_graph.stages.0.role=stage\n",
]
_VALUES = [b"0", b"1", b"-1", b"true", b"a", b"b", b"", b'""', b"x.y", b"99999", b"strict"]


def _mutated(rng: random.Random) -> bytes:
    lines = rng.choice(_VALID_TEXTS).splitlines()
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(lines))
        key, _, value = lines[i].partition(b"=")
        action = rng.random()
        if action < 0.3:
            lines[i] = key + b"=" + rng.choice(_VALUES)
        elif action < 0.5:
            del lines[i]
            if not lines:
                lines = [b"a=1"]
        elif action < 0.7:
            parts = key.split(b".")
            j = rng.randrange(len(parts))
            parts[j] = rng.choice([b"0", b"1", b"7", b"stages", b"lanes", b"x"])
            lines[i] = b".".join(parts) + b"=" + value
        elif action < 0.85:
            lines.append(rng.choice(lines))
        else:
            lines[i] = key + b"." + rng.choice([b"0", b"x"]) + b"=" + value
    return b"\n".join(lines) + b"\n"


@pytest.mark.slow
def test_the_whole_pipeline_raises_only_spec_errors_on_20000_mutated_specs() -> None:
    rng = random.Random(4)
    accepted = 0
    for _ in range(20_000):
        text = _mutated(rng)
        try:
            lowered = compile_kv(text)
        except SpecError:
            continue
        accepted += 1
        assert compile_kv(lowered.spec).spec == lowered.spec
    assert 0 < accepted < 20_000
