"""The job state machine of domain/job.py's docstring, against a tiny model.

The machine keeps one job's encoded events (decoded through the codec on every
step, as a worker would read them) and a model with its own naive table of
which (status, action, attempt) moves are legal, which are no-ops and which
error each illegal one raises. Attempts are drawn from a small range so stale,
repeated and skipped attempt numbers all come up.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from domain import job
from domain.codec import default_codec
from domain.envelope import NewEvent
from domain.errors import DomainError, InvalidInput
from domain.job import IllegalJobTransition, JobFinished, StaleAttempt

CODEC = default_codec()
JOB = uuid.UUID(int=1)
# Attempt numbers near the job's current one, where the interesting edges are
# (the same attempt again, the next one, a stale one), and now and then any.
deltas = st.integers(min_value=-2, max_value=2) | st.integers(min_value=-6, max_value=6)
FINISHED = {"completed", "failed", "dead_letter"}


@dataclass
class Model:
    status: str
    attempt: int
    generation: int
    max_attempts: int


Outcome = str | type[DomainError]  # a new status, "noop", or the error expected


class JobMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.stored: list[NewEvent] = []
        self.model = Model("queued", 0, 0, 1)

    @initialize(max_attempts=st.integers(min_value=1, max_value=5))
    def queue(self, max_attempts: int) -> None:
        events = job.queue(None, job_id=JOB, job_type="replay", max_attempts=max_attempts)
        self.stored.extend(CODEC.encode(e) for e in events)
        self.model = Model("queued", 0, 0, max_attempts)

    def state(self) -> job.Job:
        folded = job.fold(
            CODEC.decode(e.event_type, e.schema_version, e.payload) for e in self.stored
        )
        assert folded is not None
        return folded

    def check(self, decide: object, expected: Outcome) -> bool:
        """Run the decision; True when it appended events."""
        assert callable(decide)
        if isinstance(expected, type):
            with pytest.raises(expected) as caught:
                decide()
            # the most specific class: JobFinished and StaleAttempt are IllegalJobTransitions
            assert type(caught.value) is expected
            return False
        events = decide()
        if expected == "noop":
            assert events == ()
            return False
        assert len(events) == 1
        self.stored.extend(CODEC.encode(e) for e in events)
        assert self.state().status == expected
        return True

    def running_outcome(self, attempt: int) -> Outcome | None:
        """The error for an outcome on anything but the running attempt; None if legal."""
        m = self.model
        if m.status in FINISHED:
            return JobFinished
        if m.status != "running":
            return IllegalJobTransition
        if attempt != m.attempt:
            return StaleAttempt
        return None

    @rule(delta=deltas)
    def start(self, delta: int) -> None:
        attempt = self.model.attempt + delta
        m = self.model
        expected: Outcome
        if m.status in FINISHED:
            expected = JobFinished
        elif attempt < 1:
            expected = InvalidInput
        elif m.status == "running" and attempt == m.attempt:
            expected = "noop"
        elif attempt <= m.attempt:
            expected = StaleAttempt
        else:
            expected = "running"
        if self.check(lambda: job.start(self.state(), attempt), expected):
            m.status, m.attempt = "running", attempt

    @rule(delta=deltas)
    def complete(self, delta: int) -> None:
        attempt = self.model.attempt + delta
        m = self.model
        expected = "noop" if m.status == "completed" else self.running_outcome(attempt)
        if self.check(lambda: job.complete(self.state(), attempt), expected or "completed"):
            m.status = "completed"

    @rule(delta=deltas)
    def fail_transient(self, delta: int) -> None:
        attempt = self.model.attempt + delta
        m = self.model
        expected = self.running_outcome(attempt)
        if expected is None:
            expected = "dead_letter" if attempt >= m.max_attempts else "retrying"
        if self.check(
            lambda: job.fail_transient(self.state(), attempt, "Boom", "m", 0.1), expected
        ):
            m.status = str(expected)

    @rule(delta=deltas)
    def fail_permanent(self, delta: int) -> None:
        attempt = self.model.attempt + delta
        expected = self.running_outcome(attempt) or "failed"
        if self.check(lambda: job.fail_permanent(self.state(), attempt, "Bad", "m"), expected):
            self.model.status = "failed"

    @rule(delta=deltas, rarely=st.integers(min_value=0, max_value=3))
    def dead_letter(self, delta: int, rarely: int) -> None:
        # Legal from most states and absorbing: at full rate it ends most runs early.
        if rarely:
            return
        attempt = self.model.attempt + delta
        m = self.model
        expected: Outcome
        if m.status == "dead_letter":
            expected = "noop"
        elif m.status in FINISHED:
            expected = JobFinished
        else:
            expected = "dead_letter"
        if self.check(lambda: job.dead_letter(self.state(), attempt, "Max", "m"), expected):
            m.status, m.attempt = "dead_letter", max(m.attempt, attempt)

    # The paths a worker takes, as rules of their own so deep states are reached.
    @rule()
    def start_next(self) -> None:
        self.start(1)

    @rule()
    def fail_current(self) -> None:
        self.fail_transient(0)

    @rule()
    def requeue(self) -> None:
        m = self.model
        expected = "queued" if m.status in ("dead_letter", "failed") else IllegalJobTransition
        if self.check(lambda: job.requeue(self.state(), "op"), expected):
            m.status, m.attempt, m.generation = "queued", 0, m.generation + 1

    @invariant()
    def matches_the_model(self) -> None:
        if not self.stored:
            return
        state = self.state()
        m = self.model
        assert (state.status, state.attempt, state.generation) == (
            m.status,
            m.attempt,
            m.generation,
        )
        assert state.version == len(self.stored)
        assert state.attempt <= max(m.attempt, 6)


TestJobMachine = JobMachine.TestCase
TestJobMachine.settings = settings(max_examples=300, stateful_step_count=30, deadline=None)
