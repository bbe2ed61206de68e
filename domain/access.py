"""Authorization: may this principal do this to that resource? (DOMAIN.md §3)

One pure function, ``decide``, answers every question::

    decide(principal_kind, membership, permission, resource) -> Decision

The caller supplies the principal's ``Membership`` in the resource's
organization (``None`` when it has none) and the ``ResourcePath`` of the thing
acted on. Nothing is looked up here.

Resolution, in this order (the first rule that answers wins)::

    1. tenant      no membership, or a membership of another organization
                   → deny ``not_a_member`` (404: nobody learns that another
                   tenant's resource exists)
    2. kind        only users and organization API keys hold org permissions;
                   agents and enrollment tokens never do
                   → deny ``principal_kind_not_permitted`` (403)
    3. API key     an org API key never manages memberships (members, API keys,
                   signing keys) → deny ``api_key_cannot_manage_memberships``
    4. org_admin   holds everything in its organization → allow
    5. role        org permissions use the org role. Project and environment
                   permissions use the project-level role for the resource's
                   project when there is one, else the org role (an org
                   ``viewer`` views every project). Permission not in the
                   role's row of the table → deny ``role_lacks_permission``
    6. parents     an environment permission also needs ViewProject under that
                   same role and ViewOrg under the org role
                   → else deny ``role_lacks_permission``
    7. narrowing   an ``operator`` project grant with a non-empty environment
                   list acts as operator only in the listed environments;
                   elsewhere (and for a path naming no environment) only
                   ViewEnvironment remains → deny ``environment_not_granted``

Decisions (ours, where DOMAIN.md is silent): the narrowing list belongs to a
*project* grant of ``operator`` (an org-level operator is narrowed by giving
it such a grant); outside its environments a narrowed operator still views
them, as every member of a project does. A project or environment permission
asked at organization level (``ResourcePath(org)``: list or create projects)
is judged on the org role.

``Decision.status`` is 200 when allowed, 404 for ``not_a_member`` and 403 for
every other denial; ``require_decision`` turns a denial into NotFound or
Forbidden. ``require``/``allowed``/``role_for`` are the organization-level
helpers older call sites use; ``require`` goes through ``decide``.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from typing import Final, Literal

import msgspec

from domain.errors import Forbidden, NotFound
from domain.organization import ROLES, Role
from domain.principal import PrincipalKind

ProjectRole = Literal["project_admin", "operator", "viewer"]
PROJECT_ROLES: Final[tuple[ProjectRole, ...]] = ("project_admin", "operator", "viewer")

Reason = Literal[
    "allowed",
    "not_a_member",
    "principal_kind_not_permitted",
    "api_key_cannot_manage_memberships",
    "role_lacks_permission",
    "environment_not_granted",
]


class Permission(enum.Enum):
    VIEW_ORG = "ViewOrg"
    MANAGE_ORG_MEMBERSHIPS = "ManageOrgMemberships"
    VIEW_PROJECT = "ViewProject"
    MANAGE_PROJECT = "ManageProject"
    OPERATE_PROJECT = "OperateProject"
    VIEW_ENVIRONMENT = "ViewEnvironment"
    MANAGE_ENVIRONMENT = "ManageEnvironment"
    OPERATE_ENVIRONMENT = "OperateEnvironment"


P = Permission
ORG_PERMISSIONS: Final = frozenset({P.VIEW_ORG, P.MANAGE_ORG_MEMBERSHIPS})
PROJECT_PERMISSIONS: Final = frozenset({P.VIEW_PROJECT, P.MANAGE_PROJECT, P.OPERATE_PROJECT})
ENVIRONMENT_PERMISSIONS: Final = frozenset(
    {P.VIEW_ENVIRONMENT, P.MANAGE_ENVIRONMENT, P.OPERATE_ENVIRONMENT}
)

_VIEW: Final = frozenset({P.VIEW_ORG, P.VIEW_PROJECT, P.VIEW_ENVIRONMENT})
_OPERATE: Final = _VIEW | {P.OPERATE_PROJECT, P.OPERATE_ENVIRONMENT}
_MANAGE: Final = _OPERATE | {P.MANAGE_PROJECT, P.MANAGE_ENVIRONMENT}

RoleTable = Mapping[str, frozenset[Permission]]

# The permission table of DOMAIN.md §3, one row per role.
ROLE_PERMISSIONS: Final[RoleTable] = {
    "org_admin": frozenset(Permission),
    "project_admin": _MANAGE,
    "operator": _OPERATE,
    "viewer": _VIEW,
}

_NOTHING: Final[frozenset[Permission]] = frozenset()
_HOLDERS: Final = frozenset({"user", "api_key"})
_ROLE_NAMED: Final[Mapping[str, Role]] = {role: role for role in ROLES}


# --- data ------------------------------------------------------------------------


class Membership(msgspec.Struct, frozen=True, kw_only=True):
    """A principal's standing in one organization.

    ``project_roles`` overrides ``org_role`` per project (never with
    ``org_admin``). ``operator_environments`` narrows an ``operator`` project
    grant to the listed environments; absent or empty means all of them.
    """

    org_id: uuid.UUID
    org_role: Role
    project_roles: Mapping[uuid.UUID, ProjectRole] = {}
    operator_environments: Mapping[uuid.UUID, frozenset[uuid.UUID]] = {}

    def __post_init__(self) -> None:
        if self.org_role not in ROLES:
            raise ValueError(f"unknown org role {self.org_role!r}")
        for project_id, role in self.project_roles.items():
            if role not in PROJECT_ROLES:
                raise ValueError(f"project {project_id}: {role!r} is not a project role")


class ResourcePath(msgspec.Struct, frozen=True):
    """Where in the tenancy tree a request acts: an org, a project of it, or an environment."""

    org_id: uuid.UUID
    project_id: uuid.UUID | None = None
    environment_id: uuid.UUID | None = None

    def __post_init__(self) -> None:
        if self.environment_id is not None and self.project_id is None:
            raise ValueError("an environment path needs its project")


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    allowed: bool
    reason: Reason
    permission: Permission
    # The role the answer rested on (None when the principal has none here).
    role: str | None = None

    @property
    def status(self) -> int:
        """HTTP status of this answer: 200, 404 (not a member) or 403."""
        if self.allowed:
            return 200
        return 404 if self.reason == "not_a_member" else 403


# --- the decision ------------------------------------------------------------------


def decide(
    principal_kind: PrincipalKind,
    membership: Membership | None,
    permission: Permission,
    resource: ResourcePath,
    *,
    table: RoleTable = ROLE_PERMISSIONS,
) -> Decision:
    """Allow or deny ``permission`` on ``resource`` (rules 1-7 of the module docstring).

    ``table`` is the permission table; only tests pass another one.
    """
    if membership is None or membership.org_id != resource.org_id:
        return Decision(allowed=False, reason="not_a_member", permission=permission)
    org_role = membership.org_role
    if principal_kind not in _HOLDERS:
        return Decision(allowed=False, reason="principal_kind_not_permitted", permission=permission)
    if principal_kind == "api_key" and permission is P.MANAGE_ORG_MEMBERSHIPS:
        return Decision(
            allowed=False,
            reason="api_key_cannot_manage_memberships",
            permission=permission,
            role=org_role,
        )
    if org_role == "org_admin":
        return Decision(allowed=True, reason="allowed", permission=permission, role=org_role)

    role: str = org_role
    narrowed_to: frozenset[uuid.UUID] | None = None
    project_id = resource.project_id
    if project_id is not None and permission not in ORG_PERMISSIONS:
        grant = membership.project_roles.get(project_id)
        if grant is not None:
            role = grant
            if grant == "operator":
                narrowed_to = membership.operator_environments.get(project_id) or None
    held = table.get(role, _NOTHING)
    if permission not in held:
        return _lacks(permission, role)
    if permission in ENVIRONMENT_PERMISSIONS:
        if P.VIEW_PROJECT not in held:
            return _lacks(permission, role)
        if P.VIEW_ORG not in table.get(org_role, _NOTHING):
            return _lacks(permission, org_role)
        if (
            narrowed_to is not None
            and permission is not P.VIEW_ENVIRONMENT
            and resource.environment_id not in narrowed_to
        ):
            return Decision(
                allowed=False, reason="environment_not_granted", permission=permission, role=role
            )
    return Decision(allowed=True, reason="allowed", permission=permission, role=role)


def _lacks(permission: Permission, role: str) -> Decision:
    return Decision(allowed=False, reason="role_lacks_permission", permission=permission, role=role)


_MESSAGES: Final[Mapping[str, str]] = {
    "principal_kind_not_permitted": "this credential cannot act on organization resources",
    "api_key_cannot_manage_memberships": "organization API keys cannot manage memberships",
    "environment_not_granted": "your operator grant does not include this environment",
}


def require_decision(decision: Decision, resource: str) -> None:
    """Raise NotFound (``<resource>_not_found``) or Forbidden (``permission_denied``) on deny."""
    if decision.allowed:
        return
    if decision.status == 404:
        # ``denied`` marks this 404 as an authorization denial for the audit
        # log (commands/denials.py); the caller cannot tell it from a missing one.
        raise NotFound(
            f"{resource} not found",
            code=f"{resource}_not_found",
            context={
                "denied": True,
                "permission": decision.permission.value,
                "reason": decision.reason,
            },
        )
    message = _MESSAGES.get(
        decision.reason, f"your role does not allow {decision.permission.value}"
    )
    raise Forbidden(
        message,
        code="permission_denied",
        context={
            "permission": decision.permission.value,
            "role": decision.role,
            "reason": decision.reason,
        },
    )


def membership_from_members(
    org_id: uuid.UUID, members: Mapping[str, str], user_id: uuid.UUID
) -> Membership | None:
    """A user's Membership from an organization's ``members`` map (org-level roles only)."""
    role = _ROLE_NAMED.get(members.get(str(user_id), ""))
    return None if role is None else Membership(org_id=org_id, org_role=role)


# --- organization-level helpers (older call sites) ----------------------------------

_ANY_ORG: Final = uuid.UUID(int=0)
_ORG_PATH: Final = ResourcePath(_ANY_ORG)


def role_for(members: Mapping[str, str], user_id: uuid.UUID) -> str | None:
    return members.get(str(user_id))


def allowed(role: str | None, permission: Permission) -> bool:
    return role is not None and permission in ROLE_PERMISSIONS.get(role, _NOTHING)


def require(role: str | None, permission: Permission, *, resource: str) -> None:
    """Raise NotFound for non-members and Forbidden for members lacking ``permission``.

    ``role`` is a user's org-level role in the organization acted on (None: not a member).
    """
    if role is None:
        membership = None
    elif (org_role := _ROLE_NAMED.get(role)) is not None:
        membership = Membership(org_id=_ANY_ORG, org_role=org_role)
    else:  # an unknown role string: a member holding nothing
        require_decision(_lacks(permission, role), resource)
        return
    require_decision(decide("user", membership, permission, _ORG_PATH), resource)
