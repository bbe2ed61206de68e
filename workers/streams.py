"""JetStream streams and consumers for jobs, as data, applied idempotently at start.

    JOBS                 jobs.<type>      file storage; the relay publishes each
                                          job.queued (and job.requeued) here,
                                          Nats-Msg-Id = job id (+ generation)
      └─ jobs_<type>     durable pull consumer per job type
    JOB_DEAD_LETTERS     $JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>
                                          file storage; captures the advisory
                                          NATS sends when a message ran out of
                                          deliveries, so a dead letter is kept
                                          even while no listener runs
      └─ dead_letters    durable pull consumer for the advisory listener

Timing, deliberately (nats-server semantics):

- ``max_deliver`` is the job type's attempt budget, so JetStream's delivery
  count is the attempt number.
- A failed attempt is retried by ``nak(delay=backoff.delay(n))``: an explicit
  delay. A plain ``nak`` would redeliver at once and ignore ``backoff``.
- ``backoff`` only paces redeliveries after an ack timeout (a worker that died
  or stalled), and when set it *replaces* ``ack_wait`` as the ack timeout of
  redeliveries. Each entry is therefore at least ``ack_wait``, so the
  heartbeat interval the consume loop derives from ``ack_wait`` (a third of
  it, via ``in_progress``) is short enough for every delivery.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Annotated

import msgspec
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import (
    BadRequestError,
    NoStreamResponseError,
    NotFoundError,
    ServiceUnavailableError,
)

from domain.backoff import Backoff
from domain.envelope import RecordedEvent

log = logging.getLogger("byteor.jobs")

JOBS_STREAM = "JOBS"
JOBS_SUBJECT_PREFIX = "jobs"
DEAD_LETTER_STREAM = "JOB_DEAD_LETTERS"
MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"
DEAD_LETTER_CONSUMER = "dead_letters"
DUPLICATE_WINDOW_S = 120.0
DAY_S = 86_400.0


class JobMessage(msgspec.Struct, frozen=True, kw_only=True):
    """What goes on ``jobs.<type>``: which job, and which generation of it.

    The event store is the source of truth for the job (payload, budget,
    state). The relay also carries the ``job.queued`` event itself in
    ``queued`` (generation 0 only): a worker may then claim the first attempt
    by appending ``job.started`` at version 1 without reading the stream first.
    The append's expected version is what makes that safe: if anything else was
    appended meanwhile it conflicts, and the worker reads the stream as usual.
    """

    job_id: str
    job_type: str
    generation: int = 0
    queued: RecordedEvent | None = None


class JobTypeSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Per-job-type consumer settings."""

    job_type: str
    max_attempts: int = 5  # = max_deliver
    ack_wait_s: float = 30.0  # first delivery; heartbeats every ack_wait_s / 3
    backoff: Backoff = Backoff(base_s=2.0, factor=2.0, cap_s=300.0)
    max_ack_pending: int = 64

    @property
    def subject(self) -> str:
        return job_subject(self.job_type)

    @property
    def durable(self) -> str:
        return consumer_name(self.job_type)

    def consumer_config(self) -> ConsumerConfig:
        redeliveries = self.max_attempts - 1
        return ConsumerConfig(
            durable_name=self.durable,
            name=self.durable,
            description=f"byteor-cloud {self.job_type} workers",
            filter_subject=self.subject,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait_s,
            max_deliver=self.max_attempts,
            # nats-server wants max_deliver > len(backoff); none for a single attempt.
            backoff=(
                [max(self.ack_wait_s, d) for d in self.backoff.schedule(redeliveries)]
                if redeliveries
                else None
            ),
            max_ack_pending=self.max_ack_pending,
        )


DEFAULT_JOB_TYPES: tuple[JobTypeSettings, ...] = (
    JobTypeSettings(job_type="spec_ingest"),
    JobTypeSettings(job_type="deploy_bundle_build", ack_wait_s=60.0),
    JobTypeSettings(job_type="incident_ingest", ack_wait_s=60.0),
    JobTypeSettings(job_type="replay", ack_wait_s=120.0, max_attempts=3),
    JobTypeSettings(job_type="retention", ack_wait_s=120.0, max_attempts=3),
    JobTypeSettings(job_type="metering", max_attempts=8),
    # the built-in diagnostic (workers/probe.py); short, so a stuck probe shows soon
    JobTypeSettings(job_type="probe", ack_wait_s=10.0, max_attempts=3),
)


class JobTypeTuning(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Operator overrides of one job type's settings (``BYTEOR_CLOUD_JOB_SETTINGS``)."""

    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None
    ack_wait_s: Annotated[float, msgspec.Meta(gt=0, le=DAY_S)] | None = None
    backoff_base_s: Annotated[float, msgspec.Meta(ge=0, le=DAY_S)] | None = None
    backoff_factor: Annotated[float, msgspec.Meta(ge=1, le=100)] | None = None
    backoff_cap_s: Annotated[float, msgspec.Meta(ge=0, le=DAY_S)] | None = None
    max_ack_pending: Annotated[int, msgspec.Meta(ge=1)] | None = None


def tuned(
    job_types: Iterable[JobTypeSettings], tuning: Mapping[str, JobTypeTuning]
) -> tuple[JobTypeSettings, ...]:
    """``job_types`` with the overrides applied; an override of an unknown type is an error."""
    types = {s.job_type: s for s in job_types}
    unknown = sorted(set(tuning) - set(types))
    if unknown:
        raise ValueError(f"no such job type: {', '.join(unknown)}")
    for name, t in tuning.items():
        s = types[name]
        backoff = Backoff(
            base_s=s.backoff.base_s if t.backoff_base_s is None else t.backoff_base_s,
            factor=s.backoff.factor if t.backoff_factor is None else t.backoff_factor,
            cap_s=s.backoff.cap_s if t.backoff_cap_s is None else t.backoff_cap_s,
        )
        types[name] = msgspec.structs.replace(
            s,
            max_attempts=s.max_attempts if t.max_attempts is None else t.max_attempts,
            ack_wait_s=s.ack_wait_s if t.ack_wait_s is None else t.ack_wait_s,
            max_ack_pending=s.max_ack_pending if t.max_ack_pending is None else t.max_ack_pending,
            backoff=backoff,
        )
    return tuple(types.values())


def job_subject(job_type: str) -> str:
    return f"{JOBS_SUBJECT_PREFIX}.{job_type}"


def consumer_name(job_type: str) -> str:
    return f"jobs_{job_type}"


def job_msg_id(job_id: str, generation: int) -> str:
    """JetStream's de-duplication id: the job id; a requeued generation gets its own."""
    return job_id if generation == 0 else f"{job_id}.{generation}"


def jobs_stream_config() -> StreamConfig:
    return StreamConfig(
        name=JOBS_STREAM,
        description="byteor-cloud job transport (the event store is the source of truth)",
        subjects=[f"{JOBS_SUBJECT_PREFIX}.>"],
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        max_age=14 * DAY_S,
        duplicate_window=DUPLICATE_WINDOW_S,
    )


def dead_letter_stream_config() -> StreamConfig:
    return StreamConfig(
        name=DEAD_LETTER_STREAM,
        description="MAX_DELIVERIES advisories, kept until a listener records the dead letter",
        subjects=[f"{MAX_DELIVERIES_ADVISORY}.>"],
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        max_age=30 * DAY_S,
    )


def dead_letter_consumer_config() -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=DEAD_LETTER_CONSUMER,
        name=DEAD_LETTER_CONSUMER,
        description="byteor-cloud dead-letter listener",
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=30.0,
        max_deliver=-1,
        max_ack_pending=64,
    )


async def ensure(
    js: JetStreamContext, job_types: Iterable[JobTypeSettings] = DEFAULT_JOB_TYPES
) -> dict[str, JobTypeSettings]:
    """Create or update the streams and consumers; safe to run at every start.

    Returns the settings by job type, for the consume loops.
    """
    settings = {s.job_type: s for s in job_types}
    await _ensure_stream(js, jobs_stream_config())
    await _ensure_stream(js, dead_letter_stream_config())
    for s in settings.values():
        await js.add_consumer(JOBS_STREAM, s.consumer_config())
    await js.add_consumer(DEAD_LETTER_STREAM, dead_letter_consumer_config())
    return settings


# What a request answers when the stream or consumer it names does not exist:
# nats-server came back without its data (a wiped or replaced store).
LOST = (ServiceUnavailableError, NotFoundError, NoStreamResponseError)


async def recreate(js: JetStreamContext, job_types: Iterable[JobTypeSettings]) -> None:
    """After a ``LOST`` answer: ``ensure`` again, so a running process heals itself.

    Failing here is fine (NATS may be down again); the caller retries later.
    """
    try:
        await ensure(js, job_types)
        log.warning("JetStream streams and consumers re-created")
    except Exception as exc:
        log.warning("could not re-create JetStream streams: %s: %s", type(exc).__name__, exc)


async def ensure_jobs_stream(js: JetStreamContext) -> None:
    """Only the JOBS stream: what the relay needs to publish jobs."""
    await _ensure_stream(js, jobs_stream_config())


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    assert config.name is not None
    try:
        await js.stream_info(config.name)
    except NotFoundError:
        try:
            await js.add_stream(config)
            return
        except BadRequestError:  # created concurrently by another process
            pass
    await js.update_stream(config)
