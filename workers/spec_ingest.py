"""The ``spec_ingest`` job: validate and lower a saved draft revision, record the result.

Payload: ``{"draft_id": ..., "revision": n}``, queued in the same append as the
revision (commands/drafts.py). The handler folds the draft, and if revision
``n`` is still the one whose input the draft holds, appends
``draft.validated`` (``valid`` with ``spec_hash`` and capabilities, or
``invalid`` with diagnostics) at the stream version it read.

Idempotent under redelivery and races (domain.draft.record_validation):
a duplicate delivery finds the validation recorded and appends nothing; a job
for a revision that was superseded, or a deleted draft, appends nothing (the
newer revision has its own job); a concurrent append (a rename, a version cut)
moves the stream, so the handler reads again and decides again.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Final

import msgspec

from commands.pgstore import PgEventStore, StorePool
from commands.store import ConcurrencyError, EventStore
from domain import draft as draft_mod
from domain.codec import EventCodec, default_codec
from domain.envelope import Actor, Metadata, StreamAppend
from workers.consumer import Handler, JobContext
from workers.errors import Permanent

log = logging.getLogger("byteor.jobs.spec_ingest")

JOB_TYPE: Final = draft_mod.SPEC_INGEST
WORKER = Actor(kind="system", id="byteor-worker")
TRIES: Final = 5


class Payload(msgspec.Struct, frozen=True, kw_only=True):
    draft_id: uuid.UUID
    revision: int


def payload_of(draft_id: uuid.UUID, revision: int) -> dict[str, Any]:
    return {"draft_id": str(draft_id), "revision": revision}


class SpecIngest:
    """The handler, bound to the event store it reads drafts from and appends to."""

    def __init__(self, store: EventStore, codec: EventCodec | None = None) -> None:
        self.store = store
        self.codec = codec or default_codec()

    async def __call__(self, ctx: JobContext) -> dict[str, Any] | None:
        try:
            payload = msgspec.convert(ctx.payload, Payload)
        except msgspec.ValidationError as exc:
            raise Permanent(f"not a spec_ingest payload: {exc}") from None
        for _ in range(TRIES):
            records = await self.store.read_stream(draft_mod.stream_id(payload.draft_id))
            state = draft_mod.fold(self.codec.decode_recorded(r) for r in records)
            if state is None or state.status != "active":
                return {"outcome": "draft_gone"}
            if state.input_revision != payload.revision:
                return {"outcome": "superseded", "current": state.input_revision}
            done = state.validation
            if done.status != "pending" and done.revision == payload.revision:
                return {"outcome": "recorded_already", "status": done.status}
            result, _ = draft_mod.validation_of(state)
            events = draft_mod.record_validation(state, payload.revision, result, job_id=ctx.job_id)
            if not events:
                return {"outcome": "recorded_already", "status": state.validation.status}
            last = records[-1]
            meta = Metadata(
                actor=WORKER,
                tenant_id=last.tenant_id,
                correlation_id=records[0].correlation_id,
                causation_id=last.event_id,
            )
            append = StreamAppend(
                stream_id=draft_mod.stream_id(state.id),
                stream_type=draft_mod.STREAM_TYPE,
                expected_version=last.stream_version,
                events=tuple(self.codec.encode(e) for e in events),
            )
            try:
                await self.store.append([append], meta)
            except ConcurrencyError:
                continue  # the draft moved on: decide again on what it is now
            return {
                "outcome": result.status,
                "spec_hash": result.spec_hash,
                "diagnostics": len(result.diagnostics),
            }
        # Retryable (any other exception is): the stream kept moving under us.
        raise RuntimeError(f"draft {payload.draft_id} kept changing while recording")


def spec_ingest_handler(pool: StorePool) -> Handler:
    """The handler on the worker's pool (ops/processes.py POOL_HANDLERS)."""
    return SpecIngest(PgEventStore(pool))
