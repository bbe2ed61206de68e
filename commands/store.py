"""The event store seen by command handlers: a Protocol and its errors.

Two implementations pass one contract suite (tests/contract): ``PgEventStore``
on asyncpg and ``MemoryEventStore`` for unit tests. Driver exceptions never
cross this boundary; handlers see only the errors below.

    StoreError
    ├── ConcurrencyError     a stream moved on since the caller read it
    ├── DuplicateCommand     the idempotency key was already used (carries the first result)
    └── StoreUnavailable     the database could not be reached or timed out
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec

from domain.envelope import AppendResult, Metadata, RecordedEvent, StreamAppend


class StoredResponse(msgspec.Struct, frozen=True, kw_only=True):
    """The first answer to an idempotent command, replayed for repeats."""

    request_hash: str
    status_code: int
    body: bytes
    last_position: int | None = None


class IdempotencyClaim(msgspec.Struct, frozen=True, kw_only=True):
    """Written with the command's events: (principal, key) -> the response."""

    principal: str
    key: str
    request_hash: str
    status_code: int
    body: bytes


class StoreError(Exception):
    pass


class ConcurrencyError(StoreError):
    def __init__(self, stream_id: str | None, expected_version: int | None) -> None:
        super().__init__(f"stream {stream_id} is not at version {expected_version}")
        self.stream_id = stream_id
        self.expected_version = expected_version


class DuplicateCommand(StoreError):
    def __init__(self, principal: str, key: str) -> None:
        super().__init__(f"idempotency key {key!r} already used by {principal}")
        self.principal = principal
        self.key = key


class StoreUnavailable(StoreError):
    pass


class EventStore(Protocol):
    async def append(
        self,
        appends: Sequence[StreamAppend],
        meta: Metadata,
        *,
        idempotency: IdempotencyClaim | None = None,
    ) -> AppendResult:
        """Append all events atomically, or nothing.

        Raises ConcurrencyError when any stream is not at its expected version,
        DuplicateCommand when the idempotency claim collides with an earlier one.
        """
        ...

    async def read_stream(self, stream_id: str, *, after_version: int = -1) -> list[RecordedEvent]:
        """Events of one stream above ``after_version``, in version order.

        Empty when the stream does not exist. Our aggregates start at version 1;
        -1 (the default) also returns a version 0, which foreign recorders use.
        """
        ...

    async def find_response(self, principal: str, key: str) -> StoredResponse | None:
        """The stored result of an earlier idempotent command, if any."""
        ...
