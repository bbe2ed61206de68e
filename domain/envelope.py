"""The envelope every stored event travels in.

Domain events hold business facts only (see the aggregate modules); the store
wraps them in this envelope: who did it (actor), for which tenant, as part of
which request (correlation, causation, command id), where it sits (stream,
version, global position, transaction) and when it was recorded.

These are plain data shared by the write side, the projections and the workers,
which may not import one another; hence they live in the pure domain package.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

import msgspec

ActorKind = Literal["user", "token", "api_key", "agent", "system"]


class Actor(msgspec.Struct, frozen=True, kw_only=True):
    """Who caused an event; recorded on every row of the audit log."""

    kind: ActorKind
    id: str


SYSTEM = Actor(kind="system", id="byteor-cloud")


class Metadata(msgspec.Struct, frozen=True, kw_only=True):
    """Per-command envelope fields the store copies onto each event it appends."""

    actor: Actor
    tenant_id: uuid.UUID | None
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None = None
    command_id: str | None = None
    recorded_at: datetime | None = None


class NewEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event ready to append: its type tag, schema version and encoded payload."""

    event_type: str
    payload: bytes
    schema_version: int = 1
    event_id: uuid.UUID | None = None


class StreamAppend(msgspec.Struct, frozen=True, kw_only=True):
    """Events for one stream, written at versions expected_version+1, +2, ...

    expected_version is the version the caller's decision was based on: 0 for a
    stream that must not exist yet. The unique (stream_id, stream_version) index
    turns a stale expectation into a conflict.
    """

    stream_id: str
    stream_type: str
    expected_version: int
    events: tuple[NewEvent, ...]


class Cursor(msgspec.Struct, frozen=True, kw_only=True, order=True):
    """A point in the commit-ordered feed: (transaction id, position).

    Feed order is by the writing transaction's id, then position. Readers only
    read transactions below the oldest still-running transaction id, so no
    transaction can later commit "behind" a cursor (see docs/decisions/0002).
    """

    transaction_id: int = 0
    position: int = 0


START = Cursor()


class RecordedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event as read back from the store, with its full envelope."""

    position: int
    transaction_id: int
    event_id: uuid.UUID
    stream_id: str
    stream_type: str
    stream_version: int
    event_type: str
    schema_version: int
    payload: bytes
    tenant_id: uuid.UUID | None
    actor: Actor
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None
    command_id: str | None
    recorded_at: datetime

    @property
    def cursor(self) -> Cursor:
        return Cursor(transaction_id=self.transaction_id, position=self.position)

    @classmethod
    def from_row(cls, row: Any) -> RecordedEvent:
        """Build from a row selected in ``EVENT_COLUMNS`` order (any indexable DB row)."""
        return cls(
            position=row[0],
            transaction_id=row[1],
            event_id=row[2],
            stream_id=row[3],
            stream_type=row[4],
            stream_version=row[5],
            event_type=row[6],
            schema_version=row[7],
            payload=row[8],
            tenant_id=row[9],
            actor=Actor(kind=row[10], id=row[11]),
            correlation_id=row[12],
            causation_id=row[13],
            command_id=row[14],
            recorded_at=row[15],
        )


# The column list ``RecordedEvent.from_row`` expects, for every reader of events.
EVENT_COLUMNS = (
    "position, transaction_id, event_id, stream_id, stream_type, stream_version, "
    "event_type, schema_version, payload, tenant_id, actor_kind, actor_id, "
    "correlation_id, causation_id, command_id, recorded_at"
)


class AppendResult(msgspec.Struct, frozen=True, kw_only=True):
    """What an append returns: the positions written, in order, and their transaction."""

    positions: tuple[int, ...]
    transaction_id: int

    @property
    def last_position(self) -> int:
        return self.positions[-1] if self.positions else 0
