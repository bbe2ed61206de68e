"""Credential primitives: secrets, password hashes, prefix routing, and the
API-key and token events of the organization and user aggregates."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from commands.auth import Authenticated, CredentialRejected, authenticate_token
from commands.credentials import (
    API_KEY_PREFIX,
    PAT_PREFIX,
    SESSION_PREFIX,
    check_expiry,
    check_password,
    hash_password,
    hash_token,
    looks_like,
    mint_token,
    verify_password,
)
from domain import organization as org_mod
from domain import user as user_mod
from domain.errors import InvalidInput, NotFound
from domain.principal import Principal

FAST = {"n": 2**10, "r": 8, "p": 1}  # cheap scrypt parameters for tests


@pytest.mark.parametrize("prefix", [PAT_PREFIX, API_KEY_PREFIX, SESSION_PREFIX])
def test_minted_secrets_carry_their_prefix_and_256_bits(prefix: str) -> None:
    a, b = mint_token(prefix), mint_token(prefix)
    assert a.token.startswith(prefix) and looks_like(a.token, prefix)
    assert a.token != b.token and a.id != b.id
    assert a.prefix == a.token[: len(prefix) + 6]
    assert a.token_hash == hash_token(a.token) and len(a.token_hash) == 32
    others = {PAT_PREFIX, API_KEY_PREFIX, SESSION_PREFIX} - {prefix}
    assert not any(looks_like(a.token, other) for other in others)


def test_passwords_hash_with_a_fresh_salt_and_verify() -> None:
    one = hash_password("hunter22hunter", **FAST)
    two = hash_password("hunter22hunter", **FAST)
    assert one != two and one.startswith("scrypt$1024$8$1$")
    assert verify_password("hunter22hunter", one) and verify_password("hunter22hunter", two)
    assert not verify_password("hunter22hunteR", one)


@pytest.mark.parametrize(
    "encoded",
    ["", "bcrypt$x", "scrypt$1024$8$1$!!$!!", "scrypt$abc$8$1$AAAA$AAAA", "scrypt$3$8$1$AA$AA"],
)
def test_a_malformed_password_hash_never_verifies(encoded: str) -> None:
    assert not verify_password("anything", encoded)


def test_the_default_scrypt_cost_is_at_least_n_2_15() -> None:
    encoded = hash_password("a long enough password")
    _, n, r, p, _, _ = encoded.split("$")
    assert int(n) >= 2**15 and int(r) >= 8 and int(p) >= 1


@pytest.mark.parametrize("password", ["", "short", "x" * 1025])
def test_password_length_is_checked(password: str) -> None:
    with pytest.raises(InvalidInput):
        check_password(password)


def test_expiry_must_be_zoned_and_in_the_future() -> None:
    now = datetime.now(UTC)
    check_expiry(None, now)
    check_expiry(now + timedelta(seconds=1), now)
    for bad in (now, now - timedelta(days=1), datetime(2999, 1, 1)):
        with pytest.raises(InvalidInput):
            check_expiry(bad, now)


class Fake:
    def __init__(self, family: str, answer: Principal | CredentialRejected | None) -> None:
        self.family = family
        self.answer = answer
        self.seen: list[str] = []

    async def authenticate(self, token: str, permit: object = None) -> Authenticated | None:
        self.seen.append(token)
        if isinstance(self.answer, CredentialRejected):
            raise self.answer
        return None if self.answer is None else Authenticated(self.answer)


async def test_each_token_is_judged_only_by_its_prefixs_family() -> None:
    user = Principal(
        kind="user", id=uuid.uuid4(), credential_id=uuid.uuid4(), family="personal_access_token"
    )
    pats = Fake("personal_access_token", user)
    keys = Fake("org_api_key", CredentialRejected("revoked"))
    table = {PAT_PREFIX: pats, API_KEY_PREFIX: keys}
    authenticated = await authenticate_token(table, "byp_abc")
    assert authenticated is not None and authenticated.principal is user
    assert await authenticate_token(table, "byo_abc") is None
    assert await authenticate_token(table, "bys_abc") is None
    assert await authenticate_token(table, "abc") is None
    assert await authenticate_token(table, None) is None
    assert pats.seen == ["byp_abc"] and keys.seen == ["byo_abc"]


def _org() -> org_mod.Organization:
    events = org_mod.create_organization(
        org_mod.CreateOrganization(name="Acme"), org_id=uuid.uuid4(), created_by=uuid.uuid4()
    )
    state = org_mod.fold(events)
    assert state is not None
    return state


def test_api_keys_are_issued_and_revoked_on_the_organization() -> None:
    org = _org()
    now = datetime.now(UTC)
    key_id = uuid.uuid4()
    cmd = org_mod.IssueApiKey(name="ci", role="operator")
    (issued,) = org_mod.issue_api_key(org, cmd, key_id=key_id, prefix="byo_abcdef", now=now)
    org = org_mod.evolve(org, issued)
    assert org.api_keys == {str(key_id): "operator"} and org.version == 3
    (revoked,) = org_mod.revoke_api_key(org, key_id)
    org = org_mod.evolve(org, revoked)
    assert org.api_keys == {}
    with pytest.raises(NotFound):
        org_mod.revoke_api_key(org, key_id)
    late = org_mod.IssueApiKey(name="x", role="viewer", expires_at=now - timedelta(seconds=1))
    with pytest.raises(InvalidInput):
        org_mod.issue_api_key(org, late, key_id=uuid.uuid4(), prefix="byo_x", now=now)


def test_token_and_password_events_fold_on_the_user() -> None:
    user_id = uuid.uuid4()
    events = list(user_mod.create_user(user_mod.CreateUser(email="a@example.com"), user_id=user_id))
    user = user_mod.fold(events)
    token_id = uuid.uuid4()
    events += user_mod.issue_token(
        user, token_id=token_id, name="t", prefix="byp_x", scopes=("ViewOrg",)
    )
    events += user_mod.revoke_token(user, token_id=token_id)
    events += user_mod.set_password(user)
    session_id = uuid.uuid4()
    in_12h = datetime.now(UTC) + timedelta(hours=12)
    events += user_mod.start_session(user, session_id=session_id, prefix="bys_x", expires_at=in_12h)
    events += user_mod.end_session(user, session_id=session_id)
    final = user_mod.fold(events)
    assert final is not None and final.version == 6
    with pytest.raises(NotFound):
        user_mod.revoke_token(None, token_id=token_id)
