"""The enrollment token and agent state machines (domain/enrollment.py,
domain/agent.py docstrings) against a naive model.

One token of one environment, a clock that moves forward, and any number of
enrollment attempts, revocations, rotations and agent revocations in any
order. The model says, in its own words, when a token may be used (active and
before its expiry) and what each agent's live key is; every step's events go
through the codec as the store would keep them. The property that matters
most: however the steps interleave, one token enrolls at most one agent.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from domain import agent as agent_mod
from domain import enrollment as enrollment_mod
from domain.codec import default_codec
from domain.envelope import NewEvent
from domain.environment import Environment, EnvironmentSettings
from domain.errors import Conflict, NotFound

CODEC = default_codec()
START = datetime(2026, 1, 1, tzinfo=UTC)
ENV = Environment(
    id=uuid.UUID(int=1),
    org_id=uuid.UUID(int=2),
    project_id=uuid.UUID(int=3),
    name="prod",
    posture="prod",
    settings=EnvironmentSettings(),
    status="active",
    version=1,
)
TTL_S = 600


def decoded(event: NewEvent) -> object:
    return CODEC.decode(event.event_type, event.schema_version, event.payload)


@dataclass
class Model:
    token: str = "active"  # active | used | revoked
    enrolled: list[uuid.UUID] = field(default_factory=list)
    agent_revoked: bool = False
    key: uuid.UUID | None = None


class EnrollmentMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = START
        self.model = Model()
        cmd = enrollment_mod.IssueEnrollmentToken(expires_in_s=TTL_S)
        events = enrollment_mod.issue(
            ENV, cmd, token_id=uuid.UUID(int=9), prefix="bye_abcdef", now=START
        )
        self.token_events: list[NewEvent] = [CODEC.encode(e) for e in events]
        self.agent_events: list[NewEvent] = []

    def token(self) -> enrollment_mod.EnrollmentToken:
        state = enrollment_mod.fold(decoded(e) for e in self.token_events)
        assert state is not None
        return state

    def agent(self) -> agent_mod.Agent | None:
        return agent_mod.fold(decoded(e) for e in self.agent_events)

    @rule(seconds=st.integers(min_value=0, max_value=400))
    def time_passes(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    @rule()
    def enroll(self) -> None:
        agent_id = uuid.uuid4()
        usable = self.model.token == "active" and self.now < START + timedelta(seconds=TTL_S)
        try:
            used = enrollment_mod.use(
                self.token(), environment_id=ENV.id, agent_id=agent_id, now=self.now
            )
        except enrollment_mod.EnrollmentTokenUnusable:
            assert not usable
            return
        assert usable
        key_id = uuid.uuid4()
        enrolled = agent_mod.enroll(
            ENV,
            agent_mod.EnrollAgent(),
            agent_id=agent_id,
            name="agent",
            enrollment_token_id=uuid.UUID(int=9),
            token_labels={},
            key_id=key_id,
            key_prefix="bya_abcdef",
        )
        self.token_events += [CODEC.encode(e) for e in used]
        self.agent_events += [CODEC.encode(e) for e in enrolled]
        self.model.token = "used"
        self.model.enrolled.append(agent_id)
        self.model.key = key_id

    @rule()
    def revoke_token(self) -> None:
        try:
            events = enrollment_mod.revoke(self.token(), environment_id=ENV.id)
        except Conflict:
            assert self.model.token == "used"
            return
        assert self.model.token != "used"
        assert (events == ()) == (self.model.token == "revoked")
        self.token_events += [CODEC.encode(e) for e in events]
        self.model.token = "revoked"

    @rule()
    def rotate(self) -> None:
        key_id = uuid.uuid4()
        try:
            events = agent_mod.rotate_key(
                self.agent(), environment_id=ENV.id, key_id=key_id, key_prefix="bya_x"
            )
        except NotFound:
            assert not self.model.enrolled or self.model.agent_revoked
            return
        assert self.model.enrolled and not self.model.agent_revoked
        self.agent_events += [CODEC.encode(e) for e in events]
        self.model.key = key_id

    @rule()
    def revoke_agent(self) -> None:
        try:
            events = agent_mod.revoke(self.agent(), environment_id=ENV.id)
        except NotFound:
            assert not self.model.enrolled
            return
        assert (events == ()) == self.model.agent_revoked
        self.agent_events += [CODEC.encode(e) for e in events]
        self.model.agent_revoked = True
        self.model.key = None

    @invariant()
    def one_token_enrolls_at_most_one_agent(self) -> None:
        assert len(self.model.enrolled) <= 1
        token = self.token()
        assert token.status == self.model.token
        assert token.agent_id == (self.model.enrolled[0] if self.model.enrolled else None)
        used = [e for e in self.token_events if e.event_type == "enrollment_token.used"]
        assert len(used) == len(self.model.enrolled)

    @invariant()
    def the_agent_holds_the_models_key(self) -> None:
        agent = self.agent()
        if agent is None:
            assert not self.model.enrolled
            return
        assert agent.key_id == self.model.key
        assert (agent.status == "revoked") == self.model.agent_revoked
        assert agent.version == len(self.agent_events)


TestEnrollmentMachine = EnrollmentMachine.TestCase
TestEnrollmentMachine.settings = settings(max_examples=200, stateful_step_count=25, deadline=None)
