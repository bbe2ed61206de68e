"""Enrollment token: permission to enroll one agent into one environment (DOMAIN.md §2, §6).

State machine (stream ``enrollment_token-<id>``)::

    (none) ──issue──► active ──use──► used         (by exactly one agent)
                        │
                        └──revoke──► revoked

    expired is not a state but a time: an active token past ``expires_at``
    can no longer be used (use raises EnrollmentTokenUnusable), and can still
    be revoked. used and revoked are terminal: revoking a revoked token changes
    nothing (no event); revoking a used one is a conflict (the agent it
    enrolled is revoked instead).

The token itself (``bye_…``) never appears here: events name it by id and
visible prefix. Issued by a ``ManageEnvironment`` holder with a TTL of
``DEFAULT_TTL_S`` unless asked otherwise, at most ``MAX_TTL_S``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Annotated, Final, Literal, assert_never

import msgspec
from msgspec.structs import replace

from domain.agent import Labels
from domain.codec import CODEC, Event
from domain.environment import Environment
from domain.errors import Conflict, InvalidHistory, NotFound
from domain.organization import Name

STREAM_TYPE: Final = "enrollment_token"

DEFAULT_TTL_S: Final = 3600
MIN_TTL_S: Final = 60
MAX_TTL_S: Final = 7 * 24 * 3600

Status = Literal["active", "used", "revoked"]
# What a list shows: the status, or ``expired`` for an active token past its time.
Shown = Literal["active", "used", "revoked", "expired"]

TtlSeconds = Annotated[
    int,
    msgspec.Meta(
        ge=MIN_TTL_S,
        le=MAX_TTL_S,
        description=f"seconds until the token expires, {MIN_TTL_S}..{MAX_TTL_S}",
    ),
]


def stream_id(token_id: uuid.UUID) -> str:
    return f"{STREAM_TYPE}-{token_id}"


class EnrollmentToken(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    org_id: uuid.UUID
    project_id: uuid.UUID
    environment_id: uuid.UUID
    name: str | None
    labels: dict[str, str]
    prefix: str
    expires_at: datetime
    status: Status
    agent_id: uuid.UUID | None
    version: int


class EnrollmentTokenUnusable(Conflict):
    """The token is used, revoked or expired. The HTTP layer answers 401 for it,
    like for any credential that no longer authenticates."""

    code = "enrollment_token_unusable"


# --- events ----------------------------------------------------------------------


class EnrollmentTokenIssued(Event, tag="enrollment_token.issued", frozen=True, kw_only=True):
    token_id: uuid.UUID
    org_id: uuid.UUID
    project_id: uuid.UUID
    environment_id: uuid.UUID
    prefix: str
    expires_at: datetime
    name: str | None = None
    labels: dict[str, str] = {}


class EnrollmentTokenUsed(Event, tag="enrollment_token.used", frozen=True, kw_only=True):
    agent_id: uuid.UUID


class EnrollmentTokenRevoked(Event, tag="enrollment_token.revoked", frozen=True, kw_only=True):
    pass


EnrollmentTokenEvent = EnrollmentTokenIssued | EnrollmentTokenUsed | EnrollmentTokenRevoked
EVENTS: Final = (EnrollmentTokenIssued, EnrollmentTokenUsed, EnrollmentTokenRevoked)
CODEC.register(*EVENTS)


# --- commands (wire) ---------------------------------------------------------------


class IssueEnrollmentToken(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``expires_in_s`` is DOMAIN.md §11's name; ``ttl_seconds`` is accepted as its alias."""

    expires_in_s: TtlSeconds | None = None
    ttl_seconds: TtlSeconds | None = None
    name: Name | None = None
    labels: Labels = {}

    def __post_init__(self) -> None:
        if self.expires_in_s is not None and self.ttl_seconds is not None:
            raise ValueError("give `expires_in_s` or `ttl_seconds`, not both")

    @property
    def ttl_s(self) -> int:
        if self.expires_in_s is not None:
            return self.expires_in_s
        return DEFAULT_TTL_S if self.ttl_seconds is None else self.ttl_seconds


# --- evolve ----------------------------------------------------------------------------


def evolve(state: EnrollmentToken | None, event: EnrollmentTokenEvent) -> EnrollmentToken:
    if isinstance(event, EnrollmentTokenIssued):
        if state is not None:
            raise InvalidHistory("enrollment token issued twice", context={"id": str(state.id)})
        return EnrollmentToken(
            id=event.token_id,
            org_id=event.org_id,
            project_id=event.project_id,
            environment_id=event.environment_id,
            name=event.name,
            labels=dict(event.labels),
            prefix=event.prefix,
            expires_at=event.expires_at,
            status="active",
            agent_id=None,
            version=1,
        )
    if state is None:
        raise InvalidHistory(f"{type(event).__name__} before enrollment_token.issued")
    version = state.version + 1
    match event:
        case EnrollmentTokenUsed(agent_id=agent_id):
            return replace(state, status="used", agent_id=agent_id, version=version)
        case EnrollmentTokenRevoked():
            return replace(state, status="revoked", version=version)
        case _:
            assert_never(event)


def fold(events: Iterable[Event]) -> EnrollmentToken | None:
    state: EnrollmentToken | None = None
    for event in events:
        if not isinstance(event, EVENTS):
            raise InvalidHistory(f"{type(event).__name__} is not an enrollment token event")
        state = evolve(state, event)
    return state


# --- decisions ---------------------------------------------------------------------------


def shown_status(token: EnrollmentToken, now: datetime) -> Shown:
    if token.status == "active" and token.expires_at <= now:
        return "expired"
    return token.status


def issue(
    environment: Environment,
    cmd: IssueEnrollmentToken,
    *,
    token_id: uuid.UUID,
    prefix: str,
    now: datetime,
) -> tuple[EnrollmentTokenEvent, ...]:
    """Issue a token for ``environment`` (checked live and authorized by the caller)."""
    return (
        EnrollmentTokenIssued(
            token_id=token_id,
            org_id=environment.org_id,
            project_id=environment.project_id,
            environment_id=environment.id,
            prefix=prefix,
            expires_at=now + timedelta(seconds=cmd.ttl_s),
            name=cmd.name,
            labels=dict(cmd.labels),
        ),
    )


def require_token(token: EnrollmentToken | None, environment_id: uuid.UUID) -> EnrollmentToken:
    if token is None or token.environment_id != environment_id:
        raise NotFound(
            "enrollment token not found",
            code="enrollment_token_not_found",
            context={"environment_id": str(environment_id)},
        )
    return token


def use(
    token: EnrollmentToken | None,
    *,
    environment_id: uuid.UUID,
    agent_id: uuid.UUID,
    now: datetime,
) -> tuple[EnrollmentTokenEvent, ...]:
    """Consume the token for ``agent_id``: once, in its own environment, before it expires."""
    current = require_token(token, environment_id)
    shown = shown_status(current, now)
    if shown != "active":
        raise EnrollmentTokenUnusable(
            f"the enrollment token is {shown}",
            context={"token_id": str(current.id), "status": shown},
        )
    return (EnrollmentTokenUsed(agent_id=agent_id),)


def revoke(
    token: EnrollmentToken | None, *, environment_id: uuid.UUID
) -> tuple[EnrollmentTokenEvent, ...]:
    current = require_token(token, environment_id)
    if current.status == "revoked":
        return ()
    if current.status == "used":
        raise Conflict(
            "the enrollment token was already used; revoke the agent it enrolled instead",
            code="enrollment_token_used",
            context={"token_id": str(current.id), "agent_id": str(current.agent_id)},
        )
    return (EnrollmentTokenRevoked(),)
