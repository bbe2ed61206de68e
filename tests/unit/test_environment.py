from __future__ import annotations

import uuid
from typing import Any

import pytest

from domain import organization, project
from domain.codec import convert_command
from domain.environment import (
    STREAM_TYPE,
    CreateEnvironment,
    Environment,
    EnvironmentCreated,
    EnvironmentDeleted,
    EnvironmentSettings,
    EnvironmentUpdated,
    UpdateEnvironment,
    create_environment,
    delete_environment,
    evolve,
    fold,
    require_environment,
    stream_id,
    update_environment,
)
from domain.errors import InvalidHistory, InvalidInput, NotFound
from domain.organization import Organization
from domain.project import Project

ORG = uuid.UUID(int=1)
OTHER_ORG = uuid.UUID(int=2)
PROJECT = uuid.UUID(int=20)
OTHER_PROJECT = uuid.UUID(int=21)
ENV = uuid.UUID(int=30)


def an_org(org_id: uuid.UUID = ORG) -> Organization:
    cmd = organization.CreateOrganization(name="Acme")
    org = organization.fold(organization.create_organization(cmd, org_id=org_id))
    assert org is not None
    return org


def a_project(org_id: uuid.UUID = ORG, project_id: uuid.UUID = PROJECT) -> Project:
    cmd = project.CreateProject(name="Pipelines")
    p = project.fold(project.create_project(an_org(org_id), cmd, project_id=project_id))
    assert p is not None
    return p


def create(**data: Any) -> CreateEnvironment:
    return convert_command(CreateEnvironment, {"name": "staging-eu", "posture": "dev", **data})


def update(**data: Any) -> UpdateEnvironment:
    return convert_command(UpdateEnvironment, data)


def an_env(**data: Any) -> Environment:
    env = fold(create_environment(an_org(), a_project(), create(**data), environment_id=ENV))
    assert env is not None
    return env


def deleted_env() -> Environment:
    return evolve(an_env(), EnvironmentDeleted())


# --- create ----------------------------------------------------------------------


def test_create_records_the_environment_under_its_project_and_organization() -> None:
    events = create_environment(
        an_org(),
        a_project(),
        create(posture="staging", settings={"max_inflight_deployments": 5}),
        environment_id=ENV,
    )
    settings = EnvironmentSettings(max_inflight_deployments=5, artifact_retention_days=30)
    assert events == (
        EnvironmentCreated(
            environment_id=ENV,
            org_id=ORG,
            project_id=PROJECT,
            name="staging-eu",
            posture="staging",
            settings=settings,
        ),
    )
    assert fold(events) == Environment(
        id=ENV,
        org_id=ORG,
        project_id=PROJECT,
        name="staging-eu",
        posture="staging",
        settings=settings,
        status="active",
        version=1,
    )


@pytest.mark.parametrize(("posture", "days"), [("dev", 30), ("staging", 30), ("prod", 90)])
def test_create_defaults_retention_by_posture(posture: str, days: int) -> None:
    env = an_env(posture=posture)
    assert env.settings == EnvironmentSettings(
        max_inflight_deployments=3, artifact_retention_days=days
    )


def test_create_keeps_an_explicit_retention_for_prod() -> None:
    env = an_env(posture="prod", settings={"artifact_retention_days": 7})
    assert env.settings.artifact_retention_days == 7


def test_create_refuses_a_missing_organization() -> None:
    with pytest.raises(NotFound) as info:
        create_environment(None, a_project(), create(), environment_id=ENV)
    assert info.value.code == "organization_not_found"


@pytest.mark.parametrize("which", ["missing", "deleted"])
def test_create_refuses_a_missing_or_deleted_project(which: str) -> None:
    parent = None if which == "missing" else project.evolve(a_project(), project.ProjectDeleted())
    with pytest.raises(NotFound) as info:
        create_environment(an_org(), parent, create(), environment_id=ENV)
    assert info.value.code == "project_not_found"


def test_create_refuses_a_project_of_another_organization() -> None:
    with pytest.raises(NotFound) as info:
        create_environment(an_org(), a_project(org_id=OTHER_ORG), create(), environment_id=ENV)
    assert info.value.code == "project_not_found"
    assert info.value.context == {"org_id": str(ORG), "project_id": str(PROJECT)}


def test_stream_ids_name_the_stream_type_and_the_id() -> None:
    assert STREAM_TYPE == "environment"
    assert stream_id(ENV) == f"environment-{ENV}"


# --- update ----------------------------------------------------------------------


def test_update_records_only_the_fields_that_change() -> None:
    env = an_env()
    assert update_environment(
        an_org(), a_project(), env, update(name="staging-eu", posture="prod")
    ) == (EnvironmentUpdated(posture="prod"),)


def test_update_merges_settings_and_records_the_complete_result() -> None:
    env = an_env(settings={"max_inflight_deployments": 7})
    events = update_environment(
        an_org(), a_project(), env, update(settings={"artifact_retention_days": 365})
    )
    assert events == (
        EnvironmentUpdated(
            settings=EnvironmentSettings(max_inflight_deployments=7, artifact_retention_days=365)
        ),
    )


def test_update_of_the_posture_keeps_the_stored_retention() -> None:
    env = an_env(posture="dev")
    env = evolve(env, update_environment(an_org(), a_project(), env, update(posture="prod"))[0])
    assert (env.posture, env.settings.artifact_retention_days) == ("prod", 30)


def test_update_returns_nothing_when_nothing_changes() -> None:
    env = an_env()
    cmd = update(name="staging-eu", posture="dev", settings={"max_inflight_deployments": 3})
    assert update_environment(an_org(), a_project(), env, cmd) == ()


def test_update_refuses_a_deleted_environment() -> None:
    with pytest.raises(NotFound) as info:
        update_environment(an_org(), a_project(), deleted_env(), update(name="x"))
    assert info.value.code == "environment_not_found"
    assert info.value.context == {
        "org_id": str(ORG),
        "project_id": str(PROJECT),
        "environment_id": str(ENV),
        "status": "deleted",
    }


def test_update_refuses_a_missing_environment() -> None:
    with pytest.raises(NotFound) as info:
        update_environment(an_org(), a_project(), None, update(name="x"))
    assert info.value.code == "environment_not_found"


def test_update_refuses_an_environment_of_another_project() -> None:
    with pytest.raises(NotFound) as info:
        update_environment(
            an_org(), a_project(project_id=OTHER_PROJECT), an_env(), update(name="x")
        )
    assert info.value.code == "environment_not_found"
    assert "status" not in info.value.context


def test_update_refuses_an_environment_whose_project_is_deleted() -> None:
    gone = project.evolve(a_project(), project.ProjectDeleted())
    with pytest.raises(NotFound) as info:
        update_environment(an_org(), gone, an_env(), update(name="x"))
    assert info.value.code == "project_not_found"


def test_update_refuses_an_environment_whose_organization_is_deleted() -> None:
    gone = organization.evolve(an_org(), organization.OrganizationDeleted())
    with pytest.raises(NotFound) as info:
        update_environment(gone, a_project(), an_env(), update(name="x"))
    assert info.value.code == "organization_not_found"


# --- delete ----------------------------------------------------------------------


def test_delete_marks_the_environment_deleted() -> None:
    env = an_env()
    assert delete_environment(an_org(), a_project(), env) == (EnvironmentDeleted(),)
    assert (deleted_env().status, deleted_env().version) == ("deleted", 2)


def test_delete_refuses_a_deleted_environment() -> None:
    with pytest.raises(NotFound) as info:
        delete_environment(an_org(), a_project(), deleted_env())
    assert info.value.code == "environment_not_found"


def test_require_environment_returns_an_active_nested_environment() -> None:
    env = an_env()
    assert require_environment(an_org(), a_project(), env) is env


# --- evolve / fold ---------------------------------------------------------------


def test_fold_refuses_an_event_before_creation() -> None:
    with pytest.raises(InvalidHistory):
        fold([EnvironmentDeleted()])


def test_fold_refuses_a_second_creation() -> None:
    created = EnvironmentCreated(
        environment_id=ENV, org_id=ORG, project_id=PROJECT, name="e", posture="dev"
    )
    with pytest.raises(InvalidHistory):
        fold([created, created])


def test_fold_refuses_another_aggregates_event() -> None:
    with pytest.raises(InvalidHistory):
        fold([project.ProjectDeleted()])


# --- wire commands ---------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        {"name": "e", "posture": "production"},
        {"name": "e"},
        {"name": " e", "posture": "dev"},
        {"name": "e", "posture": "dev", "settings": {"max_inflight_deployments": 0}},
        {"name": "e", "posture": "dev", "settings": {"max_inflight_deployments": 101}},
        {"name": "e", "posture": "dev", "settings": {"artifact_retention_days": 0}},
        {"name": "e", "posture": "dev", "settings": {"artifact_retention_days": 3651}},
        {"name": "e", "posture": "dev", "settings": {"retention": 3}},
    ],
)
def test_create_command_refuses_bad_input(data: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        convert_command(CreateEnvironment, data)


def test_create_command_accepts_the_limits_inclusive() -> None:
    cmd = create(settings={"max_inflight_deployments": 100, "artifact_retention_days": 3650})
    assert cmd.settings is not None
    assert (cmd.settings.max_inflight_deployments, cmd.settings.artifact_retention_days) == (
        100,
        3650,
    )


def test_update_command_needs_at_least_one_field() -> None:
    with pytest.raises(InvalidInput):
        update()
