"""Organization: the tenant root, and who belongs to it.

State machine (stream ``organization-<id>``)::

    (none) ──create_organization──► active ──update_organization──► active
                                      │      (nothing changed → no event)
                                      │
                                      └──delete_organization──► deleted

    deleted is terminal: every later command answers NotFound
    (organization_not_found), as if the organization never existed.

API keys (``api_keys``: str(key id) → role, active keys only)::

    absent ──issue_api_key──► active ──revoke_api_key──► absent (revoked)

Members (``members``: str(user id) → role), only while active::

    absent ──add_member──► role ──add_member / change_member_role──► other role
                             │
                             └──remove_member──► absent

    create_organization(created_by=U) makes U the first org_admin.
    Once an org has an org_admin it keeps one: demoting or removing the last
    org_admin is a Conflict (last_org_admin).

Settings are a flat map of ``lower_snake`` keys to scalar values. An update
that carries ``settings`` replaces the whole map (``null`` values are values,
so a merge could not express deleting a key).

The name and description types defined here are shared by every tenancy
resource (projects, environments).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Annotated, Final, Literal, assert_never

import msgspec
from msgspec.structs import replace

from domain.codec import CODEC, Event, register_pattern_hint
from domain.errors import Conflict, FieldError, InvalidHistory, InvalidInput, NotFound

STREAM_TYPE: Final = "organization"

Role = Literal["org_admin", "project_admin", "operator", "viewer"]
ROLES: Final[tuple[Role, ...]] = ("org_admin", "project_admin", "operator", "viewer")
Status = Literal["active", "deleted"]
SettingValue = str | int | bool | None

# Python's ``$`` also matches before a trailing newline; ``(?![\s\S])`` is "end of
# text" in both Python and ECMA (JSON Schema) regex dialects.
_END = r"(?![\s\S])"
_VISIBLE = r"[^\x00-\x1f\x7f-\x9f\s]"  # no control characters, no whitespace
_PRINTABLE = r"[^\x00-\x1f\x7f-\x9f]"  # no control characters
NAME_PATTERN: Final = rf"^{_VISIBLE}(?:{_PRINTABLE}*{_VISIBLE})?{_END}"
SETTING_KEY_PATTERN: Final = rf"^[a-z][a-z0-9_]{{0,63}}{_END}"

register_pattern_hint(
    NAME_PATTERN, "must not contain control characters or start or end with whitespace"
)
register_pattern_hint(SETTING_KEY_PATTERN, "keys are lower_snake_case, 1..64 characters")

Name = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=100,
        pattern=NAME_PATTERN,
        description="1..100 characters; no control characters, no leading/trailing space",
    ),
]
Description = Annotated[str, msgspec.Meta(max_length=1000)]
SettingKey = Annotated[str, msgspec.Meta(pattern=SETTING_KEY_PATTERN)]
SettingValueInput = (
    Annotated[str, msgspec.Meta(max_length=1000)]
    | Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
    | bool
    | None
)
SettingsInput = Annotated[dict[SettingKey, SettingValueInput], msgspec.Meta(max_length=50)]


def stream_id(org_id: uuid.UUID) -> str:
    return f"{STREAM_TYPE}-{org_id}"


# --- state -----------------------------------------------------------------------


class Organization(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    name: str
    settings: dict[str, SettingValue]
    members: dict[str, Role]
    status: Status
    version: int
    # Organization API keys not yet revoked: str(key id) → role.
    api_keys: dict[str, Role] = {}


# --- events ----------------------------------------------------------------------


class OrganizationCreated(Event, tag="organization.created", frozen=True, kw_only=True):
    org_id: uuid.UUID
    name: str
    settings: dict[str, SettingValue] = {}


class OrganizationUpdated(Event, tag="organization.updated", frozen=True, kw_only=True):
    """Only the fields that changed are set; ``settings`` is the whole new map."""

    name: str | None = None
    settings: dict[str, SettingValue] | None = None


class OrganizationDeleted(Event, tag="organization.deleted", frozen=True, kw_only=True):
    pass


class OrganizationMemberAdded(Event, tag="organization.member_added", frozen=True, kw_only=True):
    user_id: uuid.UUID
    role: Role


class OrganizationMemberRoleChanged(
    Event, tag="organization.member_role_changed", frozen=True, kw_only=True
):
    user_id: uuid.UUID
    role: Role


class OrganizationMemberRemoved(
    Event, tag="organization.member_removed", frozen=True, kw_only=True
):
    user_id: uuid.UUID


class OrganizationApiKeyIssued(Event, tag="organization.api_key_issued", frozen=True, kw_only=True):
    """An organization API key was issued. Never the key or its hash: its id,
    name, role and visible prefix."""

    key_id: uuid.UUID
    name: str
    role: Role
    prefix: str
    expires_at: datetime | None = None


class OrganizationApiKeyRevoked(
    Event, tag="organization.api_key_revoked", frozen=True, kw_only=True
):
    key_id: uuid.UUID


OrganizationEvent = (
    OrganizationCreated
    | OrganizationUpdated
    | OrganizationDeleted
    | OrganizationMemberAdded
    | OrganizationMemberRoleChanged
    | OrganizationMemberRemoved
    | OrganizationApiKeyIssued
    | OrganizationApiKeyRevoked
)
EVENTS: Final = (
    OrganizationCreated,
    OrganizationUpdated,
    OrganizationDeleted,
    OrganizationMemberAdded,
    OrganizationMemberRoleChanged,
    OrganizationMemberRemoved,
    OrganizationApiKeyIssued,
    OrganizationApiKeyRevoked,
)
CODEC.register(*EVENTS)


# --- commands (wire) ---------------------------------------------------------------


class CreateOrganization(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Name
    settings: SettingsInput = {}


class UpdateOrganization(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A partial update; absent or ``null`` fields stay as they are."""

    name: Name | None = None
    settings: SettingsInput | None = None

    def __post_init__(self) -> None:
        if self.name is None and self.settings is None:
            raise ValueError("at least one of `name`, `settings` is required")


# --- evolve ----------------------------------------------------------------------------


def evolve(state: Organization | None, event: OrganizationEvent) -> Organization:
    if isinstance(event, OrganizationCreated):
        if state is not None:
            raise InvalidHistory("organization created twice", context={"org_id": str(state.id)})
        return Organization(
            id=event.org_id,
            name=event.name,
            settings=dict(event.settings),
            members={},
            status="active",
            version=1,
        )
    if state is None:
        raise InvalidHistory(f"{type(event).__name__} before organization.created")
    version = state.version + 1
    match event:
        case OrganizationUpdated(name=name, settings=settings):
            return replace(
                state,
                name=state.name if name is None else name,
                settings=state.settings if settings is None else dict(settings),
                version=version,
            )
        case OrganizationDeleted():
            return replace(state, status="deleted", version=version)
        case (
            OrganizationMemberAdded(user_id=user_id, role=role)
            | OrganizationMemberRoleChanged(user_id=user_id, role=role)
        ):
            return replace(state, members={**state.members, str(user_id): role}, version=version)
        case OrganizationMemberRemoved(user_id=user_id):
            members = {k: v for k, v in state.members.items() if k != str(user_id)}
            return replace(state, members=members, version=version)
        case OrganizationApiKeyIssued(key_id=key_id, role=role):
            return replace(state, api_keys={**state.api_keys, str(key_id): role}, version=version)
        case OrganizationApiKeyRevoked(key_id=key_id):
            keys = {k: v for k, v in state.api_keys.items() if k != str(key_id)}
            return replace(state, api_keys=keys, version=version)
        case _:
            assert_never(event)


def fold(events: Iterable[Event]) -> Organization | None:
    state: Organization | None = None
    for event in events:
        if not isinstance(event, OrganizationEvent):
            raise InvalidHistory(f"{type(event).__name__} is not an organization event")
        state = evolve(state, event)
    return state


# --- decisions ---------------------------------------------------------------------------


def require_organization(org: Organization | None) -> Organization:
    """The organization if it exists and is active; NotFound otherwise."""
    if org is None:
        raise NotFound("organization not found", code="organization_not_found")
    if org.status != "active":
        raise NotFound(
            "organization not found",
            code="organization_not_found",
            context={"org_id": str(org.id), "status": org.status},
        )
    return org


def create_organization(
    cmd: CreateOrganization, *, org_id: uuid.UUID, created_by: uuid.UUID | None = None
) -> tuple[OrganizationEvent, ...]:
    created = OrganizationCreated(org_id=org_id, name=cmd.name, settings=dict(cmd.settings))
    if created_by is None:
        return (created,)
    return (created, OrganizationMemberAdded(user_id=created_by, role="org_admin"))


def update_organization(
    state: Organization | None, cmd: UpdateOrganization
) -> tuple[OrganizationEvent, ...]:
    org = require_organization(state)
    name = cmd.name if cmd.name is not None and cmd.name != org.name else None
    settings = (
        dict(cmd.settings)
        if cmd.settings is not None and not same_settings(cmd.settings, org.settings)
        else None
    )
    if name is None and settings is None:
        return ()
    return (OrganizationUpdated(name=name, settings=settings),)


def delete_organization(state: Organization | None) -> tuple[OrganizationEvent, ...]:
    require_organization(state)
    return (OrganizationDeleted(),)


def add_member(
    state: Organization | None, user_id: uuid.UUID, role: Role
) -> tuple[OrganizationEvent, ...]:
    """Make the user a member with this role (PUT semantics: an existing member's role changes)."""
    org = require_organization(state)
    _check_role(role)
    if str(user_id) in org.members:
        return change_member_role(org, user_id, role)
    return (OrganizationMemberAdded(user_id=user_id, role=role),)


def change_member_role(
    state: Organization | None, user_id: uuid.UUID, role: Role
) -> tuple[OrganizationEvent, ...]:
    org = require_organization(state)
    _check_role(role)
    current = _require_member(org, user_id)
    if current == role:
        return ()
    if current == "org_admin":
        _keep_an_admin(org, user_id)
    return (OrganizationMemberRoleChanged(user_id=user_id, role=role),)


def remove_member(state: Organization | None, user_id: uuid.UUID) -> tuple[OrganizationEvent, ...]:
    org = require_organization(state)
    if _require_member(org, user_id) == "org_admin":
        _keep_an_admin(org, user_id)
    return (OrganizationMemberRemoved(user_id=user_id),)


Expiry = Annotated[
    datetime, msgspec.Meta(tz=True, description="RFC 3339 time with a zone, in the future")
]


class IssueApiKey(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Name
    role: Role
    expires_at: Expiry | None = None


def issue_api_key(
    state: Organization | None,
    cmd: IssueApiKey,
    *,
    key_id: uuid.UUID,
    prefix: str,
    now: datetime,
) -> tuple[OrganizationEvent, ...]:
    """Issue an API key with one of the org roles (it never manages memberships:
    domain.access denies that to every API key, whatever its role)."""
    require_organization(state)
    _check_role(cmd.role)
    if cmd.expires_at is not None and cmd.expires_at <= now:
        raise InvalidInput(
            "expires_at must be in the future",
            code="invalid_expiry",
            errors=(FieldError("/expires_at", "must be in the future"),),
        )
    return (
        OrganizationApiKeyIssued(
            key_id=key_id, name=cmd.name, role=cmd.role, prefix=prefix, expires_at=cmd.expires_at
        ),
    )


def revoke_api_key(state: Organization | None, key_id: uuid.UUID) -> tuple[OrganizationEvent, ...]:
    """Revoke an active key of this organization; NotFound for any other id."""
    org = require_organization(state)
    if str(key_id) not in org.api_keys:
        raise NotFound(
            "API key not found",
            code="api_key_not_found",
            context={"org_id": str(org.id), "key_id": str(key_id)},
        )
    return (OrganizationApiKeyRevoked(key_id=key_id),)


def same_settings(a: Mapping[str, SettingValue], b: Mapping[str, SettingValue]) -> bool:
    """Equality that tells ``True`` from ``1`` (Python's ``==`` does not)."""
    return a.keys() == b.keys() and all(
        type(a[key]) is type(b[key]) and a[key] == b[key] for key in a
    )


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise InvalidInput(
            f"unknown role {role!r}", code="invalid_role", context={"role": role, "roles": ROLES}
        )


def _require_member(org: Organization, user_id: uuid.UUID) -> Role:
    role = org.members.get(str(user_id))
    if role is None:
        raise NotFound(
            "member not found",
            code="member_not_found",
            context={"org_id": str(org.id), "user_id": str(user_id)},
        )
    return role


def _keep_an_admin(org: Organization, leaving: uuid.UUID) -> None:
    admins = [uid for uid, role in org.members.items() if role == "org_admin"]
    if admins == [str(leaving)]:
        raise Conflict(
            "the last org_admin of an organization cannot be removed or demoted",
            code="last_org_admin",
            context={"org_id": str(org.id), "user_id": str(leaving)},
        )
