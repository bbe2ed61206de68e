from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

import msgspec
import pytest

from domain import environment, organization, project, user
from domain.codec import (
    CodecError,
    Event,
    EventCodec,
    UnknownEventType,
    UnsupportedSchemaVersion,
    convert_command,
    decode_command,
    default_codec,
)
from domain.envelope import SYSTEM, NewEvent, RecordedEvent, to_us
from domain.errors import InvalidInput

ID = uuid.UUID(int=1)
OTHER = uuid.UUID(int=2)


class WidgetRenamedV1(Event, tag="widget.renamed", frozen=True, kw_only=True):
    """How the event looked when version 1 was written: ``name``."""

    widget_id: uuid.UUID
    name: str


class WidgetRenamed(Event, tag="widget.renamed", frozen=True, kw_only=True):
    """Version 3: ``name`` became ``new_name`` (v2), then ``reason`` was required (v3)."""

    schema_version: ClassVar[int] = 3

    widget_id: uuid.UUID
    new_name: str
    reason: str


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    data = dict(data)
    data["new_name"] = data.pop("name")
    return data


def _v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "reason": "unknown"}


@pytest.fixture
def codec() -> EventCodec:
    codec = EventCodec()
    codec.register(WidgetRenamed)
    codec.register_upcaster("widget.renamed", 1, _v1_to_v2)
    codec.register_upcaster("widget.renamed", 2, _v2_to_v3)
    return codec


SAMPLES: tuple[Event, ...] = (
    organization.OrganizationCreated(org_id=ID, name="Acme", settings={"a": 1, "b": True}),
    organization.OrganizationUpdated(name="Acme 2"),
    organization.OrganizationUpdated(settings={"x": None, "y": "z"}),
    organization.OrganizationDeleted(),
    organization.OrganizationMemberAdded(user_id=ID, role="org_admin"),
    organization.OrganizationMemberRoleChanged(user_id=ID, role="viewer"),
    organization.OrganizationMemberRemoved(user_id=ID),
    project.ProjectCreated(project_id=ID, org_id=OTHER, name="P", description="d"),
    project.ProjectUpdated(description=""),
    project.ProjectDeleted(),
    environment.EnvironmentCreated(
        environment_id=ID,
        org_id=OTHER,
        project_id=OTHER,
        name="prod",
        posture="prod",
        settings=environment.EnvironmentSettings(artifact_retention_days=90),
    ),
    environment.EnvironmentUpdated(posture="staging"),
    environment.EnvironmentDeleted(),
    user.UserCreated(user_id=ID, email="ada@example.com"),
)


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: type(e).__name__)
def test_every_tenancy_event_survives_an_encode_decode_round_trip(event: Event) -> None:
    codec = default_codec()
    new = codec.encode(event)
    assert new.event_type == type(event).__struct_config__.tag
    assert new.schema_version == 1
    assert codec.decode(new.event_type, new.schema_version, new.payload) == event


def test_default_codec_knows_every_tenancy_event_type() -> None:
    assert default_codec().event_types >= {
        "organization.created",
        "organization.updated",
        "organization.deleted",
        "organization.member_added",
        "organization.member_role_changed",
        "organization.member_removed",
        "project.created",
        "project.updated",
        "project.deleted",
        "environment.created",
        "environment.updated",
        "environment.deleted",
        "user.created",
    }


def test_encode_writes_the_tag_and_current_schema_version(codec: EventCodec) -> None:
    event = WidgetRenamed(widget_id=ID, new_name="n", reason="r")
    new = codec.encode(event, event_id=OTHER)
    assert new == NewEvent(
        event_type="widget.renamed", payload=new.payload, schema_version=3, event_id=OTHER
    )
    assert msgspec.json.decode(new.payload) == {
        "type": "widget.renamed",
        "widget_id": str(ID),
        "new_name": "n",
        "reason": "r",
    }


def test_decode_upcasts_an_old_payload_through_every_version(codec: EventCodec) -> None:
    old = msgspec.json.encode(WidgetRenamedV1(widget_id=ID, name="old"))
    assert codec.decode("widget.renamed", 1, old) == WidgetRenamed(
        widget_id=ID, new_name="old", reason="unknown"
    )


def test_decode_upcasts_from_an_intermediate_version(codec: EventCodec) -> None:
    v2 = msgspec.json.encode({"type": "widget.renamed", "widget_id": str(ID), "new_name": "n"})
    assert codec.decode("widget.renamed", 2, v2) == WidgetRenamed(
        widget_id=ID, new_name="n", reason="unknown"
    )


def test_decode_skips_fields_it_does_not_know(codec: EventCodec) -> None:
    payload = msgspec.json.encode(
        {"widget_id": str(ID), "new_name": "n", "reason": "r", "added_later": [1, 2]}
    )
    assert codec.decode("widget.renamed", 3, payload) == WidgetRenamed(
        widget_id=ID, new_name="n", reason="r"
    )


def test_decode_refuses_an_unknown_event_type(codec: EventCodec) -> None:
    with pytest.raises(UnknownEventType) as info:
        codec.decode("widget.exploded", 1, b"{}")
    assert info.value.event_type == "widget.exploded"


def test_decode_refuses_a_schema_version_newer_than_the_code(codec: EventCodec) -> None:
    with pytest.raises(UnsupportedSchemaVersion) as info:
        codec.decode("widget.renamed", 4, b"{}")
    assert (info.value.schema_version, info.value.current) == (4, 3)


def test_decode_refuses_an_old_version_without_an_upcaster() -> None:
    codec = EventCodec()
    codec.register(WidgetRenamed)
    codec.register_upcaster("widget.renamed", 2, _v2_to_v3)
    with pytest.raises(UnsupportedSchemaVersion):
        codec.decode("widget.renamed", 1, b'{"widget_id": "%s", "name": "n"}' % str(ID).encode())


def test_decode_refuses_a_schema_version_below_one(codec: EventCodec) -> None:
    with pytest.raises(UnsupportedSchemaVersion):
        codec.decode("widget.renamed", 0, b"{}")


@pytest.mark.parametrize(
    "payload",
    [b"{not json", b'{"widget_id": "nope", "new_name": "n", "reason": "r"}', b"[]"],
)
def test_decode_reports_a_malformed_payload_as_a_codec_error(
    codec: EventCodec, payload: bytes
) -> None:
    with pytest.raises(CodecError):
        codec.decode("widget.renamed", 3, payload)


def test_decode_reports_a_malformed_old_payload_as_a_codec_error(codec: EventCodec) -> None:
    with pytest.raises(CodecError):
        codec.decode("widget.renamed", 2, b"[1]")


def test_decode_refuses_a_payload_whose_type_field_disagrees(codec: EventCodec) -> None:
    payload = msgspec.json.encode(
        {"type": "widget.other", "widget_id": str(ID), "new_name": "n", "reason": "r"}
    )
    with pytest.raises(CodecError):
        codec.decode("widget.renamed", 3, payload)


def test_decode_recorded_reads_the_envelope_fields(codec: EventCodec) -> None:
    event = WidgetRenamed(widget_id=ID, new_name="n", reason="r")
    new = codec.encode(event)
    rec = RecordedEvent(
        position=7,
        transaction_id=3,
        event_id=OTHER,
        stream_id=f"widget-{ID}",
        stream_type="widget",
        stream_version=1,
        event_type=new.event_type,
        schema_version=new.schema_version,
        payload=new.payload,
        tenant_id=None,
        actor_kind=SYSTEM.kind,
        actor_id=SYSTEM.id,
        correlation_id=OTHER,
        causation_id=None,
        command_id=None,
        recorded_us=to_us(datetime(2025, 1, 1, tzinfo=UTC)),
    )
    assert codec.decode_recorded(rec) == event


def test_encode_refuses_an_unregistered_event_class(codec: EventCodec) -> None:
    with pytest.raises(UnknownEventType):
        codec.encode(WidgetRenamedV1(widget_id=ID, name="n"))


def test_registering_the_same_class_twice_is_harmless(codec: EventCodec) -> None:
    codec.register(WidgetRenamed)
    assert codec.event_class("widget.renamed") is WidgetRenamed


def test_register_refuses_a_second_class_for_a_tag(codec: EventCodec) -> None:
    with pytest.raises(CodecError, match="already registered"):
        codec.register(WidgetRenamedV1)


class Untagged(Event, frozen=True, kw_only=True):
    x: int = 0


class NotDotted(Event, tag="widget", frozen=True, kw_only=True):
    x: int = 0


class Strict(Event, tag="widget.strict", frozen=True, kw_only=True, forbid_unknown_fields=True):
    x: int = 0


class ArrayLike(Event, tag="widget.array", frozen=True, kw_only=True, array_like=True):
    x: int = 0


class Positional(Event, tag="widget.positional", frozen=True):
    x: int


class Mutable(msgspec.Struct, tag="widget.mutable", tag_field="type", kw_only=True):
    schema_version: ClassVar[int] = 1
    x: int = 0


class OtherTagField(msgspec.Struct, tag="widget.kind", tag_field="kind", frozen=True):
    schema_version: ClassVar[int] = 1


class Unversioned(msgspec.Struct, tag="widget.unversioned", tag_field="type", frozen=True):
    pass


@pytest.mark.parametrize(
    ("cls", "reason"),
    [
        (Untagged, "dotted"),
        (NotDotted, "dotted"),
        (Strict, "unknown fields"),
        (ArrayLike, "array_like"),
        (Positional, "kw_only"),
        (Mutable, "frozen"),
        (OtherTagField, "tag_field"),
        (Unversioned, "schema_version"),
    ],
)
def test_register_refuses_event_classes_that_break_the_event_rules(
    cls: type[Event], reason: str
) -> None:
    with pytest.raises(CodecError, match=reason):
        EventCodec().register(cls)


@pytest.mark.parametrize("from_version", [0, 3, 4])
def test_register_upcaster_refuses_versions_outside_the_class_history(from_version: int) -> None:
    codec = EventCodec()
    codec.register(WidgetRenamed)
    with pytest.raises(CodecError, match="outside"):
        codec.register_upcaster("widget.renamed", from_version, _v1_to_v2)


def test_register_upcaster_refuses_a_second_upcaster_for_a_step(codec: EventCodec) -> None:
    with pytest.raises(CodecError, match="exists"):
        codec.register_upcaster("widget.renamed", 1, _v1_to_v2)


def test_register_upcaster_refuses_an_unknown_event_type() -> None:
    with pytest.raises(UnknownEventType):
        EventCodec().register_upcaster("widget.renamed", 1, _v1_to_v2)


# --- commands ---------------------------------------------------------------------


def test_convert_command_builds_a_command_that_satisfies_its_constraints() -> None:
    cmd = convert_command(organization.CreateOrganization, {"name": "Acme"})
    assert cmd == organization.CreateOrganization(name="Acme", settings={})


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({}, "/name"),
        ({"name": "Acme", "colour": "red"}, "/colour"),
        ({"name": 3}, "/name"),
        ({"name": "Acme", "settings": {"k": "x" * 1001}}, "/settings/*"),
        ({"name": "Acme", "settings": {"Bad": 1}}, "/settings"),
    ],
)
def test_convert_command_reports_the_offending_field(data: object, path: str) -> None:
    with pytest.raises(InvalidInput) as info:
        convert_command(organization.CreateOrganization, data)
    assert info.value.code == "invalid_input"
    assert [e.path for e in info.value.errors] == [path]


def test_convert_command_words_pattern_failures_for_people() -> None:
    with pytest.raises(InvalidInput) as info:
        convert_command(organization.CreateOrganization, {"name": " Acme"})
    assert info.value.errors[0].message == (
        "must not contain control characters or start or end with whitespace"
    )


def test_convert_command_reports_nested_paths() -> None:
    with pytest.raises(InvalidInput) as info:
        convert_command(
            environment.CreateEnvironment,
            {"name": "e", "posture": "dev", "settings": {"max_inflight_deployments": 0}},
        )
    assert info.value.errors[0].path == "/settings/max_inflight_deployments"


def test_decode_command_reads_a_json_body() -> None:
    cmd = decode_command(project.CreateProject, b'{"name": "P", "description": "d"}')
    assert cmd == project.CreateProject(name="P", description="d")


def test_decode_command_reports_malformed_json() -> None:
    with pytest.raises(InvalidInput) as info:
        decode_command(project.CreateProject, b'{"name": ')
    assert info.value.code == "malformed_json"


def test_decode_command_reports_a_constraint_violation() -> None:
    with pytest.raises(InvalidInput) as info:
        decode_command(project.CreateProject, b'{"name": ""}')
    assert info.value.errors[0].path == "/name"
