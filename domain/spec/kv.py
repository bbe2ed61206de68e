r"""The KV spec text: parse, canonical encode, ``spec_hash`` (DOMAIN.md §4).

Text format
-----------

UTF-8, lines separated by ``\n`` (a ``\r`` before the ``\n`` is dropped). A
line that is empty, only spaces/tabs, or whose first non-blank character is
``#`` is skipped. Every other line is ``key=value``: the key runs to the first
``=``; spaces and tabs around the key and around the value are ignored.

Keys are dot-separated segments, each a name ``[a-z_][a-z0-9_]*`` or an index
``0|[1-9][0-9]{0,8}`` (no leading zeros, so each index has one spelling).

Values, decided by their text:

- ``true`` / ``false``: booleans;
- ``-?[0-9]+``: a decimal integer, which must be canonical (no leading zero,
  no ``-0``) and within signed 64 bits; anything else of that shape is an error,
  never a string;
- a value starting with ``"``: a quoted string, up to a closing ``"`` that ends
  the value. Inside, ``\\``, ``\"``, ``\n``, ``\r``, ``\t`` and ``\uXXXX``
  (hex, a BMP code point that is not a surrogate) are the only escapes; raw
  control characters (U+0000-U+001F, U+007F-U+009F) are not allowed;
- anything else: a bare string, taken verbatim; it must not contain control
  characters. An empty value is an error (write ``""``).

Canonical form (what ``encode`` writes): one ``key=value`` line per key with no
spaces around ``=``, keys ordered segment by segment (index segments by value,
before name segments, names by code point), ``\n`` after every line, no comments
or blank lines. A string is written bare when that parses back to the same
string: non-empty, no control characters, no leading or trailing space or tab,
not starting with ``"``, not ``true``/``false`` and not of the ``-?[0-9]+``
shape. Otherwise it is quoted, escaping ``\`` and ``"``, ``\n``, ``\r``, ``\t``
by name and other control characters as ``\u00xx`` (lower-case hex); non-ASCII
characters are written as themselves in UTF-8. So ``parse(encode(x)) == x``
for every mapping of valid keys to booleans, int64 integers and strings without
lone surrogates (those cannot be UTF-8 and are refused by ``encode``).

Limits, checked before the work they bound: over ``MAX_BYTES`` of UTF-8 is
``spec_too_large`` (checked first, on the raw length); over ``MAX_KEYS`` keys
is ``spec_too_many_keys`` (counted in one pass over the lines before any line
is parsed). Parsing is one pass over the lines with one regular expression
match per line: linear in the text.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Final

from domain.spec.diagnostics import MAX_REPORTED, Diagnostic, SpecSyntaxError

__all__ = [
    "MAX_BYTES",
    "MAX_KEYS",
    "Value",
    "canonicalize",
    "check_limits",
    "encode",
    "is_canonical",
    "parse",
    "parse_located",
    "sort_key",
    "spec_hash",
    "write_ordered",
]

Value = str | int | bool

MAX_BYTES: Final = 1024 * 1024
MAX_KEYS: Final = 10_000
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**63 - 1

_NAME = r"[a-z_][a-z0-9_]*"
_INDEX = r"(?:0|[1-9][0-9]{0,8})"
_SEGMENT = re.compile(rf"(?:{_NAME}|{_INDEX})(?![\s\S])")
_KEY = re.compile(rf"(?:{_NAME}|{_INDEX})(?:\.(?:{_NAME}|{_INDEX}))*(?![\s\S])")
_INTEGER_SHAPE = re.compile(r"-?[0-9]+(?![\s\S])")
_CANONICAL_INT = re.compile(r"(?:0|-?[1-9][0-9]{0,18})(?![\s\S])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_QUOTED = re.compile(r'"((?:[^"\\\x00-\x1f\x7f-\x9f]|\\["\\nrt]|\\u[0-9a-fA-F]{4})*)"(?![\s\S])')
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)")
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f\x7f-\x9f]')
_ESCAPE_BODY = re.compile(r'["\\nrt]|u[0-9a-fA-F]{4}')
_SURROGATE = re.compile("[\ud800-\udfff]")
_BLANK = " \t"
_NOT_PLAIN = '"-0123456789'  # first characters of values that are not plain bare strings
_KEYWORDS = frozenset({"true", "false"})
_NOT_BARE_FIRST = _NOT_PLAIN + " \t"
_NAMED_ESCAPES: Final = {'"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t"}
_ENCODE_ESCAPES: Final = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _unescape(match: re.Match[str]) -> str:
    token = match.group(1)
    if len(token) == 1:
        return _NAMED_ESCAPES[token]
    return chr(int(token[1:], 16))


def _escape(match: re.Match[str]) -> str:
    char = match.group(0)
    return _ENCODE_ESCAPES.get(char) or f"\\u{ord(char):04x}"


class _Collector:
    """Gathers parse diagnostics; stops the parse once ``MAX_REPORTED`` are found."""

    def __init__(self) -> None:
        self.found: list[Diagnostic] = []

    def add(self, code: str, path: str, message: str, line: int, column: int) -> None:
        self.found.append(
            Diagnostic(code=code, path=path, message=message, line=line, column=column)
        )

    @property
    def full(self) -> bool:
        return len(self.found) >= MAX_REPORTED


def _fail(code: str, message: str, line: int, column: int) -> SpecSyntaxError:
    diagnostic = Diagnostic(code=code, path="", message=message, line=line, column=column)
    return SpecSyntaxError(f"{message} (line {line}, column {column})", (diagnostic,))


def _position(data: bytes, offset: int) -> tuple[int, int]:
    """1-based (line, column in characters) of a byte offset in UTF-8-ish bytes."""
    line_start = data.rfind(b"\n", 0, offset) + 1
    column = len(data[line_start:offset].decode("utf-8", errors="replace")) + 1
    return data.count(b"\n", 0, offset) + 1, column


def _decode(text: str | bytes) -> str:
    if isinstance(text, str):
        if len(text) > MAX_BYTES:  # every character is at least one byte
            raise _oversize_str(text)
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError as exc:
            line = text.count("\n", 0, exc.start) + 1
            column = exc.start - (text.rfind("\n", 0, exc.start) + 1) + 1
            raise _fail(
                "kv_invalid_utf8", "text holds a lone surrogate, not UTF-8", line, column
            ) from None
        if size > MAX_BYTES:
            raise _oversize_str(text)
        return text
    if len(text) > MAX_BYTES:
        line, column = _position(text, MAX_BYTES)
        raise _fail("spec_too_large", _too_large(len(text)), line, column)
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _position(text, exc.start)
        raise _fail("kv_invalid_utf8", f"not UTF-8: {exc.reason}", line, column) from None


def _too_large(size: int) -> str:
    return f"spec is {size} bytes, over the limit of {MAX_BYTES} bytes (1 MiB)"


def _oversize_str(text: str) -> SpecSyntaxError:
    # The offset of the first byte past the limit, found without encoding it all.
    data = text[: MAX_BYTES + 1].encode("utf-8", errors="surrogatepass")
    line, column = _position(data, MAX_BYTES)
    size = len(text.encode("utf-8", errors="surrogatepass"))
    return _fail("spec_too_large", _too_large(size), line, column)


def _is_entry(line: str) -> bool:
    stripped = line.lstrip(_BLANK)
    return bool(stripped) and stripped[0] != "#" and stripped != "\r"


def _check_key_count(lines: list[str]) -> None:
    if len(lines) <= MAX_KEYS:
        return
    count = 0
    for number, line in enumerate(lines, 1):
        if _is_entry(line):
            count += 1
            if count > MAX_KEYS:
                raise _fail(
                    "spec_too_many_keys",
                    f"spec holds over {MAX_KEYS} keys (key {count} is on line {number})",
                    number,
                    1,
                )


def _bad_key_column(key: str) -> tuple[int, str]:
    """Column offset (0-based, within the key) and reason for a key ``_KEY`` refused."""
    offset = 0
    for segment in key.split("."):
        if not _SEGMENT.match(segment):
            if not segment:
                return offset, "empty key segment"
            if segment.isdigit():
                return offset, f"index {segment!r} has a leading zero or over 9 digits"
            return offset, f"segment {segment!r} is not [a-z_][a-z0-9_]* nor an index"
        offset += len(segment) + 1
    return 0, "malformed key"


def check_limits(text: str | bytes) -> None:
    """Only the limits (and UTF-8), without parsing a line: what a draft save checks.

    A draft may hold text that does not parse yet (its ``spec_ingest`` job reports
    the findings), but never more than a spec may be; linear in the text.
    """
    decoded = _decode(text)
    _check_key_count(decoded.split("\n"))


def parse(text: str | bytes) -> dict[str, Value]:
    """The keys and values of KV text, in text order; ``SpecSyntaxError`` otherwise."""
    return parse_located(text)[0]


def parse_located(text: str | bytes) -> tuple[dict[str, Value], dict[str, int]]:
    """``parse``, plus the 1-based line of each key (to place later findings).

    Every problem found is reported (up to ``MAX_REPORTED``), each with its line
    and column; the limits stop the parse at once. The loop is the hot path of
    ingestion: the common line (a valid key and a plain bare string) costs one
    ``partition``, two ``strip``s and two regex matches; columns are worked out
    only for lines with a problem.
    """
    decoded = _decode(text)
    lines = decoded.split("\n")
    if "\r" in decoded:
        lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    _check_key_count(lines)
    result: dict[str, Value] = {}
    first_line: dict[str, int] = {}
    problems = _Collector()
    key_match = _KEY.match
    control_search = _CONTROL.search
    for number, line in enumerate(lines, 1):
        key_part, equals, value_part = line.partition("=")
        key = key_part.strip(_BLANK)
        if not equals or key[:1] == "#" or not key_match(key):
            if (key and key[0] != "#") or (equals and not key):
                _line_problem(line, key, bool(equals), number, problems)
                if problems.full:
                    break
            continue
        raw = value_part.strip(_BLANK)
        value: Value | None
        if raw and raw[0] not in _NOT_PLAIN and raw not in _KEYWORDS and not control_search(raw):
            value = raw  # a plain bare string: the common case
        else:
            value = _value(raw, key, number, line, problems)
        if key in first_line:
            problems.add(
                "kv_duplicate_key",
                key,
                f"key {key!r} already set on line {first_line[key]}",
                number,
                len(key_part) - len(key_part.lstrip(_BLANK)) + 1,
            )
        else:
            first_line[key] = number
            if value is not None:
                result[key] = value
        if problems.full:
            break
    if problems.found:
        first = problems.found[0]
        more = len(problems.found) - 1
        detail = f"{first.message} (line {first.line}, column {first.column})"
        if more:
            detail += f" and {more} more problem{'s' if more > 1 else ''}"
        raise SpecSyntaxError(detail, problems.found)
    return result, first_line


def _line_problem(line: str, key: str, equals: bool, number: int, problems: _Collector) -> None:
    """A line that is not a comment but has no ``=`` or a malformed key."""
    key_column = len(line) - len(line.lstrip(_BLANK)) + 1
    if not equals:
        problems.add("kv_missing_equals", "", "expected key=value", number, key_column)
        return
    offset, reason = _bad_key_column(key)
    problems.add("kv_bad_key", "", f"bad key: {reason}", number, key_column + offset)


def _value_column(line: str) -> int:
    key_part, _, value_part = line.partition("=")
    return len(key_part) + 2 + len(value_part) - len(value_part.lstrip(_BLANK))


def _value(text: str, key: str, line: int, line_text: str, problems: _Collector) -> Value | None:
    """The value of a line that is not a plain bare string (or a problem, and ``None``)."""
    column = _value_column(line_text) if not text or text[0] in _NOT_PLAIN else 0
    if not text:
        problems.add(
            "kv_empty_value", key, 'empty value (write "" for an empty string)', line, column
        )
        return None
    if text == "true":
        return True
    if text == "false":
        return False
    first = text[0]
    if first == "-" or first.isdigit():
        if _CANONICAL_INT.match(text):
            number = int(text)
            if _INT_MIN <= number <= _INT_MAX:
                return number
            problems.add("kv_bad_integer", key, "integer outside signed 64 bits", line, column)
            return None
        if _INTEGER_SHAPE.match(text):
            problems.add(
                "kv_bad_integer",
                key,
                "integer with a leading zero, -0, or over 19 digits",
                line,
                column,
            )
            return None
    if first == '"':
        quoted = _QUOTED.match(text)
        if quoted is None:
            problems.add("kv_bad_string", key, _quoted_problem(text), line, column)
            return None
        body = quoted.group(1)
        if "\\" not in body:
            return body
        unescaped = _ESCAPE.sub(_unescape, body)
        if _SURROGATE.search(unescaped):
            problems.add("kv_bad_string", key, "a \\u escape names a surrogate", line, column)
            return None
        return unescaped
    control = _CONTROL.search(text)
    if control is not None:
        problems.add(
            "kv_bad_string",
            key,
            f"control character U+{ord(control.group(0)):04X} in a bare value (quote it)",
            line,
            _value_column(line_text) + control.start(),
        )
        return None
    return text


def _quoted_problem(text: str) -> str:
    """Why a value starting with ``"`` is not a quoted string (first problem, left to right)."""
    body = text[1:]
    index = 0
    while index < len(body):
        char = body[index]
        if char == "\\":
            escape = _ESCAPE_BODY.match(body, index + 1)
            if escape is None:
                return 'unknown escape (use \\\\, \\", \\n, \\r, \\t or \\uXXXX)'
            index = escape.end()
            continue
        if char == '"':
            return "text after the closing quote"
        if _CONTROL.match(char):
            return f"control character U+{ord(char):04X} in a quoted string (escape it)"
        index += 1
    return "unterminated quoted string"


@functools.lru_cache(maxsize=4096)
def _segment_order(segment: str) -> tuple[int, int, str]:
    return (0, int(segment), "") if segment.isdigit() else (1, 0, segment)


def sort_key(key: str) -> tuple[tuple[int, int, str], ...]:
    """Canonical order: segment by segment, indices by value before names."""
    return tuple(map(_segment_order, key.split(".")))


def _encode_value(value: Value) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise ValueError(f"integer {value} is outside signed 64 bits")
        return str(value)
    if (
        value
        and value[0] not in '" \t'
        and value[-1] not in _BLANK
        and value not in ("true", "false")
        and not _INTEGER_SHAPE.match(value)
        and not _CONTROL.search(value)
    ):
        return value
    return '"' + _NEEDS_ESCAPE.sub(_escape, value) + '"'


def encode(entries: Mapping[str, Value]) -> bytes:
    """The canonical UTF-8 bytes of a mapping; ``ValueError`` for what cannot be written.

    Keys must be valid KV keys (two spellings of one index cannot occur), values
    booleans, int64 integers or strings without lone surrogates.
    """
    for key in entries:
        if not _KEY.match(key):
            raise ValueError(f"invalid spec key {key!r}")
    if len(entries) > MAX_KEYS:
        raise ValueError(f"{len(entries)} keys, over the limit of {MAX_KEYS}")
    return write_ordered([(key, entries[key]) for key in sorted(entries, key=sort_key)])


def write_ordered(items: Iterable[tuple[str, Value]]) -> bytes:
    """``key=value`` lines for items already valid and in canonical order (not checked).

    For producers that emit keys in canonical order by construction (lowering);
    ``encode`` is the checked entry point. The plain-string test mirrors the
    parser's fast path: such a string can never read back as anything else.
    """
    control = _CONTROL.search
    parts = []
    for key, value in items:
        if (
            type(value) is str
            and value
            and value[0] not in _NOT_BARE_FIRST
            and value[-1] not in _BLANK
            and value not in _KEYWORDS
            and not control(value)
        ):
            parts.append(f"{key}={value}\n")
        else:
            parts.append(f"{key}={_encode_value(value)}\n")
    try:
        return "".join(parts).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"a value holds a lone surrogate: {exc}") from None


def spec_hash(canonical: bytes) -> str:
    """``sha256:`` + hex SHA-256 of the canonical bytes."""
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


def canonicalize(text: str | bytes) -> bytes:
    """The canonical bytes of KV text (``SpecSyntaxError`` if it does not parse)."""
    return encode(parse(text))


def is_canonical(text: bytes) -> bool:
    """Whether ``text`` is already the canonical form of what it says."""
    try:
        return canonicalize(text) == text
    except (SpecSyntaxError, ValueError):
        return False
