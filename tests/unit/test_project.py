from __future__ import annotations

import uuid
from typing import Any

import pytest

from domain import organization
from domain.codec import convert_command
from domain.errors import InvalidHistory, InvalidInput, NotFound
from domain.organization import Organization
from domain.project import (
    STREAM_TYPE,
    CreateProject,
    Project,
    ProjectCreated,
    ProjectDeleted,
    ProjectUpdated,
    UpdateProject,
    create_project,
    delete_project,
    evolve,
    fold,
    require_project,
    stream_id,
    update_project,
)

ORG = uuid.UUID(int=1)
OTHER_ORG = uuid.UUID(int=2)
PROJECT = uuid.UUID(int=20)


def an_org(org_id: uuid.UUID = ORG) -> Organization:
    cmd = organization.CreateOrganization(name="Acme")
    org = organization.fold(organization.create_organization(cmd, org_id=org_id))
    assert org is not None
    return org


def deleted_org() -> Organization:
    org = an_org()
    return organization.evolve(org, organization.OrganizationDeleted())


def create(**data: Any) -> CreateProject:
    return convert_command(CreateProject, {"name": "Pipelines", **data})


def update(**data: Any) -> UpdateProject:
    return convert_command(UpdateProject, data)


def a_project(org: Organization | None = None, **data: Any) -> Project:
    project = fold(create_project(org or an_org(), create(**data), project_id=PROJECT))
    assert project is not None
    return project


def deleted_project() -> Project:
    return evolve(a_project(), ProjectDeleted())


def test_create_records_the_project_under_its_organization() -> None:
    events = create_project(an_org(), create(description="ETL"), project_id=PROJECT)
    assert events == (
        ProjectCreated(project_id=PROJECT, org_id=ORG, name="Pipelines", description="ETL"),
    )
    assert fold(events) == Project(
        id=PROJECT, org_id=ORG, name="Pipelines", description="ETL", status="active", version=1
    )


def test_create_defaults_the_description_to_empty() -> None:
    assert a_project().description == ""


@pytest.mark.parametrize("org", [None, "deleted"])
def test_create_refuses_a_missing_or_deleted_organization(org: str | None) -> None:
    with pytest.raises(NotFound) as info:
        create_project(deleted_org() if org else None, create(), project_id=PROJECT)
    assert info.value.code == "organization_not_found"


def test_stream_ids_name_the_stream_type_and_the_id() -> None:
    assert STREAM_TYPE == "project"
    assert stream_id(PROJECT) == f"project-{PROJECT}"


def test_update_records_only_the_fields_that_change() -> None:
    project = a_project(description="old")
    assert update_project(an_org(), project, update(name="Pipelines", description="new")) == (
        ProjectUpdated(description="new"),
    )
    assert update_project(an_org(), project, update(name="Renamed")) == (
        ProjectUpdated(name="Renamed"),
    )


def test_update_clears_a_description_with_an_empty_string() -> None:
    project = a_project(description="old")
    events = update_project(an_org(), project, update(description=""))
    assert evolve(project, events[0]).description == ""


def test_update_returns_nothing_when_nothing_changes() -> None:
    assert update_project(an_org(), a_project(), update(name="Pipelines", description="")) == ()


def test_update_refuses_a_missing_project() -> None:
    with pytest.raises(NotFound) as info:
        update_project(an_org(), None, update(name="x"))
    assert info.value.code == "project_not_found"
    assert info.value.context == {"org_id": str(ORG)}


def test_update_refuses_a_deleted_project() -> None:
    with pytest.raises(NotFound) as info:
        update_project(an_org(), deleted_project(), update(name="x"))
    assert info.value.code == "project_not_found"
    assert info.value.context == {
        "org_id": str(ORG),
        "project_id": str(PROJECT),
        "status": "deleted",
    }


def test_update_refuses_a_project_whose_organization_is_deleted() -> None:
    with pytest.raises(NotFound) as info:
        update_project(deleted_org(), a_project(), update(name="x"))
    assert info.value.code == "organization_not_found"


def test_update_refuses_a_project_of_another_organization_without_naming_it() -> None:
    with pytest.raises(NotFound) as info:
        update_project(an_org(OTHER_ORG), a_project(), update(name="x"))
    assert info.value.code == "project_not_found"
    assert info.value.context == {"org_id": str(OTHER_ORG), "project_id": str(PROJECT)}


def test_delete_marks_the_project_deleted() -> None:
    project = a_project()
    assert delete_project(an_org(), project) == (ProjectDeleted(),)
    assert deleted_project().status == "deleted"
    assert deleted_project().version == 2


def test_delete_refuses_a_deleted_project() -> None:
    with pytest.raises(NotFound) as info:
        delete_project(an_org(), deleted_project())
    assert info.value.code == "project_not_found"


def test_delete_refuses_a_project_whose_organization_is_gone() -> None:
    with pytest.raises(NotFound) as info:
        delete_project(None, a_project())
    assert info.value.code == "organization_not_found"


def test_require_project_returns_an_active_project_of_the_organization() -> None:
    project = a_project()
    assert require_project(an_org(), project) is project


def test_fold_refuses_an_event_before_creation() -> None:
    with pytest.raises(InvalidHistory):
        fold([ProjectUpdated(name="x")])


def test_fold_refuses_a_second_creation() -> None:
    created = ProjectCreated(project_id=PROJECT, org_id=ORG, name="P")
    with pytest.raises(InvalidHistory):
        fold([created, created])


def test_fold_refuses_another_aggregates_event() -> None:
    with pytest.raises(InvalidHistory):
        fold([organization.OrganizationCreated(org_id=ORG, name="Acme")])


@pytest.mark.parametrize(
    "data",
    [
        {"name": ""},
        {"name": "x" * 101},
        {"name": "\tx"},
        {"name": "ok", "description": "d" * 1001},
        {"name": "ok", "org_id": str(ORG)},
    ],
)
def test_create_command_refuses_bad_input(data: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        convert_command(CreateProject, data)


def test_create_command_accepts_multiline_descriptions_up_to_1000_characters() -> None:
    description = "line one\nline two" + "x" * 983
    assert create(description=description).description == description


def test_update_command_needs_at_least_one_field() -> None:
    with pytest.raises(InvalidInput):
        update()
