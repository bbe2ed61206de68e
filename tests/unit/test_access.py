"""The authorization rules of DOMAIN.md §3, one plain example each (domain/access.py)."""

from __future__ import annotations

import uuid

import pytest

from domain.access import (
    ROLE_PERMISSIONS,
    Decision,
    Membership,
    Permission,
    ResourcePath,
    allowed,
    decide,
    membership_from_members,
    require,
    require_decision,
    role_for,
)
from domain.errors import Forbidden, NotFound

P = Permission
ORG = uuid.UUID(int=1)
OTHER_ORG = uuid.UUID(int=2)
PROJ = uuid.UUID(int=10)
OTHER_PROJ = uuid.UUID(int=11)
ENV = uuid.UUID(int=100)
OTHER_ENV = uuid.UUID(int=101)
ADA = uuid.UUID(int=1000)

AT_ORG = ResourcePath(ORG)
AT_PROJECT = ResourcePath(ORG, PROJ)
AT_ENV = ResourcePath(ORG, PROJ, ENV)
AT_OTHER_ENV = ResourcePath(ORG, PROJ, OTHER_ENV)

# The table of DOMAIN.md §3, row by row, as written there.
TABLE = {
    P.VIEW_ORG: {"org_admin", "project_admin", "operator", "viewer"},
    P.MANAGE_ORG_MEMBERSHIPS: {"org_admin"},
    P.VIEW_PROJECT: {"org_admin", "project_admin", "operator", "viewer"},
    P.MANAGE_PROJECT: {"org_admin", "project_admin"},
    P.OPERATE_PROJECT: {"org_admin", "project_admin", "operator"},
    P.VIEW_ENVIRONMENT: {"org_admin", "project_admin", "operator", "viewer"},
    P.MANAGE_ENVIRONMENT: {"org_admin", "project_admin"},
    P.OPERATE_ENVIRONMENT: {"org_admin", "project_admin", "operator"},
}
ROLES = ("org_admin", "project_admin", "operator", "viewer")


def member(role: str = "viewer", org: uuid.UUID = ORG, **kwargs: object) -> Membership:
    return Membership(org_id=org, org_role=role, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("permission", list(Permission))
def test_a_users_org_role_grants_exactly_its_row_of_the_table(
    role: str, permission: Permission
) -> None:
    for path in (AT_ORG, AT_PROJECT, AT_ENV):
        decision = decide("user", member(role), permission, path)
        assert decision.allowed is (role in TABLE[permission]), (role, permission, path)
        assert decision.reason == ("allowed" if decision.allowed else "role_lacks_permission")
        assert decision.status == (200 if decision.allowed else 403)


def test_the_module_table_is_the_documented_table() -> None:
    for role in ROLES:
        assert ROLE_PERMISSIONS[role] == {p for p, roles in TABLE.items() if role in roles}


def test_a_principal_without_a_membership_is_not_a_member_and_gets_404() -> None:
    decision = decide("user", None, P.VIEW_ORG, AT_ORG)
    assert decision == Decision(allowed=False, reason="not_a_member", permission=P.VIEW_ORG)
    assert decision.status == 404


def test_a_membership_of_another_organization_is_not_a_member_even_for_an_org_admin() -> None:
    for path in (AT_ORG, AT_PROJECT, AT_ENV):
        decision = decide("user", member("org_admin", org=OTHER_ORG), P.VIEW_ORG, path)
        assert (decision.reason, decision.status) == ("not_a_member", 404)


def test_an_org_admin_holds_everything_even_with_a_lesser_project_role() -> None:
    ada = member(
        "org_admin",
        project_roles={PROJ: "viewer"},
        operator_environments={PROJ: frozenset({OTHER_ENV})},
    )
    for permission in Permission:
        for path in (AT_ORG, AT_PROJECT, AT_ENV):
            decision = decide("user", ada, permission, path)
            assert decision.allowed, (permission, path)
            assert decision.role == "org_admin"


def test_an_org_viewer_views_every_project_and_environment() -> None:
    viewer = member("viewer")
    for project in (PROJ, OTHER_PROJ):
        assert decide("user", viewer, P.VIEW_PROJECT, ResourcePath(ORG, project)).allowed
        assert decide("user", viewer, P.VIEW_ENVIRONMENT, ResourcePath(ORG, project, ENV)).allowed
        assert not decide("user", viewer, P.OPERATE_PROJECT, ResourcePath(ORG, project)).allowed


def test_a_project_role_raises_the_org_role_for_that_project_only() -> None:
    viewer = member("viewer", project_roles={PROJ: "project_admin"})
    assert decide("user", viewer, P.MANAGE_PROJECT, AT_PROJECT).allowed
    assert decide("user", viewer, P.MANAGE_ENVIRONMENT, AT_ENV).allowed
    elsewhere = decide("user", viewer, P.MANAGE_PROJECT, ResourcePath(ORG, OTHER_PROJ))
    assert (elsewhere.allowed, elsewhere.role) == (False, "viewer")


def test_a_project_role_lowers_the_org_role_for_that_project_only() -> None:
    admin = member("project_admin", project_roles={PROJ: "viewer"})
    lowered = decide("user", admin, P.OPERATE_ENVIRONMENT, AT_ENV)
    assert (lowered.allowed, lowered.reason, lowered.role) == (
        False,
        "role_lacks_permission",
        "viewer",
    )
    assert decide("user", admin, P.MANAGE_PROJECT, ResourcePath(ORG, OTHER_PROJ)).allowed


def test_organization_permissions_follow_the_org_role_whatever_the_path() -> None:
    viewer = member("viewer", project_roles={PROJ: "project_admin"})
    decision = decide("user", viewer, P.MANAGE_ORG_MEMBERSHIPS, AT_ENV)
    assert (decision.allowed, decision.role) == (False, "viewer")


def test_project_permissions_asked_at_organization_level_follow_the_org_role() -> None:
    viewer = member("viewer", project_roles={PROJ: "project_admin"})
    assert not decide("user", viewer, P.MANAGE_PROJECT, AT_ORG).allowed
    assert decide("user", member("project_admin"), P.MANAGE_PROJECT, AT_ORG).allowed


def test_a_narrowed_operator_operates_only_the_listed_environments() -> None:
    operator = member(
        "viewer",
        project_roles={PROJ: "operator"},
        operator_environments={PROJ: frozenset({ENV})},
    )
    assert decide("user", operator, P.OPERATE_ENVIRONMENT, AT_ENV).allowed
    denied = decide("user", operator, P.OPERATE_ENVIRONMENT, AT_OTHER_ENV)
    assert (denied.allowed, denied.reason, denied.status) == (False, "environment_not_granted", 403)


def test_a_narrowed_operator_still_views_the_other_environments_and_operates_the_project() -> None:
    operator = member(
        "viewer",
        project_roles={PROJ: "operator"},
        operator_environments={PROJ: frozenset({ENV})},
    )
    assert decide("user", operator, P.VIEW_ENVIRONMENT, AT_OTHER_ENV).allowed
    assert decide("user", operator, P.VIEW_ENVIRONMENT, AT_PROJECT).allowed
    assert decide("user", operator, P.OPERATE_PROJECT, AT_PROJECT).allowed


def test_a_narrowed_operator_cannot_operate_an_environment_the_path_does_not_name() -> None:
    operator = member(
        "viewer",
        project_roles={PROJ: "operator"},
        operator_environments={PROJ: frozenset({ENV})},
    )
    decision = decide("user", operator, P.OPERATE_ENVIRONMENT, AT_PROJECT)
    assert decision.reason == "environment_not_granted"


def test_a_narrowed_operator_lacking_a_permission_is_told_its_role_lacks_it() -> None:
    operator = member(
        "viewer",
        project_roles={PROJ: "operator"},
        operator_environments={PROJ: frozenset({ENV})},
    )
    decision = decide("user", operator, P.MANAGE_ENVIRONMENT, AT_OTHER_ENV)
    assert decision.reason == "role_lacks_permission"


def test_an_empty_environment_list_means_every_environment() -> None:
    operator = member(
        "viewer", project_roles={PROJ: "operator"}, operator_environments={PROJ: frozenset()}
    )
    assert decide("user", operator, P.OPERATE_ENVIRONMENT, AT_OTHER_ENV).allowed


def test_narrowing_applies_only_to_an_operator_project_grant() -> None:
    narrowing = {PROJ: frozenset({ENV})}
    org_operator = member("operator", operator_environments=narrowing)
    assert decide("user", org_operator, P.OPERATE_ENVIRONMENT, AT_OTHER_ENV).allowed
    project_admin = member(
        "viewer", project_roles={PROJ: "project_admin"}, operator_environments=narrowing
    )
    assert decide("user", project_admin, P.OPERATE_ENVIRONMENT, AT_OTHER_ENV).allowed


def test_an_environment_permission_also_needs_view_on_the_project_and_the_org() -> None:
    # No row of the real table lacks a view permission; a hypothetical one shows the rule.
    blind = {
        **ROLE_PERMISSIONS,
        "operator": frozenset({P.OPERATE_ENVIRONMENT, P.VIEW_ORG}),
        "viewer": frozenset({P.VIEW_PROJECT, P.VIEW_ENVIRONMENT}),
    }
    no_project_view = decide("user", member("operator"), P.OPERATE_ENVIRONMENT, AT_ENV, table=blind)
    assert (no_project_view.reason, no_project_view.role) == ("role_lacks_permission", "operator")
    no_org_view = decide(
        "user",
        member("viewer", project_roles={PROJ: "project_admin"}),
        P.VIEW_ENVIRONMENT,
        AT_ENV,
        table=blind,
    )
    assert (no_org_view.reason, no_org_view.role) == ("role_lacks_permission", "viewer")


def test_an_org_api_key_acts_with_its_role() -> None:
    key = member("project_admin")
    assert decide("api_key", key, P.MANAGE_ENVIRONMENT, AT_ENV).allowed
    assert not decide("api_key", member("viewer"), P.OPERATE_PROJECT, AT_PROJECT).allowed


def test_an_org_api_key_never_manages_memberships_even_as_org_admin() -> None:
    decision = decide("api_key", member("org_admin"), P.MANAGE_ORG_MEMBERSHIPS, AT_ORG)
    assert (decision.allowed, decision.reason, decision.status) == (
        False,
        "api_key_cannot_manage_memberships",
        403,
    )
    assert decide("api_key", member("org_admin"), P.MANAGE_PROJECT, AT_ORG).allowed


def test_an_org_api_key_of_another_org_is_not_a_member() -> None:
    decision = decide("api_key", member("org_admin", org=OTHER_ORG), P.VIEW_ORG, AT_ORG)
    assert decision.status == 404


def test_an_agent_holds_no_organization_permission() -> None:
    for permission in Permission:
        decision = decide("agent", member("org_admin"), permission, AT_ENV)
        assert (decision.allowed, decision.reason, decision.status) == (
            False,
            "principal_kind_not_permitted",
            403,
        )
    assert decide("agent", None, P.VIEW_ENVIRONMENT, AT_ENV).status == 404


def test_an_unknown_principal_kind_holds_nothing() -> None:
    decision = decide("robot", member("org_admin"), P.VIEW_ORG, AT_ORG)  # type: ignore[arg-type]
    assert decision.reason == "principal_kind_not_permitted"


def test_an_environment_path_needs_its_project() -> None:
    with pytest.raises(ValueError, match="needs its project"):
        ResourcePath(ORG, None, ENV)


def test_a_project_role_is_never_org_admin() -> None:
    with pytest.raises(ValueError, match="not a project role"):
        member("viewer", project_roles={PROJ: "org_admin"})


def test_an_unknown_org_role_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown org role"):
        member("owner")


def test_require_decision_passes_an_allowed_decision() -> None:
    require_decision(decide("user", member("viewer"), P.VIEW_ORG, AT_ORG), "organization")


def test_require_decision_turns_not_a_member_into_not_found_of_the_resource() -> None:
    with pytest.raises(NotFound) as caught:
        require_decision(decide("user", None, P.VIEW_PROJECT, AT_PROJECT), "project")
    assert caught.value.code == "project_not_found"


def test_require_decision_turns_other_denials_into_forbidden_with_the_reason() -> None:
    with pytest.raises(Forbidden) as caught:
        require_decision(decide("user", member("viewer"), P.MANAGE_PROJECT, AT_PROJECT), "project")
    assert caught.value.code == "permission_denied"
    assert caught.value.context == {
        "permission": "ManageProject",
        "role": "viewer",
        "reason": "role_lacks_permission",
    }
    assert "ManageProject" in caught.value.detail


def test_membership_from_members_reads_the_org_role_of_the_user() -> None:
    members = {str(ADA): "operator"}
    assert membership_from_members(ORG, members, ADA) == member("operator")
    assert membership_from_members(ORG, members, uuid.UUID(int=7)) is None
    assert membership_from_members(ORG, {str(ADA): "owner"}, ADA) is None


def test_the_org_level_helpers_keep_their_old_answers() -> None:
    assert role_for({str(ADA): "viewer"}, ADA) == "viewer"
    assert role_for({}, ADA) is None
    assert allowed("operator", P.OPERATE_ENVIRONMENT)
    assert not allowed("operator", P.MANAGE_PROJECT)
    assert not allowed(None, P.VIEW_ORG)
    assert not allowed("owner", P.VIEW_ORG)
    require("viewer", P.VIEW_ORG, resource="organization")
    with pytest.raises(NotFound) as missing:
        require(None, P.VIEW_ORG, resource="organization")
    assert missing.value.code == "organization_not_found"
    with pytest.raises(Forbidden) as denied:
        require("viewer", P.MANAGE_ORG_MEMBERSHIPS, resource="organization")
    assert denied.value.context["role"] == "viewer"
    with pytest.raises(Forbidden):
        require("owner", P.VIEW_ORG, resource="organization")
