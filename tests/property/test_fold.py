"""Replaying any history folds to the same state.

For every generated script, the state a handler holds after deciding step by
step (evolving by each decided event) equals ``fold`` of all the events, and
equals ``fold`` of the events after a trip through the codec (what a reload
from the store, or a projection replay, sees).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from hypothesis import given

from domain import environment, organization, project, user
from domain.codec import Event, default_codec
from tests.property import strategies as s

CODEC = default_codec()


def through_the_store(events: Iterable[Event]) -> list[Event]:
    stored = [CODEC.encode(event) for event in events]
    return [CODEC.decode(new.event_type, new.schema_version, new.payload) for new in stored]


def check_replay(
    events: list[Event], incremental: Any, fold: Callable[[Iterable[Event]], Any]
) -> None:
    assert fold(events) == incremental
    assert fold(through_the_store(events)) == incremental
    assert incremental.version == len(events)


@given(script=s.organization_scripts())
def test_replaying_any_organization_history_folds_to_the_decided_state(script: s.Script) -> None:
    events, state = s.run(script, organization.evolve)
    check_replay(events, state, organization.fold)


@given(script=s.project_scripts(s.active_organization()))
def test_replaying_any_project_history_folds_to_the_decided_state(script: s.Script) -> None:
    events, state = s.run(script, project.evolve, s.active_organization())
    check_replay(events, state, project.fold)


@given(
    script=s.environment_scripts(s.active_organization(), s.active_project(s.active_organization()))
)
def test_replaying_any_environment_history_folds_to_the_decided_state(script: s.Script) -> None:
    org = s.active_organization()
    events, state = s.run(script, environment.evolve, org, s.active_project(org))
    check_replay(events, state, environment.fold)


@given(script=s.user_scripts())
def test_replaying_any_user_history_folds_to_the_decided_state(script: s.Script) -> None:
    events, state = s.run(script, user.evolve)
    check_replay(events, state, user.fold)


@given(events=s.organization_histories())
def test_an_organization_with_an_admin_never_loses_its_last_admin(events: list[Event]) -> None:
    admins_seen = False
    state = None
    for event in events:
        state = organization.evolve(state, event)  # type: ignore[arg-type]
        admins = [role for role in state.members.values() if role == "org_admin"]
        admins_seen = admins_seen or bool(admins)
        assert admins or not admins_seen
