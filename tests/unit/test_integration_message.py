"""The integration message's documented shape (docs/integration-events.md)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from domain.envelope import RecordedEvent, to_us
from workers.relay import message_of, subject_of

ORG = uuid.UUID("0b7f6c1e-3c3a-4b0e-9d55-2f8a1c7e9b10")
EVENT = uuid.UUID("6c1ce350-1981-41da-97b2-19dd0166622e")
CORRELATION = uuid.UUID("a765696c-5e0c-48de-ba61-c414111756cc")
CAUSATION = uuid.UUID("fe1ec088-3b73-49c4-8622-e292490097f5")
AT = datetime(2026, 12, 4, 10, 15, 0, 123_456, tzinfo=UTC)


def recorded(
    *, tenant: uuid.UUID | None, causation: uuid.UUID | None, at: datetime
) -> RecordedEvent:
    return RecordedEvent(
        7, 9, EVENT, "project-1", "project", 2, "project.renamed", 1, b'{"name":"b"}',
        tenant, "user", "u-1", CORRELATION, causation, "cmd-1", to_us(at),
    )  # fmt: skip


def test_every_documented_field_in_its_documented_form() -> None:
    body = json.loads(message_of(recorded(tenant=ORG, causation=CAUSATION, at=AT)))
    assert body == {
        "event_id": str(EVENT),
        "position": 7,
        "stream_id": "project-1",
        "stream_type": "project",
        "stream_version": 2,
        "event_type": "project.renamed",
        "schema_version": 1,
        "org_id": str(ORG),
        "actor": {"kind": "user", "id": "u-1"},
        "correlation_id": str(CORRELATION),
        "causation_id": str(CAUSATION),
        "recorded_at": "2026-12-04T10:15:00.123456Z",
        "data": {"name": "b"},
    }
    assert datetime.fromisoformat(body["recorded_at"]) == AT


def test_system_events_have_null_org_and_causation_and_a_whole_second_time() -> None:
    event = recorded(tenant=None, causation=None, at=AT.replace(microsecond=0))
    body = json.loads(message_of(event))
    assert body["org_id"] is None and body["causation_id"] is None
    assert body["recorded_at"] == "2026-12-04T10:15:00Z"
    assert subject_of(event) == "events.system.project.project.renamed"
