"""Agent: one ByteOr runtime enrolled in one environment (DOMAIN.md §2, §6).

State machine (stream ``agent-<id>``)::

    (none) ──enroll──► active ──rotate_key──► active   (a new runtime key; the
                         │                             old one stops at once)
                         └──revoke──► revoked          (terminal; its key with it)

    revoke of a revoked agent changes nothing (no event); rotate_key of a
    revoked or missing agent answers NotFound (agent_not_found).

An agent is created by an enrollment token (domain/enrollment.py), which is
consumed in the same transaction; the token's labels are set on the agent and
win over labels the agent reports for itself, so an operator's labels cannot
be overridden by the machine being enrolled. Runtime keys are credentials: the
events name a key by id and visible prefix only, never the key or its hash.

Name (DOMAIN.md §6): the requested ``name``, else one derived from the
``hostname`` the agent reports (else ``agent``); a derived name already taken
in the environment gets a suffix from the agent id, so enrollment never fails
on a derived name, while a requested name that is taken is a conflict.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Annotated, Final, Literal, assert_never

import msgspec
from msgspec.structs import replace

from domain.codec import CODEC, Event, register_pattern_hint
from domain.environment import Environment
from domain.errors import InvalidHistory, NotFound
from domain.organization import NAME_PATTERN, Name

STREAM_TYPE: Final = "agent"

Status = Literal["active", "revoked"]

_END = r"(?![\s\S])"
LABEL_KEY_PATTERN: Final = rf"^[a-z][a-z0-9_.\-/]{{0,62}}{_END}"
LABEL_VALUE_PATTERN: Final = r"^[^\x00-\x1f\x7f-\x9f]*(?![\s\S])"
HOSTNAME_PATTERN: Final = (
    rf"^[A-Za-z0-9](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?"
    rf"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?)*{_END}"
)
RUNTIME_VERSION_PATTERN: Final = rf"^[0-9A-Za-z][0-9A-Za-z.+_\-]{{0,63}}{_END}"
CAPABILITY_PATTERN: Final = rf"^[a-z][a-z0-9_.:\-]{{0,63}}{_END}"

register_pattern_hint(LABEL_KEY_PATTERN, "label keys are lowercase, 1..63 characters")
register_pattern_hint(LABEL_VALUE_PATTERN, "label values have no control characters")
register_pattern_hint(HOSTNAME_PATTERN, "must be a DNS host name such as edge-1.example.com")
register_pattern_hint(RUNTIME_VERSION_PATTERN, "a version such as 1.4.2 or 2.0.0-rc.1")
register_pattern_hint(CAPABILITY_PATTERN, "capabilities are lowercase, 1..64 characters")

LabelKey = Annotated[str, msgspec.Meta(pattern=LABEL_KEY_PATTERN)]
LabelValue = Annotated[str, msgspec.Meta(max_length=200, pattern=LABEL_VALUE_PATTERN)]
Labels = Annotated[dict[LabelKey, LabelValue], msgspec.Meta(max_length=50)]
Hostname = Annotated[str, msgspec.Meta(min_length=1, max_length=253, pattern=HOSTNAME_PATTERN)]
RuntimeVersion = Annotated[str, msgspec.Meta(pattern=RUNTIME_VERSION_PATTERN)]
Capability = Annotated[str, msgspec.Meta(pattern=CAPABILITY_PATTERN)]

DEFAULT_NAME: Final = "agent"
_NAME_MAX = 100
_SUFFIX = 9  # "-" + 8 hex digits of the agent id


def stream_id(agent_id: uuid.UUID) -> str:
    return f"{STREAM_TYPE}-{agent_id}"


class Agent(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    org_id: uuid.UUID
    project_id: uuid.UUID
    environment_id: uuid.UUID
    name: str
    hostname: str | None
    labels: dict[str, str]
    runtime_version: str | None
    capabilities: tuple[str, ...]
    enrollment_token_id: uuid.UUID
    key_id: uuid.UUID | None  # the live runtime key; None once revoked
    key_prefix: str | None
    status: Status
    version: int


# --- events ----------------------------------------------------------------------


class AgentEnrolled(Event, tag="agent.enrolled", frozen=True, kw_only=True):
    agent_id: uuid.UUID
    org_id: uuid.UUID
    project_id: uuid.UUID
    environment_id: uuid.UUID
    name: str
    enrollment_token_id: uuid.UUID
    key_id: uuid.UUID
    key_prefix: str
    hostname: str | None = None
    labels: dict[str, str] = {}
    runtime_version: str | None = None
    capabilities: tuple[str, ...] = ()


class AgentKeyRotated(Event, tag="agent.key_rotated", frozen=True, kw_only=True):
    """A new runtime key replaced ``previous_key_id``, which stopped working at once."""

    key_id: uuid.UUID
    key_prefix: str
    previous_key_id: uuid.UUID | None = None


class AgentRevoked(Event, tag="agent.revoked", frozen=True, kw_only=True):
    """The agent and its runtime key were revoked."""

    key_id: uuid.UUID | None = None


AgentEvent = AgentEnrolled | AgentKeyRotated | AgentRevoked
EVENTS: Final = (AgentEnrolled, AgentKeyRotated, AgentRevoked)
CODEC.register(*EVENTS)


# --- commands (wire) ---------------------------------------------------------------


class EnrollAgent(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The body of ``POST …/environments/{env}/agents``; every field is optional."""

    name: Name | None = None
    hostname: Hostname | None = None
    labels: Labels = {}
    runtime_version: RuntimeVersion | None = None
    capabilities: Annotated[list[Capability], msgspec.Meta(max_length=64)] = []


# --- evolve ----------------------------------------------------------------------------


def evolve(state: Agent | None, event: AgentEvent) -> Agent:
    if isinstance(event, AgentEnrolled):
        if state is not None:
            raise InvalidHistory("agent enrolled twice", context={"agent_id": str(state.id)})
        return Agent(
            id=event.agent_id,
            org_id=event.org_id,
            project_id=event.project_id,
            environment_id=event.environment_id,
            name=event.name,
            hostname=event.hostname,
            labels=dict(event.labels),
            runtime_version=event.runtime_version,
            capabilities=tuple(event.capabilities),
            enrollment_token_id=event.enrollment_token_id,
            key_id=event.key_id,
            key_prefix=event.key_prefix,
            status="active",
            version=1,
        )
    if state is None:
        raise InvalidHistory(f"{type(event).__name__} before agent.enrolled")
    version = state.version + 1
    match event:
        case AgentKeyRotated(key_id=key_id, key_prefix=key_prefix):
            return replace(state, key_id=key_id, key_prefix=key_prefix, version=version)
        case AgentRevoked():
            return replace(state, status="revoked", key_id=None, key_prefix=None, version=version)
        case _:
            assert_never(event)


def fold(events: Iterable[Event]) -> Agent | None:
    state: Agent | None = None
    for event in events:
        if not isinstance(event, EVENTS):
            raise InvalidHistory(f"{type(event).__name__} is not an agent event")
        state = evolve(state, event)
    return state


# --- decisions ---------------------------------------------------------------------------


def derived_name(cmd: EnrollAgent) -> str:
    """The name an agent gets when it asks for none: its host name, else ``agent``."""
    if cmd.name is not None:
        return cmd.name
    return (cmd.hostname or DEFAULT_NAME)[:_NAME_MAX]


def agent_name(cmd: EnrollAgent, *, agent_id: uuid.UUID, taken: bool) -> str:
    """The name to enroll under, given whether ``derived_name(cmd)`` is ``taken``
    by a live agent of the environment. A requested name that is taken is kept
    (the caller's uniqueness check then refuses it); a derived one gets a suffix."""
    name = derived_name(cmd)
    if cmd.name is not None or not taken:
        return name
    return f"{name[: _NAME_MAX - _SUFFIX]}-{agent_id.hex[:8]}"


def require_agent(agent: Agent | None, environment_id: uuid.UUID) -> Agent:
    """The live agent if it belongs to ``environment_id``; else NotFound."""
    if agent is None or agent.status != "active" or agent.environment_id != environment_id:
        context: dict[str, object] = {"environment_id": str(environment_id)}
        if agent is not None and agent.environment_id == environment_id:
            context["agent_id"] = str(agent.id)
            context["status"] = agent.status
        raise NotFound("agent not found", code="agent_not_found", context=context)
    return agent


def enroll(
    environment: Environment,
    cmd: EnrollAgent,
    *,
    agent_id: uuid.UUID,
    name: str,
    enrollment_token_id: uuid.UUID,
    token_labels: Mapping[str, str],
    key_id: uuid.UUID,
    key_prefix: str,
) -> tuple[AgentEvent, ...]:
    """Enroll into ``environment`` (already checked live by the caller, with the
    enrollment token it was authorized by)."""
    if not _is_name(name):
        raise ValueError(f"{name!r} is not a valid agent name")
    return (
        AgentEnrolled(
            agent_id=agent_id,
            org_id=environment.org_id,
            project_id=environment.project_id,
            environment_id=environment.id,
            name=name,
            enrollment_token_id=enrollment_token_id,
            key_id=key_id,
            key_prefix=key_prefix,
            hostname=cmd.hostname,
            labels={**cmd.labels, **token_labels},
            runtime_version=cmd.runtime_version,
            capabilities=tuple(sorted(set(cmd.capabilities))),
        ),
    )


def rotate_key(
    agent: Agent | None, *, environment_id: uuid.UUID, key_id: uuid.UUID, key_prefix: str
) -> tuple[AgentEvent, ...]:
    current = require_agent(agent, environment_id)
    return (AgentKeyRotated(key_id=key_id, key_prefix=key_prefix, previous_key_id=current.key_id),)


def revoke(agent: Agent | None, *, environment_id: uuid.UUID) -> tuple[AgentEvent, ...]:
    if agent is not None and agent.status == "revoked" and agent.environment_id == environment_id:
        return ()
    current = require_agent(agent, environment_id)
    return (AgentRevoked(key_id=current.key_id),)


def _is_name(name: str) -> bool:
    return 1 <= len(name) <= _NAME_MAX and re.match(NAME_PATTERN, name) is not None
