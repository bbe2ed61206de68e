"""The deployment state machine of domain/deployment.py's docstring, against a tiny model.

One deployment ``D`` is driven through every action of the transition table in
any order; each action's outcome (a new status, a no-op, or the error class)
comes from the model's own copy of the table, written out again below, and the
folded state (events through the codec, as a handler reads them) must agree.
The machine may start with an earlier active deployment ``P`` so that
supersede and rollback have something to restore.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from msgspec.structs import replace

from domain import approval, deployment
from domain.approval import Approval
from domain.deployment import (
    AgentNotTargeted,
    Deployment,
    DeploymentCapReached,
    IllegalDeploymentTransition,
    NothingToRestore,
)
from domain.environment import Posture
from domain.errors import DomainError
from tests.lifecycle import (
    AGENTS,
    ALICE,
    BOB,
    NOW,
    OPERATE,
    Signer,
    a_bundle,
    a_project,
    an_env,
    an_org,
    through_codec,
)

SIGNER = Signer()
D = uuid.UUID(int=0xD)
P = uuid.UUID(int=0xE)
# Rollback deployments get R, R+1, ...: far from every other id here, so a
# rollback's id never collides with NEWER and makes settle() mean a rollback.
R = uuid.UUID(int=0xF000)
NEWER = uuid.UUID(int=0x10)
BUNDLE_D = uuid.UUID(int=0xBD)
BUNDLE_P = uuid.UUID(int=0xBE)
JOB = uuid.UUID(int=0x70B)
OTHER_JOB = uuid.UUID(int=0x70C)
DIGEST = "sha256:" + "0d" * 32
STRANGER = uuid.UUID(int=0x999)
TIMEOUT = timedelta(seconds=deployment.DEFAULT_ACTIVATION_TIMEOUT_S)

# The table, again, as (status, action) → status; anything absent is illegal.
TABLE: dict[tuple[str, str], str] = {
    ("pending_approval", "approve"): "approved",
    ("pending_approval", "deny"): "denied",
    ("approved", "start_build"): "building",
    ("building", "complete_build"): "deploying",
    ("building", "fail_build"): "failed",
    ("deploying", "report_failed"): "failed",
    ("deploying", "expire"): "failed",
    ("active", "supersede"): "superseded",
    ("active", "rollback"): "rolling_back",
    ("failed", "rollback"): "rolling_back",
    ("rolling_back", "rolled_back"): "rolled_back",
}

Outcome = str | type[DomainError]  # a status, "noop", or the error expected
agents = st.sampled_from((*AGENTS, STRANGER))


@dataclass
class Model:
    status: str
    governed: bool
    job: uuid.UUID | None = None
    digest: str | None = None
    failure: str | None = None
    reports: dict[uuid.UUID, str] = field(default_factory=dict)
    previous_active: bool = False  # P exists and is still active
    supersedes: uuid.UUID | None = None
    rolled_back_from: str | None = None
    rollback: uuid.UUID | None = None


class DeploymentMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = NOW
        self.model = Model("approved", False)
        self.rollbacks = 0

    @initialize(
        posture=st.sampled_from(["dev", "staging", "prod"]),
        side_effects=st.booleans(),
        with_previous=st.booleans(),
    )
    def request(self, posture: Posture, side_effects: bool, with_previous: bool) -> None:
        caps = ("exec",) if side_effects else ()
        self.env = an_env(posture)
        self.bundle_d = a_bundle(self.env, bundle_id=BUNDLE_D, capabilities=caps)
        self.bundle_p = a_bundle(self.env, bundle_id=BUNDLE_P, capabilities=caps)
        self.previous: Deployment | None = None
        if with_previous:
            self.previous = self._active_previous()
        plan = deployment.request_deployment(
            an_org(),
            a_project(),
            self.env,
            self.bundle_d,
            deployment_id=D,
            approval_id=uuid.UUID(int=0xA0),
            agent_ids=AGENTS,
            in_flight=0,
            requested_by=ALICE,
            now=self.now,
        )
        self.dep = self._fold(plan.deployment)
        self.appended = 1
        self.approval: Approval | None = approval.fold(through_codec(plan.approval))
        governed = approval.approval_required(posture, caps, "deployment")
        assert (self.approval is not None) is governed
        self.model = Model(
            "pending_approval" if governed else "approved",
            governed,
            previous_active=with_previous,
        )

    def _active_previous(self) -> Deployment:
        """P, active, built the short way (dev-like: its own approval is not the point here)."""
        dev = replace(self.env, posture="dev")
        plan = deployment.request_deployment(
            an_org(),
            a_project(),
            dev,
            self.bundle_p,
            deployment_id=P,
            approval_id=uuid.UUID(int=0xA1),
            agent_ids=AGENTS,
            in_flight=0,
            requested_by=ALICE,
            now=self.now,
        )
        dep = self._fold(plan.deployment)
        dep = self._then(dep, deployment.start_build(dep, JOB, self.now))
        dep = self._then(
            dep,
            deployment.complete_build(
                dep, bundle_digest="p", bundle_key="p", kid="k", now=self.now
            ),
        )
        for agent in AGENTS:
            dep = self._then(dep, deployment.report_activated(dep, agent, now=self.now))
        assert dep.status == "active"
        return replace(dep, environment_id=self.env.id)

    # --- plumbing ------------------------------------------------------------------

    @staticmethod
    def _fold(events: tuple[deployment.DeploymentEvent, ...]) -> Deployment:
        state = deployment.fold(through_codec(events))
        assert state is not None
        return state

    @staticmethod
    def _then(state: Deployment, events: tuple[deployment.DeploymentEvent, ...]) -> Deployment:
        for event in through_codec(events):
            assert isinstance(event, deployment.DeploymentEvent)
            state = deployment.evolve(state, event)
        return state

    def check(self, decide: object, expected: Outcome) -> bool:
        """Run the decision against the model's expectation; True when it appended events."""
        assert callable(decide)
        if isinstance(expected, type):
            with pytest.raises(expected) as caught:
                decide()
            assert type(caught.value) is expected
            return False
        events = decide()
        if expected == "noop":
            assert events == ()
            return False
        assert events
        self.appended += len(events)
        self.dep = self._then(self.dep, events)
        assert self.dep.status == expected, (self.dep.status, expected)
        return True

    def moved(self, action: str) -> Outcome:
        return TABLE.get((self.model.status, action), IllegalDeploymentTransition)

    def tick(self, seconds: int = 1) -> None:
        self.now += timedelta(seconds=seconds)

    # --- approval ------------------------------------------------------------------

    @precondition(lambda self: self.model.governed)
    @rule()
    def approve(self) -> None:
        assert self.approval is not None
        self.tick()
        if approval.effective_status(self.approval, self.now) == "pending":
            events = approval.approve(
                self.approval,
                approver_id=BOB,
                authorization=OPERATE,
                now=self.now,
                kid="k",
                sign=SIGNER.sign,
            )
            self.approval = approval.evolve(self.approval, events[0])
        m = self.model
        if m.status == "approved":
            expected: Outcome = "noop"
        elif m.status == "pending_approval" and self.approval.status == "approved":
            expected = "approved"
        else:
            expected = IllegalDeploymentTransition
        if self.check(lambda: deployment.approve(self.dep, self.approval, self.now), expected):
            m.status = "approved"

    @precondition(lambda self: self.model.governed)
    @rule(how=st.sampled_from(["deny", "expire", "revoke"]))
    def deny(self, how: str) -> None:
        assert self.approval is not None
        pending = self.approval.status == "pending"
        if how == "deny" and pending:
            events = approval.deny(
                self.approval, approver_id=BOB, authorization=OPERATE, now=self.now
            )
        elif how == "expire" and pending:
            events = approval.expire(self.approval, self.approval.expires_at)
        elif how == "revoke" and self.approval.status in ("pending", "approved"):
            events = approval.revoke(self.approval, by=ALICE, authorization=OPERATE, now=self.now)
        else:
            events = ()
        for event in events:
            self.approval = approval.evolve(self.approval, event)
        m = self.model
        decided = self.approval.status in ("denied", "expired", "revoked")
        if m.status == "denied":
            expected: Outcome = "noop"
        elif m.status == "pending_approval" and decided:
            expected = "denied"
        else:
            expected = IllegalDeploymentTransition
        if self.check(lambda: deployment.deny(self.dep, self.approval, self.now), expected):
            m.status = "denied"

    # --- build ---------------------------------------------------------------------

    @rule(job=st.sampled_from([JOB, JOB, OTHER_JOB]))
    def start_build(self, job: uuid.UUID) -> None:
        m = self.model
        expected = "noop" if m.job == job and m.status != "approved" else self.moved("start_build")
        if self.check(lambda: deployment.start_build(self.dep, job, self.now), expected):
            m.status, m.job = "building", job

    @rule()
    def complete_build(self) -> None:
        self.tick()
        m = self.model
        expected = (
            "noop"
            if m.digest == DIGEST and m.status != "building"
            else self.moved("complete_build")
        )
        decide = lambda: deployment.complete_build(  # noqa: E731
            self.dep, bundle_digest=DIGEST, bundle_key="k", kid="k", now=self.now
        )
        if self.check(decide, expected):
            m.status, m.digest = "deploying", DIGEST

    @rule()
    def fail_build(self) -> None:
        m = self.model
        noop = m.status == "failed" and m.failure == "build_failed"
        expected = "noop" if noop else self.moved("fail_build")
        if self.check(lambda: deployment.fail_build(self.dep, "boom", self.now), expected):
            m.status, m.failure = "failed", "build_failed"

    # --- rollout -------------------------------------------------------------------

    @rule(agent=agents)
    def report_activated(self, agent: uuid.UUID) -> None:
        self.tick()
        m = self.model
        expected: Outcome
        if agent == STRANGER:
            expected = AgentNotTargeted
        elif m.reports.get(agent) == "activated":
            expected = "noop"
        elif m.status != "deploying":
            expected = IllegalDeploymentTransition
        else:
            done = {a for a, s in m.reports.items() if s == "activated"} | {agent}
            expected = "active" if done >= set(AGENTS) else "deploying"
        replacing = P if m.previous_active else None
        decide = lambda: deployment.report_activated(  # noqa: E731
            self.dep, agent, now=self.now, replacing=replacing
        )
        if self.check(decide, expected):
            m.reports[agent] = "activated"
            m.status = str(expected)
            if expected == "active":
                m.supersedes = replacing
                if m.previous_active and self.previous is not None:
                    # settle() on P: it is superseded by D
                    events = deployment.settle(self.previous, self.dep, self.now)
                    self.previous = self._then(self.previous, events)
                    assert self.previous.status == "superseded"
                    m.previous_active = False

    @rule(agent=agents)
    def report_failed(self, agent: uuid.UUID) -> None:
        self.tick()
        m = self.model
        expected: Outcome
        if agent == STRANGER:
            expected = AgentNotTargeted
        elif m.reports.get(agent) == "failed":
            expected = "noop"
        else:
            expected = self.moved("report_failed")
        decide = lambda: deployment.report_failed(self.dep, agent, now=self.now, reason="x")  # noqa: E731
        if self.check(decide, expected):
            m.reports[agent] = "failed"
            m.status, m.failure = "failed", "agent_failed"

    @rule(offset=st.integers(min_value=-5, max_value=5) | st.integers(min_value=0, max_value=2000))
    def expire(self, offset: int) -> None:
        m = self.model
        since = self.dep.deploying_since
        at = (since or self.now) + TIMEOUT + timedelta(seconds=offset)
        due = m.status == "deploying" and offset >= 0
        expected = self.moved("expire") if due else "noop"
        if self.check(lambda: deployment.expire(self.dep, at), expected):
            m.status, m.failure = "failed", "activation_timeout"

    # The paths a handler takes, as rules of their own so deep states are reached.
    @rule()
    def build_through(self) -> None:
        if self.model.governed:
            self.approve()
        self.start_build(JOB)
        self.complete_build()

    @rule()
    def every_agent_activates(self) -> None:
        for agent in AGENTS:
            self.report_activated(agent)

    @rule()
    def roll_back_through(self) -> None:
        self.rollback()
        self.rollback_completes()

    # --- supersede and rollback ---------------------------------------------------------

    @rule()
    def supersede(self) -> None:
        newer = replace(self.dep, id=NEWER, status="active", rollback_id=None)
        m = self.model
        expected = "superseded" if m.status == "active" else "noop"
        if self.check(lambda: deployment.settle(self.dep, newer, self.now), expected):
            m.status = "superseded"

    @rule()
    def rollback(self) -> None:
        m = self.model
        rollback_id = uuid.UUID(int=R.int + self.rollbacks)
        expected: Outcome
        if m.status == "active":
            expected = "rolling_back" if m.supersedes == P else NothingToRestore
        elif m.status == "failed":
            expected = "rolling_back" if m.previous_active else NothingToRestore
        else:
            expected = IllegalDeploymentTransition
        plan_holder: list[deployment.DeploymentPlan] = []

        def decide() -> tuple[deployment.DeploymentEvent, ...]:
            plan = deployment.rollback(
                an_org(),
                a_project(),
                self.env,
                self.dep,
                self.previous,
                self.bundle_p,
                rollback_id=rollback_id,
                approval_id=uuid.UUID(int=0xA2),
                requested_by=ALICE,
                now=self.now,
            )
            plan_holder.append(plan)
            return plan.rolled_back

        if self.check(decide, expected):
            restoring = self._fold(plan_holder[0].deployment)
            assert (restoring.bundle_id, restoring.rollback_of) == (BUNDLE_P, D)
            m.rolled_back_from, m.status, m.rollback = m.status, "rolling_back", rollback_id
            self.rollbacks += 1

    @rule()
    def rollback_completes(self) -> None:
        m = self.model
        if m.rollback is None:
            return
        restored = replace(self.dep, id=m.rollback, status="active", rollback_id=None)
        if m.status == "rolling_back":
            expected = "rolled_back"
        elif m.status == "active":
            expected = "superseded"
        else:
            expected = "noop"
        if self.check(lambda: deployment.settle(self.dep, restored, self.now), expected):
            m.status = expected

    @rule()
    def rollback_fails(self) -> None:
        m = self.model
        if m.rollback is None:
            return
        failed = replace(self.dep, id=m.rollback, status="failed", rollback_id=None)
        expected: Outcome
        if m.status == "rolling_back":
            assert m.rolled_back_from is not None
            expected = m.rolled_back_from
        else:
            expected = IllegalDeploymentTransition
        if self.check(lambda: deployment.abandon_rollback(self.dep, failed, self.now), expected):
            m.status, m.rollback = str(expected), None

    # --- invariants ------------------------------------------------------------------------

    @invariant()
    def matches_the_model(self) -> None:
        if not hasattr(self, "dep"):
            return
        assert self.dep.status == self.model.status
        assert self.dep.history[-1].status == self.dep.status
        assert self.dep.version == self.appended
        reports = {r.agent_id: r.state for r in self.dep.reports}
        assert reports == self.model.reports
        assert deployment.rollout(self.dep).targeted == len(AGENTS)

    @invariant()
    def terminal_states_stay_terminal(self) -> None:
        if not hasattr(self, "dep"):
            return
        statuses = [h.status for h in self.dep.history]
        for terminal in deployment.TERMINAL:
            if terminal in statuses:
                assert statuses[-1] == terminal
                assert statuses.count(terminal) == 1


TestDeploymentMachine = DeploymentMachine.TestCase
TestDeploymentMachine.settings = settings(max_examples=400, stateful_step_count=30, deadline=None)


@given(
    limit=st.integers(min_value=1, max_value=100),
    in_flight=st.integers(min_value=0, max_value=120),
)
def test_the_cap_refuses_exactly_when_the_in_flight_count_reaches_the_limit(
    limit: int, in_flight: int
) -> None:
    env = an_env("dev", cap=limit)
    if in_flight >= limit:
        with pytest.raises(DeploymentCapReached):
            deployment.check_capacity(env, in_flight)
    else:
        deployment.check_capacity(env, in_flight)
