"""Hand-written hypothesis strategies for tenancy commands and histories.

``st.from_type`` would ignore the msgspec ``Meta`` constraints, so every
command here is built from plain data through ``convert_command``: a strategy
that drifted from the wire rules fails loudly instead of testing nothing.

A *script* is a creation plus a list of steps; each step is a
``functools.partial`` of a decision (readable in hypothesis' falsifying
examples) that still needs its state arguments. Running a script keeps the
events the decisions accept and skips the ones they refuse, so every history
produced is one the write side could have recorded.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from hypothesis import strategies as st

from domain import environment, organization, project, user
from domain.codec import Event, convert_command
from domain.errors import DomainError

T = TypeVar("T")

_no_surrogates = st.characters(exclude_categories=("Cs",))
_printable = st.characters(exclude_categories=("Cc", "Cs"))

names = st.text(_printable, min_size=1, max_size=100).map(str.strip).filter(bool)
descriptions = st.text(_no_surrogates, max_size=1000)
setting_keys = st.from_regex(r"[a-z][a-z0-9_]{0,63}", fullmatch=True)
setting_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(_no_surrogates, max_size=1000),
)
settings = st.dictionaries(setting_keys, setting_values, max_size=8)
roles = st.sampled_from(organization.ROLES)
postures = st.sampled_from(environment.POSTURES)
_label = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
emails = st.builds(
    lambda local, labels, tld: f"{local}@{'.'.join(labels)}.{tld}",
    st.from_regex(r"[A-Za-z0-9._%+-]{1,20}", fullmatch=True),
    st.lists(_label, min_size=1, max_size=3),
    st.sampled_from(["com", "org", "io", "example", "COM"]),
)
# A small pool, so that member steps hit existing members often.
user_ids = st.sampled_from([uuid.UUID(int=0x100 + i) for i in range(4)])


def _optional(strategy: st.SearchStrategy[T]) -> st.SearchStrategy[T | None]:
    return st.none() | strategy


def _command(cls: type[T], **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[T]:
    """``cls`` from a dict of the given fields, dropping absent (None) ones."""

    def build(data: dict[str, Any]) -> T:
        return convert_command(cls, {k: v for k, v in data.items() if v is not None})

    return st.fixed_dictionaries(fields).map(build)


def _partial_update(cls: type[T], **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[T]:
    """An update command with a non-empty subset of the fields set."""

    @st.composite
    def build(draw: st.DrawFn) -> T:
        chosen = draw(st.sets(st.sampled_from(sorted(fields)), min_size=1))
        return convert_command(cls, {name: draw(fields[name]) for name in sorted(chosen)})

    return build()


# --- commands ---------------------------------------------------------------------
# Functions take the value strategies, so a stateful machine can pass small
# ones (its cost is in drawing data, not in the domain).

# Few distinct values: renames to the current name (a no-op) are frequent.
few_names = st.sampled_from(["Acme", "Beta", "Ops δ", "x"])
few_settings = st.sampled_from([{}, {"tier": "pro"}, {"tier": "pro", "seats": 5}, {"seats": True}])
few_descriptions = st.sampled_from(["", "ETL", "line one\nline two"])
environment_settings = st.builds(
    lambda inflight, days: {
        k: v
        for k, v in {
            "max_inflight_deployments": inflight,
            "artifact_retention_days": days,
        }.items()
        if v is not None
    },
    _optional(st.integers(1, 100)),
    _optional(st.integers(1, 3650)),
)


def create_organizations(
    names: st.SearchStrategy[str] = names, settings: st.SearchStrategy[Any] = settings
) -> st.SearchStrategy[organization.CreateOrganization]:
    return _command(organization.CreateOrganization, name=names, settings=_optional(settings))


def update_organizations(
    names: st.SearchStrategy[str] = names, settings: st.SearchStrategy[Any] = settings
) -> st.SearchStrategy[organization.UpdateOrganization]:
    return _partial_update(organization.UpdateOrganization, name=names, settings=settings)


def create_projects(
    names: st.SearchStrategy[str] = names, descriptions: st.SearchStrategy[str] = descriptions
) -> st.SearchStrategy[project.CreateProject]:
    return _command(project.CreateProject, name=names, description=_optional(descriptions))


def update_projects(
    names: st.SearchStrategy[str] = names, descriptions: st.SearchStrategy[str] = descriptions
) -> st.SearchStrategy[project.UpdateProject]:
    return _partial_update(project.UpdateProject, name=names, description=descriptions)


def create_environments(
    names: st.SearchStrategy[str] = names,
) -> st.SearchStrategy[environment.CreateEnvironment]:
    return _command(
        environment.CreateEnvironment,
        name=names,
        posture=postures,
        settings=_optional(environment_settings),
    )


def update_environments(
    names: st.SearchStrategy[str] = names,
) -> st.SearchStrategy[environment.UpdateEnvironment]:
    return _partial_update(
        environment.UpdateEnvironment, name=names, posture=postures, settings=environment_settings
    )


create_users = _command(user.CreateUser, email=emails)


# --- scripts and histories -----------------------------------------------------------

Step = Callable[..., tuple[Event, ...]]


@dataclass(frozen=True)
class Script:
    """The first decision's events, then steps taking the aggregate's state arguments."""

    created: tuple[Event, ...]
    steps: tuple[Step, ...]


organization_steps: st.SearchStrategy[Step] = st.one_of(
    update_organizations().map(lambda cmd: partial(organization.update_organization, cmd=cmd)),
    st.builds(partial, st.just(organization.add_member), user_id=user_ids, role=roles),
    st.builds(partial, st.just(organization.change_member_role), user_id=user_ids, role=roles),
    st.builds(partial, st.just(organization.remove_member), user_id=user_ids),
    st.just(partial(organization.delete_organization)),
)


@st.composite
def organization_scripts(draw: st.DrawFn) -> Script:
    created = organization.create_organization(
        draw(create_organizations()),
        org_id=draw(st.uuids()),
        created_by=draw(_optional(user_ids)),
    )
    return Script(created, tuple(draw(st.lists(organization_steps, max_size=12))))


@st.composite
def project_scripts(draw: st.DrawFn, org: organization.Organization) -> Script:
    created = project.create_project(org, draw(create_projects()), project_id=draw(st.uuids()))
    steps = st.one_of(
        update_projects().map(lambda cmd: partial(project.update_project, cmd=cmd)),
        st.just(partial(project.delete_project)),
    )
    return Script(created, tuple(draw(st.lists(steps, max_size=8))))


@st.composite
def environment_scripts(
    draw: st.DrawFn, org: organization.Organization, parent: project.Project
) -> Script:
    created = environment.create_environment(
        org, parent, draw(create_environments()), environment_id=draw(st.uuids())
    )
    steps = st.one_of(
        update_environments().map(lambda cmd: partial(environment.update_environment, cmd=cmd)),
        st.just(partial(environment.delete_environment)),
    )
    return Script(created, tuple(draw(st.lists(steps, max_size=8))))


@st.composite
def user_scripts(draw: st.DrawFn) -> Script:
    return Script(user.create_user(draw(create_users), user_id=draw(st.uuids())), ())


def run(
    script: Script,
    evolve: Callable[[Any, Any], Any],
    *parents: object,
) -> tuple[list[Event], Any]:
    """Play a script: decide against the current state, evolve by what was decided.

    Returns the accepted events and the state built incrementally along the way;
    refused steps (a DomainError) are skipped, as the write side would record nothing.
    """
    state: Any = None
    events: list[Event] = []
    for event in script.created:
        state = evolve(state, event)
        events.append(event)
    for step in script.steps:
        try:
            decided = step(*parents, state)
        except DomainError:
            continue
        for event in decided:
            state = evolve(state, event)
            events.append(event)
    return events, state


@st.composite
def organization_histories(draw: st.DrawFn) -> list[Event]:
    """Events of one organization stream that the decisions could have produced."""
    events, _ = run(draw(organization_scripts()), organization.evolve)
    return events


ORG_ID = uuid.UUID(int=1)
PROJECT_ID = uuid.UUID(int=2)


def active_organization() -> organization.Organization:
    cmd = organization.CreateOrganization(name="Acme")
    org = organization.fold(organization.create_organization(cmd, org_id=ORG_ID))
    assert org is not None
    return org


def active_project(org: organization.Organization) -> project.Project:
    cmd = project.CreateProject(name="Pipelines")
    p = project.fold(project.create_project(org, cmd, project_id=PROJECT_ID))
    assert p is not None
    return p
