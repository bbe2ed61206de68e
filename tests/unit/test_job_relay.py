"""What the relay publishes for job events (the pure part of workers/relay.py)."""

from __future__ import annotations

import uuid

import msgspec

from domain import job
from domain.codec import default_codec
from domain.envelope import RecordedEvent
from workers.relay import job_message_of
from workers.streams import JobMessage

JOB = uuid.UUID(int=5)
CODEC = default_codec()


def recorded(event: job.JobEvent, version: int = 1) -> RecordedEvent:
    new = CODEC.encode(event)
    return RecordedEvent(
        1, 1, uuid.uuid4(), f"job-{JOB}", "job", version, new.event_type, 1, new.payload,
        None, "system", "t", uuid.uuid4(), None, None, 0,
    )  # fmt: skip


def test_job_queued_goes_to_its_type_subject_with_the_job_id_as_message_id() -> None:
    event = job.JobQueued(job_id=JOB, job_type="metering", max_attempts=3)
    queued = recorded(event)
    subject, body, msg_id = job_message_of(queued) or ("", b"", "")
    assert (subject, msg_id) == ("jobs.metering", str(JOB))
    # The queued event rides along, so a first delivery can be claimed without a read.
    assert msgspec.json.decode(body, type=JobMessage) == JobMessage(
        job_id=str(JOB), job_type="metering", generation=0, queued=queued
    )


def test_a_requeued_generation_gets_its_own_message_id() -> None:
    event = job.JobRequeued(by="op", job_type="replay", generation=2)
    subject, body, msg_id = job_message_of(recorded(event, 5)) or ("", b"", "")
    assert (subject, msg_id) == ("jobs.replay", f"{JOB}.2")
    requeued = msgspec.json.decode(body, type=JobMessage)
    assert requeued.generation == 2 and requeued.queued is None  # history matters: read it


def test_other_job_events_are_not_republished_as_jobs() -> None:
    assert job_message_of(recorded(job.JobStarted(attempt=1), 2)) is None
