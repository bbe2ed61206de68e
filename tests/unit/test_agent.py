"""The agent and enrollment token aggregates: pure rules, plain values."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from domain import agent as agent_mod
from domain import enrollment as enrollment_mod
from domain.codec import convert_command, default_codec
from domain.environment import Environment, EnvironmentSettings
from domain.errors import Conflict, InvalidHistory, InvalidInput, NotFound

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ENV = Environment(
    id=uuid.uuid4(),
    org_id=uuid.uuid4(),
    project_id=uuid.uuid4(),
    name="prod",
    posture="prod",
    settings=EnvironmentSettings(),
    status="active",
    version=1,
)


def issued(**body: object) -> enrollment_mod.EnrollmentToken:
    cmd = convert_command(enrollment_mod.IssueEnrollmentToken, body)
    events = enrollment_mod.issue(ENV, cmd, token_id=uuid.uuid4(), prefix="bye_abcdef", now=NOW)
    token = enrollment_mod.fold(events)
    assert token is not None
    return token


def enrolled(**body: object) -> agent_mod.Agent:
    cmd = convert_command(agent_mod.EnrollAgent, body)
    agent_id = uuid.uuid4()
    events = agent_mod.enroll(
        ENV,
        cmd,
        agent_id=agent_id,
        name=agent_mod.agent_name(cmd, agent_id=agent_id, taken=False),
        enrollment_token_id=uuid.uuid4(),
        token_labels={"zone": "eu"},
        key_id=uuid.uuid4(),
        key_prefix="bya_abcdef",
    )
    agent = agent_mod.fold(events)
    assert agent is not None
    return agent


def test_a_token_lives_an_hour_unless_asked_otherwise() -> None:
    assert issued().expires_at == NOW + timedelta(hours=1)
    assert issued(expires_in_s=600).expires_at == NOW + timedelta(minutes=10)
    assert issued(ttl_seconds=7 * 24 * 3600).expires_at == NOW + timedelta(days=7)
    for body in ({"expires_in_s": 59}, {"ttl_seconds": 7 * 24 * 3600 + 1}):
        with pytest.raises(InvalidInput):
            issued(**body)
    with pytest.raises(InvalidInput):
        issued(expires_in_s=600, ttl_seconds=600)


def test_a_token_is_used_once_before_it_expires_and_never_after_revocation() -> None:
    token = issued()
    agent_id = uuid.uuid4()
    events = enrollment_mod.use(token, environment_id=ENV.id, agent_id=agent_id, now=NOW)
    used = enrollment_mod.evolve(token, events[0])
    assert (used.status, used.agent_id, used.version) == ("used", agent_id, 2)
    with pytest.raises(enrollment_mod.EnrollmentTokenUnusable):
        enrollment_mod.use(used, environment_id=ENV.id, agent_id=uuid.uuid4(), now=NOW)

    late = NOW + timedelta(hours=1)
    assert enrollment_mod.shown_status(token, late) == "expired"
    with pytest.raises(enrollment_mod.EnrollmentTokenUnusable) as refused:
        enrollment_mod.use(token, environment_id=ENV.id, agent_id=agent_id, now=late)
    assert refused.value.context["status"] == "expired"

    revoked = enrollment_mod.evolve(token, enrollment_mod.revoke(token, environment_id=ENV.id)[0])
    assert revoked.status == "revoked"
    assert enrollment_mod.revoke(revoked, environment_id=ENV.id) == ()
    with pytest.raises(enrollment_mod.EnrollmentTokenUnusable):
        enrollment_mod.use(revoked, environment_id=ENV.id, agent_id=agent_id, now=NOW)
    with pytest.raises(Conflict) as conflict:
        enrollment_mod.revoke(used, environment_id=ENV.id)
    assert conflict.value.code == "enrollment_token_used"


def test_a_token_of_another_environment_does_not_exist_there() -> None:
    token = issued()
    with pytest.raises(NotFound):
        enrollment_mod.use(token, environment_id=uuid.uuid4(), agent_id=uuid.uuid4(), now=NOW)
    with pytest.raises(NotFound):
        enrollment_mod.revoke(token, environment_id=uuid.uuid4())


def test_an_agent_takes_its_tokens_labels_over_its_own() -> None:
    agent = enrolled(
        hostname="edge-1", labels={"zone": "mine", "rack": "4"}, capabilities=["b", "a", "b"]
    )
    assert agent.name == "edge-1" and agent.status == "active"
    assert agent.labels == {"zone": "eu", "rack": "4"}
    assert agent.capabilities == ("a", "b")


def test_a_derived_name_that_is_taken_gets_the_agent_ids_suffix() -> None:
    agent_id = uuid.UUID(int=0xABCDEF12 << 96)
    cmd = agent_mod.EnrollAgent(hostname="h" * 200)
    name = agent_mod.agent_name(cmd, agent_id=agent_id, taken=True)
    assert name == "h" * 91 + "-abcdef12" and len(name) == 100
    assert agent_mod.agent_name(agent_mod.EnrollAgent(), agent_id=agent_id, taken=False) == "agent"
    asked = agent_mod.EnrollAgent(name="mine")
    assert agent_mod.agent_name(asked, agent_id=agent_id, taken=True) == "mine"


def test_rotation_replaces_the_key_and_revocation_ends_the_agent() -> None:
    agent = enrolled()
    old_key = agent.key_id
    [rotated] = agent_mod.rotate_key(
        agent, environment_id=ENV.id, key_id=uuid.uuid4(), key_prefix="bya_zzzzzz"
    )
    assert isinstance(rotated, agent_mod.AgentKeyRotated) and rotated.previous_key_id == old_key
    agent = agent_mod.evolve(agent, rotated)
    assert (agent.key_id, agent.key_prefix, agent.version) == (rotated.key_id, "bya_zzzzzz", 2)

    [revoked] = agent_mod.revoke(agent, environment_id=ENV.id)
    agent = agent_mod.evolve(agent, revoked)
    assert (agent.status, agent.key_id, agent.version) == ("revoked", None, 3)
    assert agent_mod.revoke(agent, environment_id=ENV.id) == ()
    with pytest.raises(NotFound) as missing:
        agent_mod.rotate_key(agent, environment_id=ENV.id, key_id=uuid.uuid4(), key_prefix="x")
    assert missing.value.code == "agent_not_found"
    with pytest.raises(NotFound):
        agent_mod.revoke(enrolled(), environment_id=uuid.uuid4())


def test_histories_fold_and_round_trip_through_the_codec() -> None:
    codec = default_codec()
    cmd = agent_mod.EnrollAgent(name="a")
    events = [
        *agent_mod.enroll(
            ENV,
            cmd,
            agent_id=uuid.uuid4(),
            name="a",
            enrollment_token_id=uuid.uuid4(),
            token_labels={},
            key_id=uuid.uuid4(),
            key_prefix="bya_abcdef",
        ),
        agent_mod.AgentKeyRotated(key_id=uuid.uuid4(), key_prefix="bya_b"),
        agent_mod.AgentRevoked(),
    ]
    decoded = [codec.decode(codec.encode(e).event_type, 1, codec.encode(e).payload) for e in events]
    assert decoded == events
    assert agent_mod.fold(decoded) == agent_mod.fold(events)
    with pytest.raises(InvalidHistory):
        agent_mod.fold(events[1:])
    with pytest.raises(InvalidHistory):
        enrollment_mod.fold([enrollment_mod.EnrollmentTokenRevoked()])


def test_no_event_carries_a_secret_field() -> None:
    for cls in (*agent_mod.EVENTS, *enrollment_mod.EVENTS):
        names = set(cls.__struct_fields__)
        assert not names & {"token", "key", "api_key", "token_hash", "key_hash"}, cls


def test_enrollment_bodies_are_strict() -> None:
    for body in (
        {"hostname": "has space"},
        {"labels": {"Upper": "x"}},
        {"capabilities": ["UP"]},
        {"runtime_version": "-1"},
        {"name": ""},
        {"extra": 1},
    ):
        with pytest.raises(InvalidInput):
            convert_command(agent_mod.EnrollAgent, body)
    assert msgspec.convert({}, agent_mod.EnrollAgent) == agent_mod.EnrollAgent()
