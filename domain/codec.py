"""Encoding and decoding of domain events, and strict decoding of commands.

Events are frozen msgspec structs tagged with a stable dotted name
(``organization.created``) in the ``type`` field. The tag, never a class path,
is what the store records as ``event_type``, so classes may move or be renamed
freely. Rules every registered event class must follow (checked by
``EventCodec.register``):

- ``frozen=True``, ``kw_only=True`` (not inherited: repeat it on every class);
- an explicit dotted ``tag`` and ``tag_field="type"`` (inherited from ``Event``);
- never ``forbid_unknown_fields`` nor ``array_like``: an old reader must skip a
  field added later, and fields added later get defaults;
- ``schema_version`` (a ClassVar, default 1) is bumped when a change is not
  backwards compatible (rename, type change); an upcaster registered for
  ``(event_type, n)`` turns a version-n payload dict into version n+1.

Stored events are never rewritten: old payloads are upcast on every read. The
current-version path is the hot one (projection replay) and goes straight
through one cached typed decoder per event type.

Decoding a command (request body or CLI input) goes through ``decode_command``
or ``convert_command``: that is the only place msgspec checks ``Meta``
constraints, and it reports failures as ``InvalidInput`` with field paths.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import msgspec

from domain.envelope import NewEvent, RecordedEvent
from domain.errors import FieldError, InvalidInput

__all__ = [
    "CODEC",
    "CodecError",
    "Event",
    "EventCodec",
    "UnknownEventType",
    "UnsupportedSchemaVersion",
    "Upcaster",
    "convert_command",
    "decode_command",
    "default_codec",
    "event_type_of",
    "register_pattern_hint",
]

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
C = TypeVar("C", bound=msgspec.Struct)

_TAG = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every domain event: business facts only, no envelope fields."""

    schema_version: ClassVar[int] = 1


class CodecError(Exception):
    """An event cannot be encoded or decoded: a deployment or data problem, not a client error."""


class UnknownEventType(CodecError):
    """No event class is registered under this tag."""

    def __init__(self, event_type: str) -> None:
        super().__init__(f"unknown event type {event_type!r}")
        self.event_type = event_type


class UnsupportedSchemaVersion(CodecError):
    """A payload's schema version is newer than this code knows, or no upcaster path exists."""

    def __init__(self, event_type: str, schema_version: int, current: int) -> None:
        super().__init__(
            f"cannot read {event_type!r} schema version {schema_version} (current is {current})"
        )
        self.event_type = event_type
        self.schema_version = schema_version
        self.current = current


def event_type_of(cls: type[Event]) -> str:
    """The dotted tag of an event class."""
    tag = cls.__struct_config__.tag
    if not isinstance(tag, str):
        raise CodecError(f"{cls.__qualname__} has no string tag")
    return tag


class EventCodec:
    """A registry of event classes by tag, with upcasters for old schema versions."""

    def __init__(self) -> None:
        self._classes: dict[str, type[Event]] = {}
        self._decoders: dict[str, msgspec.json.Decoder[Any]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        self._encoder = msgspec.json.Encoder()

    def register(self, *event_classes: type[Event]) -> None:
        """Register event classes; registering the same class twice is a no-op."""
        for cls in event_classes:
            tag = _checked_tag(cls)
            known = self._classes.get(tag)
            if known is cls:
                continue
            if known is not None:
                raise CodecError(
                    f"tag {tag!r} already registered to {known.__qualname__}, "
                    f"not {cls.__qualname__}"
                )
            self._classes[tag] = cls
            self._decoders[tag] = msgspec.json.Decoder(cls)

    def register_upcaster(self, event_type: str, from_version: int, fn: Upcaster) -> None:
        """Register ``fn`` turning a version ``from_version`` payload into ``from_version + 1``."""
        cls = self.event_class(event_type)
        if not 1 <= from_version < cls.schema_version:
            raise CodecError(
                f"upcaster for {event_type!r} from version {from_version} is outside "
                f"1..{cls.schema_version - 1}"
            )
        key = (event_type, from_version)
        if key in self._upcasters:
            raise CodecError(f"upcaster for {event_type!r} from version {from_version} exists")
        self._upcasters[key] = fn

    def event_class(self, event_type: str) -> type[Event]:
        try:
            return self._classes[event_type]
        except KeyError:
            raise UnknownEventType(event_type) from None

    @property
    def event_types(self) -> frozenset[str]:
        return frozenset(self._classes)

    def encode(self, event: Event, *, event_id: uuid.UUID | None = None) -> NewEvent:
        """The event as a store-ready ``NewEvent`` (payload is JSON including ``type``)."""
        cls = type(event)
        tag = event_type_of(cls)
        if self._classes.get(tag) is not cls:
            raise UnknownEventType(tag)
        return NewEvent(
            event_type=tag,
            payload=self._encoder.encode(event),
            schema_version=cls.schema_version,
            event_id=event_id,
        )

    def decode(self, event_type: str, schema_version: int, payload: bytes) -> Event:
        """The event object for a stored payload, upcast if its version is old."""
        decoder = self._decoders.get(event_type)
        if decoder is None:
            raise UnknownEventType(event_type)
        cls = self._classes[event_type]
        current = cls.schema_version
        try:
            if schema_version == current:
                event: Event = decoder.decode(payload)
                return event
            if not 1 <= schema_version < current:
                raise UnsupportedSchemaVersion(event_type, schema_version, current)
            data = msgspec.json.decode(payload)
            if not isinstance(data, dict):
                raise CodecError(f"{event_type!r} payload is not a JSON object")
            for version in range(schema_version, current):
                upcast = self._upcasters.get((event_type, version))
                if upcast is None:
                    raise UnsupportedSchemaVersion(event_type, schema_version, current)
                data = upcast(data)
            return msgspec.convert(data, cls)
        except msgspec.DecodeError as exc:  # ValidationError is a DecodeError subclass
            raise CodecError(
                f"cannot decode {event_type!r} version {schema_version}: {exc}"
            ) from exc

    def decode_recorded(self, rec: RecordedEvent) -> Event:
        return self.decode(rec.event_type, rec.schema_version, rec.payload)


def _checked_tag(cls: type[Event]) -> str:
    config = cls.__struct_config__
    tag = event_type_of(cls)
    problems = []
    if not _TAG.match(tag):
        problems.append(f"tag {tag!r} is not dotted lower_snake (e.g. 'organization.created')")
    if config.tag_field != "type":
        problems.append("tag_field must be 'type'")
    if not config.frozen:
        problems.append("must be frozen")
    if config.forbid_unknown_fields:
        problems.append("must not forbid unknown fields")
    if config.array_like:
        problems.append("must not be array_like")
    if cls.__match_args__:  # kw_only fields are left out of __match_args__
        problems.append("must be kw_only")
    version = getattr(cls, "schema_version", None)
    if not isinstance(version, int) or version < 1:
        problems.append("schema_version must be an int >= 1 (subclass Event for the default)")
    if problems:
        raise CodecError(f"{cls.__qualname__}: " + "; ".join(problems))
    return tag


CODEC = EventCodec()
"""The process-wide registry. Aggregate modules register their events on import;
call ``default_codec()`` to be sure every aggregate module has been imported."""


def default_codec() -> EventCodec:
    """``CODEC`` with every aggregate's events registered.

    The imports are here, not at module top, because the aggregate modules import
    this one for ``Event`` and ``CODEC``. Add each new aggregate module below.
    """
    from domain import (  # noqa: F401
        agent,
        approval,
        audit,
        config_bundle,
        deployment,
        draft,
        enrollment,
        environment,
        job,
        organization,
        project,
        signing_key,
        user,
        version,
    )

    return CODEC


# --- commands -----------------------------------------------------------------

_PATTERN_HINTS: dict[str, str] = {}


def register_pattern_hint(pattern: str, hint: str) -> None:
    """Say in words what a ``Meta(pattern=...)`` means, for validation messages."""
    _PATTERN_HINTS[pattern] = hint


_LOCATED = re.compile(r"^(?P<message>.*?) - at `(?:key` in `)?(?P<path>\$[^`]*)`$", re.DOTALL)
_FIELD_NAMED = re.compile(r"^Object (?:missing required|contains unknown) field `(?P<field>[^`]+)`")
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")


def _pointer(json_path: str) -> str:
    """``$.settings[0].name`` → ``/settings/0/name``; a dict value (``[...]``) → ``*``."""
    parts = [
        name if name else ("*" if index == "..." else index)
        for name, index in _PATH_PART.findall(json_path[1:])
    ]
    return "/" + "/".join(parts) if parts else ""


def _invalid(cls: type[msgspec.Struct], exc: msgspec.ValidationError) -> InvalidInput:
    text = str(exc)
    located = _LOCATED.match(text)
    message, path = (located["message"], _pointer(located["path"])) if located else (text, "")
    if message.startswith("Expected `str` matching regex"):
        for pattern, hint in _PATTERN_HINTS.items():
            if repr(pattern) in message:
                message = hint
                break
    named = _FIELD_NAMED.match(message)
    if named:
        path = f"{path}/{named['field']}"
    return InvalidInput(
        f"invalid {cls.__name__}: {text}",
        code="invalid_input",
        errors=(FieldError(path or "/", message),),
        context={"command": cls.__name__},
    )


def convert_command(cls: type[C], data: object) -> C:
    """Build a strict command from already-parsed data, checking every constraint."""
    try:
        return msgspec.convert(data, cls)
    except msgspec.ValidationError as exc:
        raise _invalid(cls, exc) from None


def decode_command(cls: type[C], body: bytes) -> C:
    """Build a strict command from a JSON request body, checking every constraint."""
    try:
        return msgspec.json.decode(body, type=cls)
    except msgspec.ValidationError as exc:
        raise _invalid(cls, exc) from None
    except msgspec.DecodeError as exc:
        raise InvalidInput(
            f"malformed JSON: {exc}",
            code="malformed_json",
            errors=(FieldError("/", str(exc)),),
            context={"command": cls.__name__},
        ) from None
