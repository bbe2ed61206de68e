"""User: a person who can sign in (minimal, for bootstrap).

State machine (stream ``user-<id>``)::

    (none) ──create_user──► active

Emails are stored lowercased, so ``Ada@Example.com`` and ``ada@example.com``
are one address. The aggregate cannot see other users, so uniqueness of an
email is enforced outside it (a unique index on the users read model, or a
reservation stream keyed by the email).

Credentials (password hashes, tokens) never go into these events; they get
their own tables (commands/credentials.py). Events record only that a token
was issued or revoked, or a password set, with what an auditor needs to
recognise it (id, name, visible prefix).

An OpenID provider's account (issuer and subject) is linked to a user at its
first sign-in (``user.oidc_linked``); which account is whose is kept in a table
the aggregate cannot see (commands/oidc_login.py). Sessions record how they
were opened (``method``: ``password`` or ``oidc``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Final, Literal, assert_never

import msgspec
from msgspec.structs import replace

from domain.codec import CODEC, Event, register_pattern_hint
from domain.errors import InvalidHistory, NotFound

STREAM_TYPE: Final = "user"

Status = Literal["active"]
LoginMethod = Literal["password", "oidc"]

# The WHATWG HTML "valid e-mail address" rule, with a dotted domain required and
# RFC 5321 length limits (64 for the local part, 63 per label, 254 in total).
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
EMAIL_PATTERN: Final = (
    rf"^[A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]{{1,64}}@{_LABEL}(?:\.{_LABEL})+(?![\s\S])"
)
register_pattern_hint(EMAIL_PATTERN, "must be an email address such as ada@example.com")

Email = Annotated[str, msgspec.Meta(max_length=254, pattern=EMAIL_PATTERN)]


def stream_id(user_id: uuid.UUID) -> str:
    return f"{STREAM_TYPE}-{user_id}"


def normalize_email(email: str) -> str:
    return email.lower()


class User(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    email: str
    status: Status
    version: int


class UserCreated(Event, tag="user.created", frozen=True, kw_only=True):
    user_id: uuid.UUID
    email: str


class UserTokenIssued(Event, tag="user.token_issued", frozen=True, kw_only=True):
    """A personal access token was issued. Never the token or its hash: only
    what an auditor needs to recognise it (its id, name and visible prefix)."""

    token_id: uuid.UUID
    name: str
    prefix: str
    expires_at: datetime | None = None
    scopes: tuple[str, ...] = ()


class UserTokenRevoked(Event, tag="user.token_revoked", frozen=True, kw_only=True):
    """A personal access token was revoked (by its owner)."""

    token_id: uuid.UUID


class UserPasswordSet(Event, tag="user.password_set", frozen=True, kw_only=True):
    """A local password was set. Never the password or its hash."""


class UserSessionStarted(Event, tag="user.session_started", frozen=True, kw_only=True):
    """A login opened a session. Never the session token or its hash."""

    session_id: uuid.UUID
    prefix: str
    expires_at: datetime
    method: LoginMethod = "password"


class UserSessionEnded(Event, tag="user.session_ended", frozen=True, kw_only=True):
    """The user logged out of a session."""

    session_id: uuid.UUID


class UserOidcLinked(Event, tag="user.oidc_linked", frozen=True, kw_only=True):
    """An OpenID provider's account (issuer and subject) signs in as this user
    from now on. Recorded at its first sign-in, never changed."""

    issuer: str
    subject: str


UserEvent = (
    UserCreated
    | UserTokenIssued
    | UserTokenRevoked
    | UserPasswordSet
    | UserSessionStarted
    | UserSessionEnded
    | UserOidcLinked
)
EVENTS: Final = (
    UserCreated,
    UserTokenIssued,
    UserTokenRevoked,
    UserPasswordSet,
    UserSessionStarted,
    UserSessionEnded,
    UserOidcLinked,
)
CODEC.register(*EVENTS)


class CreateUser(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    email: Email


def evolve(state: User | None, event: UserEvent) -> User:
    match event:
        case UserCreated(user_id=user_id, email=email):
            if state is not None:
                raise InvalidHistory("user created twice", context={"user_id": str(state.id)})
            return User(id=user_id, email=email, status="active", version=1)
        case (
            UserTokenIssued()
            | UserTokenRevoked()
            | UserPasswordSet()
            | UserSessionStarted()
            | UserSessionEnded()
            | UserOidcLinked()
        ):
            if state is None:
                raise InvalidHistory(f"{type(event).__name__} before user.created")
            return replace(state, version=state.version + 1)
        case _:
            assert_never(event)


def fold(events: Iterable[Event]) -> User | None:
    state: User | None = None
    for event in events:
        if not isinstance(event, EVENTS):
            raise InvalidHistory(f"{type(event).__name__} is not a user event")
        state = evolve(state, event)
    return state


def require_user(user: User | None) -> User:
    if user is None:
        raise NotFound("user not found", code="user_not_found")
    return user


def create_user(cmd: CreateUser, *, user_id: uuid.UUID) -> tuple[UserEvent, ...]:
    return (UserCreated(user_id=user_id, email=normalize_email(cmd.email)),)


def issue_token(
    user: User | None,
    *,
    token_id: uuid.UUID,
    name: str,
    prefix: str,
    expires_at: datetime | None = None,
    scopes: tuple[str, ...] = (),
) -> tuple[UserEvent, ...]:
    require_user(user)
    return (
        UserTokenIssued(
            token_id=token_id, name=name, prefix=prefix, expires_at=expires_at, scopes=scopes
        ),
    )


def revoke_token(user: User | None, *, token_id: uuid.UUID) -> tuple[UserEvent, ...]:
    """Record a revocation. Whether the token exists and is the user's own is
    checked against the credential table, which the aggregate cannot see."""
    require_user(user)
    return (UserTokenRevoked(token_id=token_id),)


def set_password(user: User | None) -> tuple[UserEvent, ...]:
    require_user(user)
    return (UserPasswordSet(),)


def start_session(
    user: User | None,
    *,
    session_id: uuid.UUID,
    prefix: str,
    expires_at: datetime,
    method: LoginMethod = "password",
) -> tuple[UserEvent, ...]:
    require_user(user)
    return (
        UserSessionStarted(
            session_id=session_id, prefix=prefix, expires_at=expires_at, method=method
        ),
    )


def end_session(user: User | None, *, session_id: uuid.UUID) -> tuple[UserEvent, ...]:
    require_user(user)
    return (UserSessionEnded(session_id=session_id),)


def link_oidc(user: User | None, *, issuer: str, subject: str) -> tuple[UserEvent, ...]:
    """Record that ``issuer``'s account ``subject`` signs in as ``user``. Whether the
    account is already someone's is checked against the identity table, which
    the aggregate cannot see."""
    require_user(user)
    return (UserOidcLinked(issuer=issuer, subject=subject),)
