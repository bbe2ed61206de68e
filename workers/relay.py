"""The relay: publishes the event store's feed to NATS JetStream.

Every domain event goes to ``events.<org>.<stream_type>.<event_type>`` (org
``system`` when an event has no tenant) so tenant-scoped NATS permissions can
isolate integration consumers. The relay is a projection whose "read table" is
the JetStream stream: it holds the ``relay`` lease and checkpoint, publishes a
batch, waits for JetStream's acknowledgements, then moves the checkpoint. A
crash between the two republishes the batch; ``Nats-Msg-Id`` = event id lets
JetStream drop those duplicates. NATS down: the checkpoint stays, nothing is
lost, publishing resumes when it is back.

Jobs leave the same way (the outbox: enqueueing is appending ``job.queued``
in the transaction of the domain event that caused it): ``job.queued`` and
``job.requeued`` are also published to ``jobs.<job_type>`` as a
``JobMessage`` with ``Nats-Msg-Id`` = job id (a requeued generation n gets
``<job id>.<n>``, or the duplicate window would swallow it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import msgspec
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import PubAck, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from domain.envelope import RecordedEvent
from schema.pg import Connection
from workers.streams import LOST, JobMessage, ensure_jobs_stream, job_msg_id, job_subject

log = logging.getLogger("byteor.relay")

EVENTS_STREAM = "EVENTS"
EVENTS_SUBJECTS = ["events.>"]
NAME = "relay"


class IntegrationEvent(msgspec.Struct, frozen=True, kw_only=True):
    """The documented integration payload (docs/integration-events.md)."""

    event_id: str
    position: int
    stream_id: str
    stream_type: str
    stream_version: int
    event_type: str
    schema_version: int
    org_id: str | None
    actor: dict[str, str]
    correlation_id: str
    causation_id: str | None
    recorded_at: str
    data: msgspec.Raw


class _JobFields(msgspec.Struct, kw_only=True):
    """The fields of ``job.queued`` / ``job.requeued`` the relay needs (others skipped)."""

    job_type: str
    generation: int = 0


JOB_EVENTS = frozenset({"job.queued", "job.requeued"})


def job_message_of(event: RecordedEvent) -> tuple[str, bytes, str] | None:
    """(subject, body, Nats-Msg-Id) for an event that (re)queues a job, else None."""
    if event.event_type not in JOB_EVENTS:
        return None
    fields = msgspec.json.decode(event.payload, type=_JobFields)
    job_id = event.stream_id.removeprefix("job-")
    queued = event if event.event_type == "job.queued" and event.stream_version == 1 else None
    body = msgspec.json.encode(
        JobMessage(
            job_id=job_id, job_type=fields.job_type, generation=fields.generation, queued=queued
        )
    )
    return job_subject(fields.job_type), body, job_msg_id(job_id, fields.generation)


def subject_of(event: RecordedEvent) -> str:
    org = str(event.tenant_id) if event.tenant_id else "system"
    return f"events.{org}.{event.stream_type}.{event.event_type}"


def message_of(event: RecordedEvent) -> bytes:
    return msgspec.json.encode(
        IntegrationEvent(
            event_id=str(event.event_id),
            position=event.position,
            stream_id=event.stream_id,
            stream_type=event.stream_type,
            stream_version=event.stream_version,
            event_type=event.event_type,
            schema_version=event.schema_version,
            org_id=str(event.tenant_id) if event.tenant_id else None,
            actor={"kind": event.actor.kind, "id": event.actor.id},
            correlation_id=str(event.correlation_id),
            causation_id=str(event.causation_id) if event.causation_id else None,
            recorded_at=event.recorded_at.isoformat(),
            data=msgspec.Raw(event.payload),
        )
    )


async def ensure_events_stream(js: JetStreamContext) -> None:
    config = StreamConfig(
        name=EVENTS_STREAM,
        subjects=EVENTS_SUBJECTS,
        storage=StorageType.FILE,
        duplicate_window=120.0,
    )
    try:
        await js.add_stream(config)
    except BadRequestError:
        await js.update_stream(config)


class JetStreamPublisher:
    """The relay's projection: ``apply`` publishes, ``flush`` waits for every
    acknowledgement; then the runner moves the checkpoint.

    Publishes are pipelined: ``apply`` hands each message to the connection
    without waiting for its ack (one round trip per batch, not per message),
    in feed order, which is the order JetStream stores them in. ``flush``
    fails the batch if any ack is an error or missing after ``ack_timeout_s``;
    the batch is then published again and JetStream drops the copies.
    """

    name: str = NAME
    tables: Sequence[str] = ()

    def __init__(self, js: JetStreamContext, *, ack_timeout_s: float = 5.0) -> None:
        self.js = js
        self.ack_timeout_s = ack_timeout_s
        self._acks: list[asyncio.Future[PubAck]] = []

    def handles(self, event_type: str) -> bool:
        return True

    async def apply(self, conn: Connection, event: RecordedEvent) -> None:
        job = job_message_of(event)
        if job is not None:
            subject, body, msg_id = job
            await self._publish(subject, body, msg_id)
        await self._publish(subject_of(event), message_of(event), str(event.event_id))

    async def flush(self) -> None:
        acks, self._acks = self._acks, []
        if not acks:
            return
        try:
            await asyncio.wait_for(asyncio.gather(*acks), self.ack_timeout_s)
        except LOST:
            # NATS came back without its streams: put them back; the runner
            # retries the batch.
            with contextlib.suppress(Exception):
                await ensure_events_stream(self.js)
                await ensure_jobs_stream(self.js)
            raise
        finally:
            for ack in acks:
                ack.cancel()  # a no-op for the settled ones

    async def _publish(self, subject: str, body: bytes, msg_id: str) -> None:
        ack = await self.js.publish_async(subject, body, headers={"Nats-Msg-Id": msg_id})
        self._acks.append(ack)


async def connect_jetstream(url: str) -> tuple[NATS, JetStreamContext]:
    nc = NATS()
    await nc.connect(
        servers=[url],
        name="byteor-relay",
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        connect_timeout=2,
    )
    js = nc.jetstream()
    await ensure_events_stream(js)
    await ensure_jobs_stream(js)
    return nc, js


async def wait_for_nats(url: str, stop: asyncio.Event) -> tuple[NATS, JetStreamContext] | None:
    delay = 0.5
    while not stop.is_set():
        try:
            return await connect_jetstream(url)
        except Exception as exc:  # connection refused, timeouts: keep trying
            log.warning("NATS not reachable, retrying: %s", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
    return None
