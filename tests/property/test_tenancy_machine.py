"""The tenancy lifecycles of the module docstrings, against a simple model.

    organization:  (none) → active → deleted
    project:       (none) → active → deleted        needs an active organization
    environment:   (none) → active → deleted        needs an active project of that organization

The machine keeps an in-memory store of encoded events (appends check the
expected version like the real store) and a model of plain dataclasses with
its own, naive rules. Every command is decided against states folded from the
store; the model predicts whether it succeeds or which NotFound code it gets.
Operations through deleted or missing parents, and through the wrong parent
(another organization's project, another project's environment), are refused.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    rule,
)

from domain import environment, organization, project
from domain.codec import Event, default_codec
from domain.envelope import NewEvent
from domain.errors import NotFound
from tests.property import strategies as s

CODEC = default_codec()
missing_ids = st.uuids(version=4)  # never one of the machine's UUID(int=n) ids
create_organizations = s.create_organizations(s.few_names, s.few_settings)
update_organizations = s.update_organizations(s.few_names, s.few_settings)
create_projects = s.create_projects(s.few_names, s.few_descriptions)
update_projects = s.update_projects(s.few_names, s.few_descriptions)
create_environments = s.create_environments(s.few_names)
update_environments = s.update_environments(s.few_names)


@dataclass
class OrgModel:
    name: str
    settings: dict[str, Any]
    alive: bool = True


@dataclass
class ProjectModel:
    org_id: uuid.UUID
    name: str
    description: str
    alive: bool = True


@dataclass
class EnvModel:
    org_id: uuid.UUID
    project_id: uuid.UUID
    name: str
    posture: str
    max_inflight: int
    retention: int
    alive: bool = True


class TenancyMachine(RuleBasedStateMachine):
    orgs = Bundle("orgs")
    projects = Bundle("projects")
    environments = Bundle("environments")

    def __init__(self) -> None:
        super().__init__()
        self.store: dict[str, list[NewEvent]] = {}
        self.org_model: dict[uuid.UUID, OrgModel] = {}
        self.project_model: dict[uuid.UUID, ProjectModel] = {}
        self.env_model: dict[uuid.UUID, EnvModel] = {}
        self.last_id = 0
        self.touched: set[uuid.UUID] = set()

    # --- store ---------------------------------------------------------------------

    def new_id(self) -> uuid.UUID:
        self.last_id += 1
        return uuid.UUID(int=self.last_id)

    def append(self, stream: str, expected_version: int, events: Iterable[Event]) -> None:
        current = self.store.setdefault(stream, [])
        assert len(current) == expected_version, "stale expected version"
        current.extend(CODEC.encode(event) for event in events)

    def load(self, stream: str, fold: Callable[[list[Event]], Any]) -> Any:
        stored = self.store.get(stream, [])
        state = fold([CODEC.decode(e.event_type, e.schema_version, e.payload) for e in stored])
        assert (state.version if state else 0) == len(stored)
        return state

    def org(self, org_id: uuid.UUID) -> organization.Organization | None:
        result: organization.Organization | None = self.load(
            organization.stream_id(org_id), organization.fold
        )
        return result

    def project(self, project_id: uuid.UUID) -> project.Project | None:
        result: project.Project | None = self.load(project.stream_id(project_id), project.fold)
        return result

    def env(self, env_id: uuid.UUID) -> environment.Environment | None:
        result: environment.Environment | None = self.load(
            environment.stream_id(env_id), environment.fold
        )
        return result

    def decide(
        self, stream: str, expected_code: str | None, decision: Callable[[], tuple[Event, ...]]
    ) -> tuple[Event, ...]:
        """Run a decision the model expects to succeed (and append) or to be refused."""
        if expected_code is not None:
            with pytest.raises(NotFound) as info:
                decision()
            assert info.value.code == expected_code
            return ()
        events = decision()
        self.append(stream, len(self.store.get(stream, [])), events)
        return events

    # --- the model's rules -----------------------------------------------------------

    def expect_org(self, org_id: uuid.UUID) -> str | None:
        org = self.org_model.get(org_id)
        return None if org and org.alive else "organization_not_found"

    def expect_project(self, org_id: uuid.UUID, project_id: uuid.UUID) -> str | None:
        if code := self.expect_org(org_id):
            return code
        p = self.project_model.get(project_id)
        return None if p and p.alive and p.org_id == org_id else "project_not_found"

    def expect_env(self, org_id: uuid.UUID, project_id: uuid.UUID, env_id: uuid.UUID) -> str | None:
        if code := self.expect_project(org_id, project_id):
            return code
        e = self.env_model.get(env_id)
        return None if e and e.alive and e.project_id == project_id else "environment_not_found"

    # --- organizations -----------------------------------------------------------------

    @rule(target=orgs, cmd=create_organizations)
    def create_org(self, cmd: organization.CreateOrganization) -> uuid.UUID:
        org_id = self.new_id()
        events = organization.create_organization(cmd, org_id=org_id)
        self.append(organization.stream_id(org_id), 0, events)
        self.org_model[org_id] = OrgModel(name=cmd.name, settings=dict(cmd.settings))
        self.touched.add(org_id)
        return org_id

    @rule(org_id=orgs, cmd=update_organizations)
    def update_org(self, org_id: uuid.UUID, cmd: organization.UpdateOrganization) -> None:
        expected = self.expect_org(org_id)
        self.decide(
            organization.stream_id(org_id),
            expected,
            lambda: organization.update_organization(self.org(org_id), cmd),
        )
        if expected is None:
            model = self.org_model[org_id]
            model.name = cmd.name if cmd.name is not None else model.name
            model.settings = dict(cmd.settings) if cmd.settings is not None else model.settings
        self.touched.add(org_id)

    @rule(org_id=orgs)
    def delete_org(self, org_id: uuid.UUID) -> None:
        expected = self.expect_org(org_id)
        self.decide(
            organization.stream_id(org_id),
            expected,
            lambda: organization.delete_organization(self.org(org_id)),
        )
        self.org_model[org_id].alive = False
        self.touched.add(org_id)

    @rule(org_id=missing_ids, cmd=update_organizations)
    def update_missing_org(self, org_id: uuid.UUID, cmd: organization.UpdateOrganization) -> None:
        with pytest.raises(NotFound, match="organization"):
            organization.update_organization(self.org(org_id), cmd)

    # --- projects ----------------------------------------------------------------------

    def _create_project(self, org_id: uuid.UUID, cmd: project.CreateProject) -> Any:
        project_id = self.new_id()
        expected = self.expect_org(org_id)
        events = self.decide(
            project.stream_id(project_id),
            expected,
            lambda: project.create_project(self.org(org_id), cmd, project_id=project_id),
        )
        self.touched.add(project_id)
        if not events:
            return multiple()
        self.project_model[project_id] = ProjectModel(org_id, cmd.name, cmd.description)
        self.touched.add(project_id)
        return project_id

    @rule(target=projects, org_id=orgs, cmd=create_projects)
    def create_project(self, org_id: uuid.UUID, cmd: project.CreateProject) -> Any:
        return self._create_project(org_id, cmd)

    @rule(target=projects, org_id=missing_ids, cmd=create_projects)
    def create_project_in_missing_org(self, org_id: uuid.UUID, cmd: project.CreateProject) -> Any:
        return self._create_project(org_id, cmd)

    def _update_project(
        self, org_id: uuid.UUID, project_id: uuid.UUID, cmd: project.UpdateProject
    ) -> None:
        expected = self.expect_project(org_id, project_id)
        self.decide(
            project.stream_id(project_id),
            expected,
            lambda: project.update_project(self.org(org_id), self.project(project_id), cmd),
        )
        if expected is None:
            model = self.project_model[project_id]
            model.name = cmd.name if cmd.name is not None else model.name
            if cmd.description is not None:
                model.description = cmd.description
        self.touched.add(project_id)

    @rule(project_id=projects, cmd=update_projects)
    def update_project(self, project_id: uuid.UUID, cmd: project.UpdateProject) -> None:
        self._update_project(self.project_model[project_id].org_id, project_id, cmd)

    @rule(org_id=orgs, project_id=projects, cmd=update_projects)
    def update_project_through_any_org(
        self, org_id: uuid.UUID, project_id: uuid.UUID, cmd: project.UpdateProject
    ) -> None:
        self._update_project(org_id, project_id, cmd)

    @rule(project_id=projects)
    def delete_project(self, project_id: uuid.UUID) -> None:
        org_id = self.project_model[project_id].org_id
        expected = self.expect_project(org_id, project_id)
        self.decide(
            project.stream_id(project_id),
            expected,
            lambda: project.delete_project(self.org(org_id), self.project(project_id)),
        )
        if expected is None:
            self.project_model[project_id].alive = False
        self.touched.add(project_id)

    # --- environments ------------------------------------------------------------------

    def _create_env(
        self, org_id: uuid.UUID, project_id: uuid.UUID, cmd: environment.CreateEnvironment
    ) -> Any:
        env_id = self.new_id()
        expected = self.expect_project(org_id, project_id)
        events = self.decide(
            environment.stream_id(env_id),
            expected,
            lambda: environment.create_environment(
                self.org(org_id), self.project(project_id), cmd, environment_id=env_id
            ),
        )
        self.touched.add(env_id)
        if not events:
            return multiple()
        given = cmd.settings or environment.EnvironmentSettingsInput()
        self.env_model[env_id] = EnvModel(
            org_id=org_id,
            project_id=project_id,
            name=cmd.name,
            posture=cmd.posture,
            max_inflight=given.max_inflight_deployments or 3,
            retention=given.artifact_retention_days or (90 if cmd.posture == "prod" else 30),
        )
        self.touched.add(env_id)
        return env_id

    @rule(target=environments, project_id=projects, cmd=create_environments)
    def create_env(self, project_id: uuid.UUID, cmd: environment.CreateEnvironment) -> Any:
        return self._create_env(self.project_model[project_id].org_id, project_id, cmd)

    @rule(target=environments, org_id=orgs, project_id=projects, cmd=create_environments)
    def create_env_through_any_org(
        self, org_id: uuid.UUID, project_id: uuid.UUID, cmd: environment.CreateEnvironment
    ) -> Any:
        return self._create_env(org_id, project_id, cmd)

    @rule(target=environments, org_id=orgs, project_id=missing_ids, cmd=create_environments)
    def create_env_in_missing_project(
        self, org_id: uuid.UUID, project_id: uuid.UUID, cmd: environment.CreateEnvironment
    ) -> Any:
        return self._create_env(org_id, project_id, cmd)

    def _update_env(
        self, project_id: uuid.UUID, env_id: uuid.UUID, cmd: environment.UpdateEnvironment
    ) -> None:
        org_id = self.project_model[project_id].org_id
        expected = self.expect_env(org_id, project_id, env_id)
        self.decide(
            environment.stream_id(env_id),
            expected,
            lambda: environment.update_environment(
                self.org(org_id), self.project(project_id), self.env(env_id), cmd
            ),
        )
        if expected is None:
            model = self.env_model[env_id]
            model.name = cmd.name or model.name
            model.posture = cmd.posture or model.posture
            if cmd.settings is not None:
                model.max_inflight = cmd.settings.max_inflight_deployments or model.max_inflight
                model.retention = cmd.settings.artifact_retention_days or model.retention
        self.touched.add(env_id)

    @rule(env_id=environments, cmd=update_environments)
    def update_env(self, env_id: uuid.UUID, cmd: environment.UpdateEnvironment) -> None:
        self._update_env(self.env_model[env_id].project_id, env_id, cmd)

    @rule(project_id=projects, env_id=environments, cmd=update_environments)
    def update_env_through_any_project(
        self, project_id: uuid.UUID, env_id: uuid.UUID, cmd: environment.UpdateEnvironment
    ) -> None:
        self._update_env(project_id, env_id, cmd)

    @rule(env_id=environments)
    def delete_env(self, env_id: uuid.UUID) -> None:
        model = self.env_model[env_id]
        expected = self.expect_env(model.org_id, model.project_id, env_id)
        self.decide(
            environment.stream_id(env_id),
            expected,
            lambda: environment.delete_environment(
                self.org(model.org_id), self.project(model.project_id), self.env(env_id)
            ),
        )
        if expected is None:
            model.alive = False
        self.touched.add(env_id)

    # --- the store agrees with the model ---------------------------------------------

    def check(self, resource_id: uuid.UUID) -> None:
        if (org_model := self.org_model.get(resource_id)) is not None:
            org = self.org(resource_id)
            assert org is not None
            assert (org.name, org.settings) == (org_model.name, org_model.settings)
            assert (org.status == "active") == org_model.alive
        elif (project_model := self.project_model.get(resource_id)) is not None:
            p = self.project(resource_id)
            assert p is not None
            assert (p.org_id, p.name, p.description) == (
                project_model.org_id,
                project_model.name,
                project_model.description,
            )
            assert (p.status == "active") == project_model.alive
        elif (env_model := self.env_model.get(resource_id)) is not None:
            e = self.env(resource_id)
            assert e is not None
            assert (e.org_id, e.project_id, e.name, e.posture) == (
                env_model.org_id,
                env_model.project_id,
                env_model.name,
                env_model.posture,
            )
            assert (e.settings.max_inflight_deployments, e.settings.artifact_retention_days) == (
                env_model.max_inflight,
                env_model.retention,
            )
            assert (e.status == "active") == env_model.alive
        else:  # a refused creation leaves no stream behind
            assert not self.store.get(environment.stream_id(resource_id))
            assert not self.store.get(project.stream_id(resource_id))

    @invariant()
    def touched_resources_match_the_model(self) -> None:
        for resource_id in self.touched:
            self.check(resource_id)
        self.touched.clear()

    def teardown(self) -> None:
        for resource_id in [*self.org_model, *self.project_model, *self.env_model]:
            self.check(resource_id)


# Three-level lifecycles are shallow: 30 steps reach deletes through every level
# while keeping the test under a few seconds.
TenancyMachine.TestCase.settings = settings(stateful_step_count=30, deadline=None)
TestTenancyMachine = TenancyMachine.TestCase
