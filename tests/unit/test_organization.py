from __future__ import annotations

import uuid
from typing import Any

import pytest

from domain.codec import convert_command
from domain.errors import Conflict, InvalidHistory, InvalidInput, NotFound
from domain.organization import (
    STREAM_TYPE,
    CreateOrganization,
    Organization,
    OrganizationCreated,
    OrganizationDeleted,
    OrganizationMemberAdded,
    OrganizationMemberRemoved,
    OrganizationMemberRoleChanged,
    OrganizationUpdated,
    UpdateOrganization,
    add_member,
    change_member_role,
    create_organization,
    delete_organization,
    evolve,
    fold,
    remove_member,
    require_organization,
    stream_id,
    update_organization,
)
from domain.project import ProjectDeleted

ORG = uuid.UUID(int=1)
ADA = uuid.UUID(int=10)
BOB = uuid.UUID(int=11)


def create(**data: Any) -> CreateOrganization:
    return convert_command(CreateOrganization, {"name": "Acme", **data})


def update(**data: Any) -> UpdateOrganization:
    return convert_command(UpdateOrganization, data)


def acme(created_by: uuid.UUID | None = ADA, **data: Any) -> Organization:
    org = fold(create_organization(create(**data), org_id=ORG, created_by=created_by))
    assert org is not None
    return org


def apply(org: Organization, events: tuple[Any, ...]) -> Organization:
    for event in events:
        org = evolve(org, event)
    return org


def deleted() -> Organization:
    org = acme()
    return apply(org, delete_organization(org))


# --- create ----------------------------------------------------------------------


def test_create_records_the_organization_and_its_creator_as_org_admin() -> None:
    events = create_organization(create(settings={"tier": "pro"}), org_id=ORG, created_by=ADA)
    assert events == (
        OrganizationCreated(org_id=ORG, name="Acme", settings={"tier": "pro"}),
        OrganizationMemberAdded(user_id=ADA, role="org_admin"),
    )
    assert fold(events) == Organization(
        id=ORG,
        name="Acme",
        settings={"tier": "pro"},
        members={str(ADA): "org_admin"},
        status="active",
        version=2,
    )


def test_create_without_a_creator_records_no_member() -> None:
    events = create_organization(create(), org_id=ORG, created_by=None)
    assert events == (OrganizationCreated(org_id=ORG, name="Acme", settings={}),)


def test_stream_ids_name_the_stream_type_and_the_id() -> None:
    assert STREAM_TYPE == "organization"
    assert stream_id(ORG) == f"organization-{ORG}"


# --- update ----------------------------------------------------------------------


def test_update_records_only_the_fields_that_change() -> None:
    org = acme(settings={"a": 1})
    assert update_organization(org, update(name="Acme", settings={"a": 2})) == (
        OrganizationUpdated(settings={"a": 2}),
    )
    assert update_organization(org, update(name="Beta", settings={"a": 1})) == (
        OrganizationUpdated(name="Beta"),
    )


def test_update_replaces_the_whole_settings_map() -> None:
    org = acme(settings={"a": 1, "b": "x"})
    org = apply(org, update_organization(org, update(settings={"c": None})))
    assert org.settings == {"c": None}


def test_update_returns_nothing_when_nothing_changes() -> None:
    org = acme(settings={"a": 1})
    assert update_organization(org, update(name="Acme", settings={"a": 1})) == ()


def test_update_tells_true_from_one_in_settings() -> None:
    org = acme(settings={"flag": 1})
    assert update_organization(org, update(settings={"flag": True})) == (
        OrganizationUpdated(settings={"flag": True}),
    )


def test_update_refuses_a_missing_organization() -> None:
    with pytest.raises(NotFound) as info:
        update_organization(None, update(name="x"))
    assert info.value.code == "organization_not_found"


def test_update_refuses_deleted_organization() -> None:
    with pytest.raises(NotFound) as info:
        update_organization(deleted(), update(name="x"))
    assert info.value.code == "organization_not_found"
    assert info.value.context == {"org_id": str(ORG), "status": "deleted"}


# --- delete ----------------------------------------------------------------------


def test_delete_marks_the_organization_deleted() -> None:
    org = acme()
    assert delete_organization(org) == (OrganizationDeleted(),)
    assert deleted().status == "deleted"
    assert deleted().version == org.version + 1


@pytest.mark.parametrize("state", [None, "deleted"])
def test_delete_refuses_an_organization_that_is_gone(state: str | None) -> None:
    with pytest.raises(NotFound) as info:
        delete_organization(deleted() if state else None)
    assert info.value.code == "organization_not_found"


def test_require_organization_returns_an_active_organization() -> None:
    org = acme()
    assert require_organization(org) is org


# --- members ---------------------------------------------------------------------


def test_add_member_records_a_new_member() -> None:
    org = acme()
    events = add_member(org, BOB, "viewer")
    assert events == (OrganizationMemberAdded(user_id=BOB, role="viewer"),)
    assert apply(org, events).members == {str(ADA): "org_admin", str(BOB): "viewer"}


def test_add_member_changes_the_role_of_an_existing_member() -> None:
    org = apply(acme(), add_member(acme(), BOB, "viewer"))
    assert add_member(org, BOB, "operator") == (
        OrganizationMemberRoleChanged(user_id=BOB, role="operator"),
    )


def test_add_member_with_the_same_role_records_nothing() -> None:
    org = apply(acme(), add_member(acme(), BOB, "viewer"))
    assert add_member(org, BOB, "viewer") == ()


def test_add_member_refuses_an_unknown_role() -> None:
    with pytest.raises(InvalidInput) as info:
        add_member(acme(), BOB, "superuser")  # type: ignore[arg-type]
    assert info.value.code == "invalid_role"


def test_add_member_refuses_a_deleted_organization() -> None:
    with pytest.raises(NotFound) as info:
        add_member(deleted(), BOB, "viewer")
    assert info.value.code == "organization_not_found"


def test_change_member_role_records_the_new_role() -> None:
    org = apply(acme(), add_member(acme(), BOB, "viewer"))
    events = change_member_role(org, BOB, "project_admin")
    assert events == (OrganizationMemberRoleChanged(user_id=BOB, role="project_admin"),)
    assert apply(org, events).members[str(BOB)] == "project_admin"


def test_change_member_role_refuses_a_non_member() -> None:
    with pytest.raises(NotFound) as info:
        change_member_role(acme(), BOB, "viewer")
    assert info.value.code == "member_not_found"
    assert info.value.context == {"org_id": str(ORG), "user_id": str(BOB)}


def test_change_member_role_refuses_to_demote_the_last_org_admin() -> None:
    with pytest.raises(Conflict) as info:
        change_member_role(acme(), ADA, "viewer")
    assert info.value.code == "last_org_admin"
    assert info.value.context == {"org_id": str(ORG), "user_id": str(ADA)}


def test_change_member_role_demotes_an_org_admin_when_another_remains() -> None:
    org = apply(acme(), add_member(acme(), BOB, "org_admin"))
    assert change_member_role(org, ADA, "viewer") == (
        OrganizationMemberRoleChanged(user_id=ADA, role="viewer"),
    )


def test_remove_member_records_the_removal() -> None:
    org = apply(acme(), add_member(acme(), BOB, "operator"))
    events = remove_member(org, BOB)
    assert events == (OrganizationMemberRemoved(user_id=BOB),)
    assert apply(org, events).members == {str(ADA): "org_admin"}


def test_remove_member_refuses_the_last_org_admin() -> None:
    org = apply(acme(), add_member(acme(), BOB, "viewer"))
    with pytest.raises(Conflict) as info:
        remove_member(org, ADA)
    assert info.value.code == "last_org_admin"


def test_remove_member_allows_removing_an_org_admin_when_another_remains() -> None:
    org = apply(acme(), add_member(acme(), BOB, "org_admin"))
    assert remove_member(org, ADA) == (OrganizationMemberRemoved(user_id=ADA),)


def test_remove_member_refuses_a_non_member() -> None:
    with pytest.raises(NotFound) as info:
        remove_member(acme(), BOB)
    assert info.value.code == "member_not_found"


def test_remove_member_refuses_a_deleted_organization() -> None:
    with pytest.raises(NotFound) as info:
        remove_member(deleted(), ADA)
    assert info.value.code == "organization_not_found"


# --- evolve / fold ---------------------------------------------------------------


def test_fold_of_no_events_is_no_organization() -> None:
    assert fold([]) is None


def test_fold_refuses_an_event_before_creation() -> None:
    with pytest.raises(InvalidHistory):
        fold([OrganizationDeleted()])


def test_fold_refuses_a_second_creation() -> None:
    created = OrganizationCreated(org_id=ORG, name="Acme")
    with pytest.raises(InvalidHistory):
        fold([created, created])


def test_fold_refuses_another_aggregates_event() -> None:
    with pytest.raises(InvalidHistory):
        fold([OrganizationCreated(org_id=ORG, name="Acme"), ProjectDeleted()])


# --- wire commands ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["", " Acme", "Acme ", "Ac\nme", "Acme\n", "Ac\x00me", "Ac\x7fme", "Ac\x85me", "x" * 101],
)
def test_create_command_refuses_bad_names(name: str) -> None:
    with pytest.raises(InvalidInput) as info:
        create(name=name)
    assert info.value.errors[0].path == "/name"


@pytest.mark.parametrize("name", ["A", "Acme Corp", "Ünïcødé — ok", "x" * 100, "a b"])
def test_create_command_accepts_good_names(name: str) -> None:
    assert create(name=name).name == name


@pytest.mark.parametrize(
    "settings",
    [
        {"Upper": 1},
        {"1st": 1},
        {"with-dash": 1},
        {"k" * 65: 1},
        {"k": "x" * 1001},
        {"k": 1.5},
        {"k": [1]},
        {"k": {"nested": 1}},
        {"k": 2**63},
        {f"k{i}": i for i in range(51)},
    ],
)
def test_create_command_refuses_bad_settings(settings: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        create(settings=settings)


def test_create_command_accepts_scalar_settings() -> None:
    settings = {"s": "x" * 1000, "i": -(2**63), "b": False, "n": None, "k" * 64: 1}
    assert create(settings=settings).settings == settings


def test_create_command_refuses_unknown_fields() -> None:
    with pytest.raises(InvalidInput) as info:
        create(owner="me")
    assert info.value.errors[0].path == "/owner"


def test_update_command_needs_at_least_one_field() -> None:
    with pytest.raises(InvalidInput):
        update()
    with pytest.raises(InvalidInput):
        update(name=None, settings=None)
