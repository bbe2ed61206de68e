"""Adapters of a config bundle and their secret references (DOMAIN.md §5).

An adapter is ``{name, family, endpoint, secretRefs}``. Authentication material
lives only in ``secretRefs``: an endpoint that carries a secret is rejected, so
plaintext can never reach an event, a read table or a response through it.

``check_adapters(data, findings)`` validates the raw JSON of ``adapters`` and
returns ``UnsealedAdapter``s whose inline secrets are ``Plaintext``; the write
side encrypts those (AES-256-GCM, outside ``domain/``) and ``seal`` turns them
into ``Adapter``s holding only ``InlineRef(key_id, ciphertext)``. ``Plaintext``
is not a msgspec type, so an unsealed adapter cannot be encoded into an event
by mistake, and its ``repr`` never shows the value.

==========================  ==========================================================
code                        rule (path under ``/adapters/<i>``)
==========================  ==========================================================
adapters_not_array          ``adapters`` is a JSON array (path ``/adapters``)
adapters_too_many           at most 64 adapters
adapter_not_object          an adapter is a JSON object
adapter_unknown_key         only ``name``, ``family``, ``endpoint``, ``secretRefs``
adapter_missing_key         ``name``, ``family`` and ``endpoint`` are required
adapter_name_invalid        1..64 of ``[A-Za-z0-9_.-]``
adapter_name_duplicate      adapter names are unique within a bundle
adapter_family_invalid      one of ``FAMILIES``
adapter_endpoint_invalid    a string (or an object with a string ``url`` and scalar
                            fields) of the family's form (``ENDPOINT_FORMS``)
adapter_secret_in_endpoint  a URL password, or a query parameter or endpoint field
                            named like a secret (``/endpoint`` or ``/endpoint/<field>``)
secret_refs_not_object      ``secretRefs`` is a JSON object (at most 32 entries)
secret_ref_field_invalid    a ``secretRefs`` key is ``[A-Za-z_][A-Za-z0-9_]{0,63}``
secret_ref_not_object       a reference is a JSON object
secret_ref_kind_invalid     ``kind`` is ``inline`` or ``vault``
secret_ref_unknown_key      inline: ``kind``, ``value``; vault: ``kind``, ``mount``,
                            ``path``, ``field``, ``version``
secret_ref_missing_key      inline needs ``value``; vault needs ``mount``, ``path``, ``field``
secret_ref_value_invalid    an inline value is a non-empty string of at most 64 KiB
secret_ref_vault_invalid    mount and path are ``/``-separated segments of
                            ``[A-Za-z0-9_.-]`` (no ``.``/``..``); field is 1..256
                            printable bytes; version an integer >= 1
==========================  ==========================================================

Decisions: a name is "like a secret" when, lower-cased with separators
removed, it contains ``password``, ``passwd``, ``passphrase``, ``secret``,
``token``, ``credential``, ``apikey`` or ``privatekey``, or when one of its words
(split on ``_ - .`` and camelCase) is ``key``, ``pwd``, ``pass`` or ``auth``,
except the data-routing names in ``NOT_SECRET_NAMES``. False positives are
accepted (fail closed): such a value goes into ``secretRefs``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, urlsplit

import msgspec

from domain.findings import Findings, child

Family = Literal[
    "file",
    "http",
    "grpc",
    "websocket",
    "kafka",
    "nats",
    "redis_streams",
    "rabbitmq_streams",
    "s3",
    "postgres",
]
FAMILIES: Final[tuple[Family, ...]] = (
    "file",
    "http",
    "grpc",
    "websocket",
    "kafka",
    "nats",
    "redis_streams",
    "rabbitmq_streams",
    "s3",
    "postgres",
)
# URL schemes each family accepts (decision); ``file`` also takes an absolute
# path and ``kafka`` a bare ``host:port[,host:port…]`` broker list.
ENDPOINT_FORMS: Final[Mapping[Family, tuple[str, ...]]] = {
    "file": ("file",),
    "http": ("http", "https"),
    "grpc": ("grpc", "grpcs", "http", "https"),
    "websocket": ("ws", "wss"),
    "kafka": ("kafka", "kafka+ssl"),
    "nats": ("nats", "tls", "ws", "wss"),
    "redis_streams": ("redis", "rediss"),
    "rabbitmq_streams": ("rabbitmq-stream", "rabbitmq-stream+tls"),
    "s3": ("s3", "http", "https"),
    "postgres": ("postgres", "postgresql"),
}
MAX_ADAPTERS: Final = 64
MAX_SECRET_REFS: Final = 32
MAX_ENDPOINT: Final = 2048
MAX_ENDPOINT_FIELDS: Final = 32
MAX_INLINE_BYTES: Final = 64 * 1024
ADAPTER_KEYS: Final = ("name", "family", "endpoint", "secretRefs")
REQUIRED_KEYS: Final = ("name", "family", "endpoint")
NOT_SECRET_NAMES: Final = frozenset(
    {"routing_key", "partition_key", "shard_key", "sort_key", "key_prefix"}
)

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}(?![\s\S])")
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}(?![\s\S])")
_SEGMENT = re.compile(r"[A-Za-z0-9_.\-]+(?![\s\S])")
_BROKERS = re.compile(r"[A-Za-z0-9.\-]+:[0-9]{1,5}(,[A-Za-z0-9.\-]+:[0-9]{1,5})*(?![\s\S])")
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f-\x9f]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_SECRET_PARTS: Final = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "credential",
    "apikey",
    "privatekey",
)
_SECRET_WORDS: Final = frozenset({"key", "pwd", "pass", "auth"})

EndpointValue = str | int | bool
Endpoint = str | dict[str, EndpointValue]


# --- secret references ---------------------------------------------------------------


class InlineRef(msgspec.Struct, frozen=True, kw_only=True, tag="inline", tag_field="kind"):
    """An inline secret as stored: ciphertext (base64url) and the key that wraps it."""

    key_id: str
    ciphertext: str


class VaultRef(
    msgspec.Struct, frozen=True, kw_only=True, tag="vault", tag_field="kind", omit_defaults=True
):
    """A KV v2 secret, resolved only while a deploy bundle is built."""

    mount: str
    path: str
    field: str
    version: int | None = None


SecretRef = InlineRef | VaultRef


class Plaintext:
    """An inline secret value between request decoding and encryption."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> bytes:
        return self._value.encode()

    def __repr__(self) -> str:
        return "Plaintext(<redacted>)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Plaintext) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class Adapter(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    family: Family
    endpoint: Endpoint
    secret_refs: dict[str, SecretRef] = msgspec.field(default_factory=dict, name="secretRefs")


class UnsealedAdapter(msgspec.Struct, frozen=True, kw_only=True):
    """An adapter as validated: inline secrets still ``Plaintext`` (never encodable)."""

    name: str
    family: Family
    endpoint: Endpoint
    secret_refs: dict[str, Plaintext | VaultRef]


Encrypt = Callable[[bytes, str], InlineRef]
"""Encrypts one inline value; the ``str`` is where it sits (``adapters/<name>/secretRefs/<field>``),
for the caller to bind into the AEAD associated data."""


def seal(adapters: tuple[UnsealedAdapter, ...], encrypt: Encrypt) -> tuple[Adapter, ...]:
    """Every inline value replaced by ``encrypt``'s ciphertext reference."""
    sealed = []
    for adapter in adapters:
        refs: dict[str, SecretRef] = {}
        for field, ref in adapter.secret_refs.items():
            if isinstance(ref, Plaintext):
                where = f"adapters/{adapter.name}/secretRefs/{field}"
                refs[field] = encrypt(ref.reveal(), where)
            else:
                refs[field] = ref
        sealed.append(
            Adapter(
                name=adapter.name,
                family=adapter.family,
                endpoint=adapter.endpoint,
                secret_refs=refs,
            )
        )
    return tuple(sealed)


def public_view(adapter: Adapter) -> dict[str, Any]:
    """The adapter as responses show it: an inline reference shows only its key id."""
    refs: dict[str, Any] = {}
    for field, ref in adapter.secret_refs.items():
        if isinstance(ref, InlineRef):
            refs[field] = {"kind": "inline", "key_id": ref.key_id}
        else:
            refs[field] = msgspec.to_builtins(ref)
    endpoint = adapter.endpoint if isinstance(adapter.endpoint, str) else dict(adapter.endpoint)
    return {
        "name": adapter.name,
        "family": adapter.family,
        "endpoint": endpoint,
        "secretRefs": refs,
    }


def looks_like_secret(name: str) -> bool:
    """Whether a field or parameter name suggests it holds a secret (module docstring)."""
    lowered = name.lower()
    if lowered in NOT_SECRET_NAMES:
        return False
    squashed = re.sub(r"[^a-z0-9]", "", lowered)
    if any(part in squashed for part in _SECRET_PARTS):
        return True
    words = {w.lower() for w in _WORDS.findall(name)}
    return bool(words & _SECRET_WORDS)


# --- validation ----------------------------------------------------------------------


def check_adapters(data: object, findings: Findings) -> tuple[UnsealedAdapter, ...] | None:
    """The validated adapters, or None after adding at least one finding."""
    root = "/adapters"
    if not isinstance(data, list):
        findings.add("adapters_not_array", root, "adapters is a JSON array")
        return None
    if len(data) > MAX_ADAPTERS:
        findings.add("adapters_too_many", root, f"at most {MAX_ADAPTERS} adapters")
        return None
    before = len(findings)
    seen: set[str] = set()
    adapters = []
    for index, item in enumerate(data):
        adapter = _check_adapter(item, child(root, index), seen, findings)
        if adapter is not None:
            adapters.append(adapter)
    if len(findings) > before:
        return None
    return tuple(adapters)


def _check_adapter(
    item: object, path: str, seen: set[str], findings: Findings
) -> UnsealedAdapter | None:
    if not isinstance(item, dict):
        findings.add("adapter_not_object", path, "an adapter is a JSON object")
        return None
    before = len(findings)
    for key in item:
        if key not in ADAPTER_KEYS:
            findings.add(
                "adapter_unknown_key", child(path, key), f"unknown key; allowed: {ADAPTER_KEYS}"
            )
    for key in REQUIRED_KEYS:
        if key not in item:
            findings.add("adapter_missing_key", child(path, key), f"{key} is required")
    name = item.get("name")
    if "name" in item:
        if not isinstance(name, str) or not _NAME.match(name):
            findings.add(
                "adapter_name_invalid", child(path, "name"), "1..64 characters of A-Za-z0-9_.-"
            )
        elif name in seen:
            findings.add("adapter_name_duplicate", child(path, "name"), "adapter names are unique")
        else:
            seen.add(name)
    family = item.get("family")
    known_family = isinstance(family, str) and family in FAMILIES
    if "family" in item and not known_family:
        findings.add("adapter_family_invalid", child(path, "family"), f"one of {FAMILIES}")
    endpoint = item.get("endpoint")
    if "endpoint" in item and known_family:
        _check_endpoint(endpoint, family, child(path, "endpoint"), findings)  # type: ignore[arg-type]
    refs = _check_secret_refs(item.get("secretRefs", {}), child(path, "secretRefs"), findings)
    if len(findings) > before or refs is None:
        return None
    return UnsealedAdapter(
        name=name,  # type: ignore[arg-type]
        family=family,  # type: ignore[arg-type]
        endpoint=endpoint,  # type: ignore[arg-type]
        secret_refs=refs,
    )


def _check_endpoint(value: object, family: Family, path: str, findings: Findings) -> None:
    if isinstance(value, str):
        _check_address(value, family, path, findings)
        return
    if not isinstance(value, dict):
        findings.add(
            "adapter_endpoint_invalid",
            path,
            "a string, or an object with a `url` and scalar fields",
        )
        return
    if len(value) > MAX_ENDPOINT_FIELDS:
        findings.add("adapter_endpoint_invalid", path, f"at most {MAX_ENDPOINT_FIELDS} fields")
        return
    if "url" not in value:
        findings.add("adapter_endpoint_invalid", child(path, "url"), "an endpoint object has a url")
    for field, field_value in value.items():
        at = child(path, field)
        if not _FIELD.match(field):
            findings.add("adapter_endpoint_invalid", at, "field names are [A-Za-z_][A-Za-z0-9_]*")
        elif looks_like_secret(field):
            findings.add(
                "adapter_secret_in_endpoint", at, "secrets belong in secretRefs, not the endpoint"
            )
        elif field == "url":
            if isinstance(field_value, str):
                _check_address(field_value, family, at, findings)
            else:
                findings.add("adapter_endpoint_invalid", at, "url is a string")
        elif not isinstance(field_value, str | int | bool) or (
            isinstance(field_value, str)
            and (not 0 <= _utf8_size(field_value) <= MAX_ENDPOINT or _CONTROL.search(field_value))
        ):
            findings.add(
                "adapter_endpoint_invalid", at, "endpoint fields are strings, integers or booleans"
            )


def _check_address(value: str, family: Family, path: str, findings: Findings) -> None:
    if not 0 < _utf8_size(value) <= MAX_ENDPOINT or _CONTROL_OR_SPACE.search(value):
        findings.add(
            "adapter_endpoint_invalid", path, f"1..{MAX_ENDPOINT} characters, no spaces or controls"
        )
        return
    if family == "kafka" and _BROKERS.match(value):
        return
    if family == "file" and value.startswith("/"):
        if "?" in value:  # a query on a path is a URL someone mistook for a path
            findings.add("adapter_endpoint_invalid", path, "a file path takes no query")
        return
    schemes = ENDPOINT_FORMS[family]
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises on a malformed port)
    except ValueError:
        findings.add("adapter_endpoint_invalid", path, "not a well-formed URL")
        return
    if parts.scheme.lower() not in schemes:
        findings.add(
            "adapter_endpoint_invalid", path, f"a {family} endpoint is a URL with scheme {schemes}"
        )
        return
    if family != "file" and not parts.hostname:
        findings.add("adapter_endpoint_invalid", path, "the URL names a host")
        return
    if parts.password is not None:
        findings.add("adapter_secret_in_endpoint", path, "a URL password belongs in secretRefs")
        return
    for name, _ in parse_qsl(parts.query, keep_blank_values=True):
        if looks_like_secret(name):
            findings.add(
                "adapter_secret_in_endpoint",
                path,
                f"query parameter {name!r} looks like a secret; use secretRefs",
            )
            return


def _check_secret_refs(
    data: object, path: str, findings: Findings
) -> dict[str, Plaintext | VaultRef] | None:
    if not isinstance(data, dict) or len(data) > MAX_SECRET_REFS:
        findings.add(
            "secret_refs_not_object", path, f"a JSON object of at most {MAX_SECRET_REFS} entries"
        )
        return None
    refs: dict[str, Plaintext | VaultRef] = {}
    ok = True
    for field, ref in data.items():
        at = child(path, field)
        if not _FIELD.match(field):
            findings.add("secret_ref_field_invalid", at, "field names are [A-Za-z_][A-Za-z0-9_]*")
            ok = False
            continue
        checked = _check_ref(ref, at, findings)
        if checked is None:
            ok = False
        else:
            refs[field] = checked
    return refs if ok else None


_REF_KEYS: Final[Mapping[str, tuple[str, ...]]] = {
    "inline": ("kind", "value"),
    "vault": ("kind", "mount", "path", "field", "version"),
}
_REF_REQUIRED: Final[Mapping[str, tuple[str, ...]]] = {
    "inline": ("value",),
    "vault": ("mount", "path", "field"),
}


def _check_ref(ref: object, path: str, findings: Findings) -> Plaintext | VaultRef | None:
    if not isinstance(ref, dict):
        findings.add("secret_ref_not_object", path, 'a reference is {"kind": "inline"|"vault", …}')
        return None
    kind = ref.get("kind")
    if not isinstance(kind, str) or kind not in _REF_KEYS:
        findings.add("secret_ref_kind_invalid", child(path, "kind"), "kind is inline or vault")
        return None
    before = len(findings)
    for key in ref:
        if key not in _REF_KEYS[kind]:
            findings.add(
                "secret_ref_unknown_key",
                child(path, key),
                f"a {kind} reference takes only {_REF_KEYS[kind]}",
            )
    for key in _REF_REQUIRED[kind]:
        if key not in ref:
            findings.add("secret_ref_missing_key", child(path, key), f"{key} is required")
    if kind == "inline":
        value = ref.get("value")
        if "value" in ref and not (
            isinstance(value, str) and 0 < _utf8_size(value) <= MAX_INLINE_BYTES
        ):
            findings.add(
                "secret_ref_value_invalid",
                child(path, "value"),
                f"a non-empty string of at most {MAX_INLINE_BYTES} bytes",
            )
        if len(findings) > before:
            return None
        return Plaintext(str(value))
    _check_vault(ref, path, findings)
    if len(findings) > before:
        return None
    return VaultRef(
        mount=ref["mount"], path=ref["path"], field=ref["field"], version=ref.get("version")
    )


def _check_vault(ref: dict[str, Any], path: str, findings: Findings) -> None:
    for key, limit in (("mount", 256), ("path", 1024)):
        if key in ref and not _segments_ok(ref[key], limit):
            findings.add(
                "secret_ref_vault_invalid",
                child(path, key),
                f"{key} is /-separated segments of A-Za-z0-9_.- (no . or ..), at most {limit}",
            )
    field = ref.get("field")
    if "field" in ref and (
        not isinstance(field, str) or not 1 <= _utf8_size(field) <= 256 or _CONTROL.search(field)
    ):
        findings.add(
            "secret_ref_vault_invalid", child(path, "field"), "1..256 printable characters"
        )
    version = ref.get("version")
    if "version" in ref and (
        not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= 2**31
    ):
        findings.add("secret_ref_vault_invalid", child(path, "version"), "an integer >= 1")


def _utf8_size(text: str) -> int:
    """Bytes of ``text`` as UTF-8; -1 when it holds a lone surrogate (not encodable)."""
    try:
        return len(text.encode())
    except UnicodeEncodeError:
        return -1


def _segments_ok(value: object, limit: int) -> bool:
    if not isinstance(value, str) or not 1 <= len(value) <= limit:
        return False
    return all(_SEGMENT.match(s) and s not in (".", "..") for s in value.split("/"))
