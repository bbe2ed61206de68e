"""Authorization: may this principal do this to that resource? (DOMAIN.md §3)

Pure: the caller supplies the principal's role in the resource's organization
(None when it is not a member). Not being a member answers NotFound, never
Forbidden, so nobody learns that another tenant's resource exists.

This is the organization-level table; project-scoped roles and environment
narrowing refine ``role_for`` without changing callers.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from typing import Final

from domain.errors import Forbidden, NotFound


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
_VIEW: Final = frozenset({P.VIEW_ORG, P.VIEW_PROJECT, P.VIEW_ENVIRONMENT})
_OPERATE: Final = _VIEW | {P.OPERATE_PROJECT, P.OPERATE_ENVIRONMENT}
_MANAGE: Final = _OPERATE | {P.MANAGE_PROJECT, P.MANAGE_ENVIRONMENT}

ROLE_PERMISSIONS: Final[Mapping[str, frozenset[Permission]]] = {
    "org_admin": frozenset(Permission),
    "project_admin": _MANAGE,
    "operator": _OPERATE,
    "viewer": _VIEW,
}


def role_for(members: Mapping[str, str], user_id: uuid.UUID) -> str | None:
    return members.get(str(user_id))


def allowed(role: str | None, permission: Permission) -> bool:
    return role is not None and permission in ROLE_PERMISSIONS.get(role, frozenset())


def require(role: str | None, permission: Permission, *, resource: str) -> None:
    """Raise NotFound for non-members and Forbidden for members lacking ``permission``."""
    if role is None:
        raise NotFound(f"{resource} not found", code=f"{resource}_not_found")
    if not allowed(role, permission):
        raise Forbidden(
            f"your role does not allow {permission.value}",
            code="permission_denied",
            context={"permission": permission.value, "role": role},
        )
