"""The KV spec text: parsing, canonical encoding, hashing and the size limits."""

from __future__ import annotations

import hashlib

import pytest

from domain.spec import kv
from domain.spec.diagnostics import Diagnostic, SpecSyntaxError


def parse_error(text: str | bytes) -> tuple[Diagnostic, ...]:
    with pytest.raises(SpecSyntaxError) as caught:
        kv.parse(text)
    return caught.value.diagnostics


def only(text: str | bytes) -> Diagnostic:
    (diagnostic,) = parse_error(text)
    return diagnostic


def test_values_are_booleans_integers_or_strings_by_their_text() -> None:
    parsed = kv.parse("a=true\nb=false\nc=-12\nd=0\ne=hello world\nf=1.5\ng=-\n")
    assert parsed == {
        "a": True,
        "b": False,
        "c": -12,
        "d": 0,
        "e": "hello world",
        "f": "1.5",
        "g": "-",
    }
    assert type(parsed["a"]) is bool
    assert type(parsed["c"]) is int


def test_blank_lines_comments_crlf_and_spaces_around_keys_and_values_are_ignored() -> None:
    text = "# a comment\n\n  a.b =  x y \r\n   # indented comment\n\t\nc=1"
    assert kv.parse(text) == {"a.b": "x y", "c": 1}


def test_a_quoted_string_carries_escapes_and_keeps_its_outer_spaces() -> None:
    parsed = kv.parse('a=" x=\\"y\\"\\n\\t\\\\ \\u00e9 "\n')
    assert parsed == {"a": ' x="y"\n\t\\ é '}


def test_encode_writes_the_canonical_form_in_segment_order_with_a_final_newline() -> None:
    entries: dict[str, kv.Value] = {
        "b": 1,
        "a.10.x": "ten",
        "a.2.x": "two",
        "a.name": "n",
        "a.0": True,
    }
    assert kv.encode(entries) == b"a.0=true\na.2.x=two\na.10.x=ten\na.name=n\nb=1\n"


def test_strings_that_would_read_back_differently_are_quoted() -> None:
    entries: dict[str, kv.Value] = {
        "a": "",
        "b": "true",
        "c": "123",
        "d": "-0",
        "e": " padded",
        "f": '"starts with a quote',
        "g": "line\nbreak",
        "h": "ctl\x01",
        "i": "x=y # not a comment",
        "j": "日本",
    }
    encoded = kv.encode(entries)
    assert (
        encoded
        == (
            'a=""\nb="true"\nc="123"\nd="-0"\ne=" padded"\nf="\\"starts with a quote"\n'
            'g="line\\nbreak"\nh="ctl\\u0001"\ni=x=y # not a comment\nj=日本\n'
        ).encode()
    )
    assert kv.parse(encoded) == entries


def test_encode_refuses_what_it_cannot_write() -> None:
    with pytest.raises(ValueError, match="surrogate"):
        kv.encode({"a": "\ud800"})
    with pytest.raises(ValueError, match="64 bits"):
        kv.encode({"a": 2**63})
    with pytest.raises(ValueError, match="invalid spec key"):
        kv.encode({"a.01": 1})


def test_spec_hash_is_sha256_of_the_canonical_bytes() -> None:
    canonical = kv.encode({"pipeline.name": "x"})
    assert kv.spec_hash(canonical) == "sha256:" + hashlib.sha256(b"pipeline.name=x\n").hexdigest()


def test_canonical_text_decodes_and_encodes_to_identical_bytes() -> None:
    canonical = b'a.0=true\na.1="007"\nb=-5\nc=\xc3\xa9t\xc3\xa9\n'
    assert kv.canonicalize(canonical) == canonical
    assert kv.is_canonical(canonical)
    assert not kv.is_canonical(b"b=1\na=2\n")
    assert not kv.is_canonical(b"a=1")


def test_a_line_without_equals_is_reported_with_its_line_and_column() -> None:
    found = only("a=1\n  oops\n")
    assert (found.code, found.line, found.column) == ("kv_missing_equals", 2, 3)


def test_a_bad_key_points_at_the_bad_segment() -> None:
    found = only("single_ring.stages.01.key=x\n")
    assert (found.code, found.line, found.column) == ("kv_bad_key", 1, 20)
    assert only("a..b=1").code == "kv_bad_key"
    assert only("Upper=1").code == "kv_bad_key"
    assert only("a.1234567890=1").code == "kv_bad_key"
    assert (only("  =1").code, only("  =1").column) == ("kv_bad_key", 3)


def test_a_duplicate_key_is_reported_at_its_second_line() -> None:
    found = only("a=1\nb=2\na=3\n")
    assert (found.code, found.path, found.line, found.column) == ("kv_duplicate_key", "a", 3, 1)


def test_an_empty_value_is_an_error_not_an_empty_string() -> None:
    found = only("a= \n")
    assert (found.code, found.path, found.line, found.column) == ("kv_empty_value", "a", 1, 4)


def test_integers_must_be_canonical_and_fit_in_64_bits() -> None:
    assert only("a=007").code == "kv_bad_integer"
    assert only("a=-0").code == "kv_bad_integer"
    assert only("a=9223372036854775808").code == "kv_bad_integer"
    assert kv.parse("a=-9223372036854775808") == {"a": -(2**63)}
    assert only("a=" + "9" * 5000).code == "kv_bad_integer"


def test_malformed_strings_are_reported_with_the_reason() -> None:
    assert "unterminated" in only('a="open').message
    assert "after the closing quote" in only('a="x"y').message
    assert "unknown escape" in only('a="\\q"').message
    assert "surrogate" in only('a="\\ud83d"').message
    assert kv.parse('a=" \\\\ud83d"') == {"a": " \\ud83d"}
    bare = only("abc=x\x01y")
    assert (bare.code, bare.column) == ("kv_bad_string", 6)


def test_invalid_utf8_is_reported_at_its_line_and_column() -> None:
    found = only(b"a=1\nb=\xc3\xa9\xff\n")
    assert (found.code, found.line, found.column) == ("kv_invalid_utf8", 2, 4)
    assert only("a=\ud800").code == "kv_invalid_utf8"


def test_every_problem_in_the_text_is_reported_not_only_the_first() -> None:
    found = parse_error("a\nb=007\nc=1\nc=2\n")
    assert [(d.code, d.line) for d in found] == [
        ("kv_missing_equals", 1),
        ("kv_bad_integer", 2),
        ("kv_duplicate_key", 4),
    ]


def test_a_spec_over_one_mebibyte_is_rejected_with_one_clear_error() -> None:
    text = b"a=" + b"x" * kv.MAX_BYTES + b"\n"
    found = only(text)
    assert found.code == "spec_too_large"
    assert "1 MiB" in found.message
    assert only(text.decode()).code == "spec_too_large"
    assert only("é" * (kv.MAX_BYTES // 2 + 1)).code == "spec_too_large"


def test_a_spec_of_exactly_one_mebibyte_is_within_the_limit() -> None:
    text = b"a=" + b"x" * (kv.MAX_BYTES - 3) + b"\n"
    assert len(text) == kv.MAX_BYTES
    assert kv.parse(text) == {"a": "x" * (kv.MAX_BYTES - 3)}


def test_a_spec_over_ten_thousand_keys_is_rejected_at_the_first_key_past_the_limit() -> None:
    text = "".join(f"k.{i}=1\n" for i in range(kv.MAX_KEYS + 5))
    found = only(text)
    assert (found.code, found.line) == ("spec_too_many_keys", kv.MAX_KEYS + 1)
    allowed = "# header\n\n" + "".join(f"k.{i}=1\n" for i in range(kv.MAX_KEYS))
    assert len(kv.parse(allowed)) == kv.MAX_KEYS


def test_too_many_keys_is_found_before_any_line_is_parsed() -> None:
    """Every line is also malformed, yet the one finding is the key count."""
    bad_lines = "".join(f"k{i}=x\x01\n" for i in range(kv.MAX_KEYS + 1))
    assert only(bad_lines).code == "spec_too_many_keys"
