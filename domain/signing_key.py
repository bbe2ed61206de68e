"""Signing keys of an organization: the Ed25519 keys approval credentials are signed with.

State machine (stream ``signing_key-<id>``)::

    (none) ──create──► active ──rotate (a new key takes over)──► retiring ──retire──► retired
                         └──────────────────retire───────────────────────────────────►

    ``retiring`` still verifies (agents keep it in their key set) but signs nothing
    new; ``retired`` verifies only what it signed before ``not_after`` (the
    retirement time), so a credential issued afterwards under its kid is refused
    by ``domain.credential.check_coverage`` as ``approval_unknown_key``. Retiring a
    retired key changes nothing. Several keys may be active at once (DOMAIN.md §5);
    the newest active one signs.

Events carry the public key and the validity window for audit, never the private
key: the write side keeps that encrypted with the organization's data key
(decision 0010) in a table of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Final, Literal, assert_never

import msgspec
from msgspec.structs import replace

from domain.codec import CODEC, Event
from domain.credential import SigningKey
from domain.errors import Conflict, InvalidHistory, NotFound
from domain.organization import Name

STREAM_TYPE: Final = "signing_key"

Status = Literal["active", "retiring", "retired"]


def stream_id(key_id: uuid.UUID) -> str:
    return f"{STREAM_TYPE}-{key_id}"


class CreateSigningKey(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /api/v1/orgs/{org}/signing-keys``: the key itself is generated server-side."""

    name: Name


class RotateSigningKey(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST …/signing-keys/{key}/rotate``: the new key's name (default: the old one's)."""

    name: Name | None = None


class SigningKeyState(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    org_id: uuid.UUID
    name: str
    kid: str
    public_key: bytes
    status: Status
    not_before: datetime
    not_after: datetime | None
    replaced_by: uuid.UUID | None
    version: int


class SigningKeyCreated(Event, tag="signing_key.created", frozen=True, kw_only=True):
    key_id: uuid.UUID
    org_id: uuid.UUID
    name: str
    kid: str
    public_key: bytes  # raw Ed25519 public key; the private key never reaches an event
    not_before: datetime
    replaces: uuid.UUID | None = None


class SigningKeyRotatedOut(Event, tag="signing_key.rotated_out", frozen=True, kw_only=True):
    replaced_by: uuid.UUID
    at: datetime


class SigningKeyRetired(Event, tag="signing_key.retired", frozen=True, kw_only=True):
    not_after: datetime


SigningKeyEvent = SigningKeyCreated | SigningKeyRotatedOut | SigningKeyRetired
EVENTS: Final = (SigningKeyCreated, SigningKeyRotatedOut, SigningKeyRetired)
CODEC.register(*EVENTS)


class SigningKeyIllegalTransition(Conflict):
    code = "signing_key_illegal_transition"


def evolve(state: SigningKeyState | None, event: SigningKeyEvent) -> SigningKeyState:
    if isinstance(event, SigningKeyCreated):
        if state is not None:
            raise InvalidHistory("signing key created twice", context={"key_id": str(state.id)})
        return SigningKeyState(
            id=event.key_id,
            org_id=event.org_id,
            name=event.name,
            kid=event.kid,
            public_key=event.public_key,
            status="active",
            not_before=event.not_before,
            not_after=None,
            replaced_by=None,
            version=1,
        )
    if state is None:
        raise InvalidHistory(f"{type(event).__name__} before signing_key.created")
    version = state.version + 1
    match event:
        case SigningKeyRotatedOut(replaced_by=by):
            return replace(state, status="retiring", replaced_by=by, version=version)
        case SigningKeyRetired(not_after=not_after):
            return replace(state, status="retired", not_after=not_after, version=version)
        case _:
            assert_never(event)


def fold(events: Iterable[Event]) -> SigningKeyState | None:
    state: SigningKeyState | None = None
    for event in events:
        if not isinstance(event, SigningKeyEvent):
            raise InvalidHistory(f"{type(event).__name__} is not a signing key event")
        state = evolve(state, event)
    return state


def require_key(state: SigningKeyState | None, org_id: uuid.UUID) -> SigningKeyState:
    if state is None or state.org_id != org_id:
        raise NotFound("signing key not found", code="signing_key_not_found")
    return state


def create_key(
    *,
    key_id: uuid.UUID,
    org_id: uuid.UUID,
    name: str,
    kid: str,
    public_key: bytes,
    now: datetime,
    replaces: uuid.UUID | None = None,
) -> tuple[SigningKeyEvent, ...]:
    return (
        SigningKeyCreated(
            key_id=key_id,
            org_id=org_id,
            name=name,
            kid=kid,
            public_key=public_key,
            not_before=_second(now),
            replaces=replaces,
        ),
    )


def rotate_out(
    state: SigningKeyState, *, replaced_by: uuid.UUID, now: datetime
) -> tuple[SigningKeyEvent, ...]:
    """The old key's half of a rotation; the caller creates ``replaced_by`` in the same append."""
    if state.status != "active":
        raise SigningKeyIllegalTransition(
            f"cannot rotate a {state.status} signing key",
            context={"key_id": str(state.id), "status": state.status},
        )
    return (SigningKeyRotatedOut(replaced_by=replaced_by, at=_second(now)),)


def retire(state: SigningKeyState, *, now: datetime) -> tuple[SigningKeyEvent, ...]:
    if state.status == "retired":
        return ()
    return (SigningKeyRetired(not_after=_second(now)),)


def public_key_of(state: SigningKeyState) -> SigningKey:
    """The key as the key set lists it: a retiring key still verifies, so it is active there."""
    return SigningKey(
        kid=state.kid,
        public_key=state.public_key,
        status="retired" if state.status == "retired" else "active",
        not_before=state.not_before,
        not_after=state.not_after,
    )


def _second(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("domain times are timezone-aware")
    return at.astimezone(UTC).replace(microsecond=0)
