"""An in-memory event store for unit tests, held to the same contract suite.

It also offers the feed methods that projections read (``read_after``), so a
projection can be tested against it without a database. Every append commits
at once, so its horizon is always the latest transaction.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from commands.store import (
    ConcurrencyError,
    DuplicateCommand,
    IdempotencyClaim,
    StoredResponse,
)
from domain.envelope import (
    AppendResult,
    Cursor,
    Metadata,
    RecordedEvent,
    StreamAppend,
    to_us,
)


class MemoryEventStore:
    def __init__(self) -> None:
        self.events: list[RecordedEvent] = []
        self._streams: dict[str, list[RecordedEvent]] = {}
        self._responses: dict[tuple[str, str], StoredResponse] = {}
        self._tx = 1000
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()

    async def append(
        self,
        appends: Sequence[StreamAppend],
        meta: Metadata,
        *,
        idempotency: IdempotencyClaim | None = None,
    ) -> AppendResult:
        async with self._lock:
            for append in appends:
                stream = self._streams.get(append.stream_id, [])
                top = stream[-1].stream_version if stream else None
                missing = append.expected_version > 0 and (
                    top is None or top < append.expected_version
                )
                collides = bool(append.events) and top is not None and top > append.expected_version
                if missing or collides:
                    raise ConcurrencyError(append.stream_id, append.expected_version)
            if (
                idempotency is not None
                and (idempotency.principal, idempotency.key) in self._responses
            ):
                raise DuplicateCommand(idempotency.principal, idempotency.key)
            self._tx += 1
            now = meta.recorded_at or datetime.now(UTC)
            written: list[RecordedEvent] = []
            for append in appends:
                for offset, event in enumerate(append.events, start=1):
                    written.append(
                        RecordedEvent(
                            position=len(self.events) + len(written) + 1,
                            transaction_id=self._tx,
                            event_id=event.event_id or uuid.uuid4(),
                            stream_id=append.stream_id,
                            stream_type=append.stream_type,
                            stream_version=append.expected_version + offset,
                            event_type=event.event_type,
                            schema_version=event.schema_version,
                            payload=event.payload,
                            tenant_id=meta.tenant_id,
                            actor_kind=meta.actor.kind,
                            actor_id=meta.actor.id,
                            correlation_id=meta.correlation_id,
                            causation_id=meta.causation_id,
                            command_id=meta.command_id,
                            recorded_us=to_us(now),
                        )
                    )
            for rec in written:
                self.events.append(rec)
                self._streams.setdefault(rec.stream_id, []).append(rec)
            if idempotency is not None:
                self._responses[(idempotency.principal, idempotency.key)] = StoredResponse(
                    request_hash=idempotency.request_hash,
                    status_code=idempotency.status_code,
                    body=idempotency.body,
                    last_position=written[-1].position if written else None,
                )
            self._changed.set()
            return AppendResult(
                positions=tuple(r.position for r in written), transaction_id=self._tx
            )

    async def read_stream(self, stream_id: str, *, after_version: int = -1) -> list[RecordedEvent]:
        return [e for e in self._streams.get(stream_id, ()) if e.stream_version > after_version]

    async def find_response(self, principal: str, key: str) -> StoredResponse | None:
        return self._responses.get((principal, key))

    # -- feed (read by projections and the relay) --------------------------------

    async def read_after(self, cursor: Cursor, limit: int) -> list[RecordedEvent]:
        out = [e for e in self.events if e.cursor > cursor]
        return out[:limit]

    async def wait_for_change(self, max_wait: float) -> None:
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), max_wait)
        except TimeoutError:
            return
