from __future__ import annotations

import uuid

import msgspec
import pytest

from domain.codec import convert_command, default_codec
from domain.errors import InvalidHistory, InvalidInput, NotFound
from domain.project import ProjectDeleted
from domain.user import (
    STREAM_TYPE,
    CreateUser,
    User,
    UserCreated,
    create_user,
    fold,
    require_user,
    stream_id,
)

ADA = uuid.UUID(int=10)


def test_create_records_the_user_with_a_lowercased_email() -> None:
    cmd = convert_command(CreateUser, {"email": "Ada.Lovelace+cloud@Example.COM"})
    events = create_user(cmd, user_id=ADA)
    assert events == (UserCreated(user_id=ADA, email="ada.lovelace+cloud@example.com"),)
    assert fold(events) == User(
        id=ADA, email="ada.lovelace+cloud@example.com", status="active", version=1
    )


def test_user_events_carry_no_credentials() -> None:
    payload = default_codec().encode(UserCreated(user_id=ADA, email="a@example.com")).payload
    assert set(msgspec.json.decode(payload)) == {"type", "user_id", "email"}


def test_stream_ids_name_the_stream_type_and_the_id() -> None:
    assert STREAM_TYPE == "user"
    assert stream_id(ADA) == f"user-{ADA}"


def test_require_user_refuses_a_missing_user() -> None:
    with pytest.raises(NotFound) as info:
        require_user(None)
    assert info.value.code == "user_not_found"


def test_require_user_returns_an_existing_user() -> None:
    user = fold(create_user(CreateUser(email="a@example.com"), user_id=ADA))
    assert require_user(user) is user


def test_fold_refuses_a_second_creation() -> None:
    created = UserCreated(user_id=ADA, email="a@example.com")
    with pytest.raises(InvalidHistory):
        fold([created, created])


def test_fold_refuses_another_aggregates_event() -> None:
    with pytest.raises(InvalidHistory):
        fold([ProjectDeleted()])


@pytest.mark.parametrize(
    "email",
    [
        "ada@example.com",
        "a.b-c_d+e@sub.example.co.uk",
        "x@a-b.io",
        "ADA@EXAMPLE.COM",
        "l" * 64 + "@example.com",
    ],
)
def test_create_command_accepts_ordinary_addresses(email: str) -> None:
    assert convert_command(CreateUser, {"email": email}).email == email


@pytest.mark.parametrize(
    "email",
    [
        "",
        "ada",
        "ada@",
        "@example.com",
        "ada@localhost",
        "ada@@example.com",
        "a da@example.com",
        "ada@example.com\n",
        " ada@example.com",
        "ada@-example.com",
        "ada@example..com",
        "l" * 65 + "@example.com",
        "a@" + "b" * 64 + ".com",
        "a@" + ".".join(["b" * 60] * 5) + ".com",
    ],
)
def test_create_command_refuses_malformed_addresses(email: str) -> None:
    with pytest.raises(InvalidInput) as info:
        convert_command(CreateUser, {"email": email})
    assert info.value.errors[0].path == "/email"


def test_create_command_refuses_unknown_fields() -> None:
    with pytest.raises(InvalidInput):
        convert_command(CreateUser, {"email": "a@example.com", "password": "hunter2"})


def test_an_oidc_link_and_an_oidc_session_are_recorded_on_the_user() -> None:
    from datetime import UTC, datetime

    from domain import user as user_mod

    user = fold(create_user(convert_command(CreateUser, {"email": "a@example.com"}), user_id=ADA))
    linked = user_mod.link_oidc(user, issuer="https://id.example.com", subject="s-1")
    assert linked == (user_mod.UserOidcLinked(issuer="https://id.example.com", subject="s-1"),)
    started = user_mod.start_session(
        user,
        session_id=uuid.UUID(int=1),
        prefix="bys_abcdef",
        expires_at=datetime(2026, 1, 1, tzinfo=UTC),
        method="oidc",
    )
    assert started[0].method == "oidc"  # type: ignore[union-attr]
    assert fold([*create_user(CreateUser(email="a@example.com"), user_id=ADA), *linked]) == User(
        id=ADA, email="a@example.com", status="active", version=2
    )
    with pytest.raises(NotFound):
        user_mod.link_oidc(None, issuer="https://id.example.com", subject="s-1")


def test_a_session_started_before_oidc_decodes_as_a_password_login() -> None:
    from domain import user as user_mod

    old = (
        b'{"type": "user.session_started", "session_id": "00000000-0000-0000-0000-000000000001",'
        b' "prefix": "bys_abcdef", "expires_at": "2026-01-01T00:00:00Z"}'
    )
    event = default_codec().decode("user.session_started", 1, old)
    assert isinstance(event, user_mod.UserSessionStarted) and event.method == "password"
