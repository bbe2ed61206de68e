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
from datetime import UTC, datetime, timedelta
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


class RecordedEvent(msgspec.Struct, frozen=True, gc=False):
    """An event as read back from the store, with its full envelope.

    Positional, fields in ``EVENT_COLUMNS`` order, so a database row becomes
    one with ``RecordedEvent(*row)``: the feed builds hundreds of thousands of
    these per second and keyword construction was a measurable share of it.
    ``gc=False``: its fields are ints, strings, bytes and UUIDs, so it can never
    be part of a reference cycle, and untracked instances keep a page of
    events from triggering garbage collections (~10% of a tail read).
    """

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
    actor_kind: ActorKind
    actor_id: str
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None
    command_id: str | None
    # Microseconds since the Unix epoch, UTC. Kept as an integer because the
    # feed decodes it for every row and a datetime per row cost ~30% of a tail
    # read; ``recorded_at`` builds the datetime when someone asks.
    recorded_us: int

    @property
    def recorded_at(self) -> datetime:
        return to_datetime(self.recorded_us)

    @property
    def actor(self) -> Actor:
        return Actor(kind=self.actor_kind, id=self.actor_id)

    @property
    def cursor(self) -> Cursor:
        return Cursor(transaction_id=self.transaction_id, position=self.position)

    @classmethod
    def from_row(cls, row: Any) -> RecordedEvent:
        """Build from a row selected in ``EVENT_COLUMNS`` order (any indexable DB row)."""
        return cls(*row)


# The column list ``RecordedEvent.from_row`` expects, for every reader of events.
EVENT_COLUMNS = (
    "position, transaction_id, event_id, stream_id, stream_type, stream_version, "
    "event_type, schema_version, payload, tenant_id, actor_kind, actor_id, "
    "correlation_id, causation_id, command_id, recorded_us"
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_datetime(recorded_us: int) -> datetime:
    """The UTC time ``recorded_us`` microseconds after the Unix epoch (``to_us`` reversed)."""
    return _EPOCH + timedelta(microseconds=recorded_us)


def to_us(moment: datetime) -> int:
    """``moment`` as microseconds since the Unix epoch (the store's clock unit)."""
    return (moment - _EPOCH) // timedelta(microseconds=1)


class AppendResult(msgspec.Struct, frozen=True, kw_only=True):
    """What an append returns: the positions written, in order, and their transaction."""

    positions: tuple[int, ...]
    transaction_id: int

    @property
    def last_position(self) -> int:
        return self.positions[-1] if self.positions else 0
