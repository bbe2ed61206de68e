"""The signing key aggregate: create, rotate out, retire; the key set it yields."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from domain import signing_key as key_mod
from domain.credential import key_set_json, keys_from_key_set
from tests.lifecycle import through_codec

ORG = uuid.UUID(int=1)
KEY = uuid.UUID(int=10)
NOW = datetime(2026, 12, 3, 18, 0, 0, 123456, tzinfo=UTC)


def a_key(key_id: uuid.UUID = KEY) -> key_mod.SigningKeyState:
    events = key_mod.create_key(
        key_id=key_id, org_id=ORG, name="k", kid=f"kid-{key_id.int}", public_key=b"x" * 32, now=NOW
    )
    state = key_mod.fold(through_codec(events))
    assert state is not None
    return state


def test_created_active_to_the_second() -> None:
    key = a_key()
    assert key.status == "active" and key.version == 1
    assert key.not_before == NOW.replace(microsecond=0) and key.not_after is None


def test_rotate_then_retire() -> None:
    key = a_key()
    new_id = uuid.UUID(int=11)
    rotated = key_mod.evolve(key, key_mod.rotate_out(key, replaced_by=new_id, now=NOW)[0])
    assert rotated.status == "retiring" and rotated.replaced_by == new_id
    with pytest.raises(key_mod.SigningKeyIllegalTransition):
        key_mod.rotate_out(rotated, replaced_by=new_id, now=NOW)
    later = NOW + timedelta(days=1)
    retired = key_mod.evolve(rotated, key_mod.retire(rotated, now=later)[0])
    assert retired.status == "retired" and retired.not_after == later.replace(microsecond=0)
    assert key_mod.retire(retired, now=later) == ()


def test_key_set_lists_retiring_keys_as_active_and_retired_with_their_window() -> None:
    key = a_key()
    retiring = key_mod.evolve(
        key, key_mod.rotate_out(key, replaced_by=uuid.UUID(int=11), now=NOW)[0]
    )
    other = a_key(uuid.UUID(int=12))
    retired = key_mod.evolve(other, key_mod.retire(other, now=NOW)[0])
    keys = keys_from_key_set(
        key_set_json([key_mod.public_key_of(retiring), key_mod.public_key_of(retired)])
    )
    assert keys[retiring.kid].status == "active"
    assert keys[retired.kid].status == "retired"
    assert keys[retired.kid].not_after == NOW.replace(microsecond=0)


def test_another_orgs_key_is_not_found() -> None:
    with pytest.raises(key_mod.NotFound):
        key_mod.require_key(a_key(), uuid.UUID(int=2))
