from __future__ import annotations

import uuid
from collections.abc import Iterable

import pytest

from domain import job
from domain.codec import Event, default_codec
from domain.errors import InvalidHistory, InvalidInput, NotFound
from domain.job import (
    IllegalJobTransition,
    Job,
    JobCompleted,
    JobDeadLettered,
    JobFailed,
    JobFinished,
    JobQueued,
    JobRequeued,
    JobRetryScheduled,
    JobStarted,
    StaleAttempt,
)

JOB = uuid.UUID(int=7)


def then(state: Job | None, events: Iterable[job.JobEvent]) -> Job:
    for event in events:
        state = job.evolve(state, event)
    assert state is not None
    return state


def queued(max_attempts: int = 3) -> Job:
    return then(
        None,
        job.queue(
            None, job_id=JOB, job_type="spec_ingest", payload={"k": 1}, max_attempts=max_attempts
        ),
    )


def running(attempt: int = 1, max_attempts: int = 3) -> Job:
    return then(queued(max_attempts), job.start(queued(max_attempts), attempt))


def test_queue_records_the_job_with_its_payload_and_budget() -> None:
    state = queued()
    assert state.status == "queued"
    assert state.payload == {"k": 1}
    assert (state.max_attempts, state.attempt, state.generation, state.version) == (3, 0, 0, 1)


def test_queueing_an_existing_job_is_a_no_op() -> None:
    assert job.queue(queued(), job_id=JOB, job_type="spec_ingest", max_attempts=3) == ()


@pytest.mark.parametrize(
    ("job_type", "max_attempts", "payload"),
    [
        ("Spec", 3, {}),
        ("", 3, {}),
        ("spec_ingest", 0, {}),
        ("spec_ingest", 3, {"big": "x" * (job.MAX_PAYLOAD_BYTES + 1)}),
    ],
)
def test_queue_rejects_bad_types_budgets_and_payloads(
    job_type: str, max_attempts: int, payload: dict[str, str]
) -> None:
    with pytest.raises(InvalidInput):
        job.queue(None, job_id=JOB, job_type=job_type, payload=payload, max_attempts=max_attempts)


def test_start_records_the_attempt() -> None:
    assert job.start(queued(), 1) == (JobStarted(attempt=1),)
    assert running(1).status == "running"


def test_starting_the_same_attempt_twice_is_a_no_op() -> None:
    assert job.start(running(1), 1) == ()


def test_a_later_attempt_may_start_while_running_because_the_worker_died() -> None:
    assert job.start(running(1), 2) == (JobStarted(attempt=2),)


def test_an_earlier_attempt_is_stale() -> None:
    with pytest.raises(StaleAttempt) as caught:
        job.start(running(2), 1)
    assert caught.value.job_id == JOB
    assert caught.value.job_status == "running"


def test_complete_ends_the_job_and_completing_again_is_a_no_op() -> None:
    events = job.complete(running(1), 1, {"rows": 3})
    assert events == (JobCompleted(attempt=1, result={"rows": 3}),)
    done = then(running(1), events)
    assert done.status == "completed"
    assert done.result == {"rows": 3}
    assert job.complete(done, 1) == ()


def test_complete_needs_the_running_attempt() -> None:
    with pytest.raises(StaleAttempt):
        job.complete(running(2), 1)
    with pytest.raises(IllegalJobTransition):
        job.complete(queued(), 1)


def test_a_transient_failure_with_attempts_left_schedules_a_retry() -> None:
    events = job.fail_transient(running(1), 1, "Timeout", "slow", 0.5)
    assert events == (
        JobRetryScheduled(attempt=1, error_class="Timeout", error_message="slow", next_delay_s=0.5),
    )
    state = then(running(1), events)
    assert (state.status, state.next_delay_s, state.last_error_class) == (
        "retrying",
        0.5,
        "Timeout",
    )
    assert job.start(state, 2) == (JobStarted(attempt=2),)
    with pytest.raises(StaleAttempt):
        job.start(state, 1)


def test_a_transient_failure_on_the_last_attempt_dead_letters() -> None:
    events = job.fail_transient(running(3, max_attempts=3), 3, "Timeout", "slow", 0.5)
    assert events == (JobDeadLettered(attempt=3, error_class="Timeout", error_message="slow"),)


def test_a_permanent_failure_fails_the_job_at_once() -> None:
    events = job.fail_permanent(running(1), 1, "BadSpec", "no")
    assert events == (JobFailed(attempt=1, error_class="BadSpec", error_message="no"),)
    assert then(running(1), events).status == "failed"


def test_long_error_messages_are_clipped() -> None:
    (event,) = job.fail_permanent(running(1), 1, "E", "x" * 10_000)
    assert isinstance(event, JobFailed)
    assert len(event.error_message) == job.MAX_ERROR_MESSAGE


@pytest.mark.parametrize("status_events", ["completed", "failed", "dead_letter"])
def test_a_finished_job_refuses_to_start(status_events: str) -> None:
    state = running(1, max_attempts=1)
    outcome = {
        "completed": job.complete(state, 1),
        "failed": job.fail_permanent(state, 1, "E", "m"),
        "dead_letter": job.fail_transient(state, 1, "E", "m", 1.0),
    }[status_events]
    finished = then(state, outcome)
    assert finished.status == status_events
    with pytest.raises(JobFinished):
        job.start(finished, 2)


def test_dead_letter_from_the_advisory_and_again_is_a_no_op() -> None:
    for state in (queued(), running(2)):
        events = job.dead_letter(state, 3, "MaxDeliveries", "budget spent")
        assert len(events) == 1
        dead = then(state, events)
        assert dead.status == "dead_letter"
        assert job.dead_letter(dead, 3, "MaxDeliveries", "again") == ()
    done = then(running(1), job.complete(running(1), 1))
    with pytest.raises(JobFinished):
        job.dead_letter(done, 1, "MaxDeliveries", "late")


def test_requeue_starts_a_new_generation_from_dead_letter_or_failed() -> None:
    dead = then(running(1, 1), job.fail_transient(running(1, 1), 1, "E", "m", 0))
    events = job.requeue(dead, "user:ada")
    assert events == (JobRequeued(by="user:ada", job_type="spec_ingest", generation=1),)
    again = then(dead, events)
    assert (again.status, again.attempt, again.generation) == ("queued", 0, 1)
    assert job.start(again, 1) == (JobStarted(attempt=1),)
    with pytest.raises(IllegalJobTransition):
        job.requeue(running(1), "user:ada")


def test_decisions_on_a_missing_job_are_not_found() -> None:
    with pytest.raises(NotFound):
        job.start(None, 1)


def test_fold_replays_and_refuses_foreign_or_out_of_order_events() -> None:
    history: list[Event] = [
        JobQueued(job_id=JOB, job_type="t", max_attempts=2),
        JobStarted(attempt=1),
        JobCompleted(attempt=1),
    ]
    state = job.fold(history)
    assert state is not None
    assert (state.status, state.version) == ("completed", 3)
    with pytest.raises(InvalidHistory):
        job.fold([JobStarted(attempt=1)])
    with pytest.raises(InvalidHistory):
        job.fold([history[0], history[0]])


def test_events_round_trip_through_the_codec() -> None:
    codec = default_codec()
    for event in (
        JobQueued(job_id=JOB, job_type="t", payload={"a": [1, "b"]}, max_attempts=2),
        JobRetryScheduled(attempt=1, error_class="E", error_message="m", next_delay_s=0.25),
        JobRequeued(by="x", job_type="t", generation=2),
    ):
        new = codec.encode(event)
        assert codec.decode(new.event_type, new.schema_version, new.payload) == event


def test_queued_append_is_a_new_job_stream_for_the_write_side() -> None:
    append = job.queued_append(job_id=JOB, job_type="metering", max_attempts=5)
    assert (append.stream_id, append.stream_type, append.expected_version) == (
        f"job-{JOB}",
        "job",
        0,
    )
    assert [e.event_type for e in append.events] == ["job.queued"]
