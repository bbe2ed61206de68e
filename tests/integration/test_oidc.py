"""OIDC login against a real OpenID provider on loopback (npm oidc-provider).

The browser's part is played with httpx (tests/oidc_provider.py sign_in): the
API's GET /auth/login redirect, the provider's login and consent forms, and the
redirect back to GET /auth/callback on the in-process API.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

import asyncpg
import httpx
import pytest

from commands.bootstrap import create_user
from commands.credentials import hash_token
from commands.oidc_client import OidcClient, OidcSettings
from commands.oidc_pending import PendingLogin, seal, state_hash, unseal
from commands.ratelimit import RateLimits
from ops.app import create_app
from projections.feed import PgFeed
from tests.oidc_provider import API_BASE, OidcProvider, sign_in

pytestmark = pytest.mark.asyncio


def settings_for(provider: OidcProvider) -> OidcSettings:
    return OidcSettings(
        issuer=provider.issuer,
        client_id=provider.client_id,
        client_secret=provider.client_secret,
        redirect_url=provider.redirect_uri,
    )


@pytest.fixture
async def api(pool, projector, oidc_provider) -> AsyncIterator[httpx.AsyncClient]:
    """The API with the test provider configured as its issuer."""
    oidc = OidcClient(settings_for(oidc_provider))
    app = create_app(
        pool, PgFeed(pool), oidc=oidc, rate_limits=RateLimits(default=10_000, auth=10_000)
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=API_BASE) as client:
        yield client
    await oidc.close()


async def start(api: httpx.AsyncClient) -> tuple[str, str]:
    """GET /auth/login: the provider's authorization URL and the state in it."""
    r = await api.get("/auth/login")
    assert r.status_code == 302, r.text
    assert r.headers["cache-control"] == "no-store"
    url = r.headers["location"]
    return url, parse_qs(urlsplit(url).query)["state"][0]


async def callback(api: httpx.AsyncClient, url: str) -> httpx.Response:
    parts = urlsplit(url)
    return await api.get(f"{parts.path}?{parts.query}")


async def login(api: httpx.AsyncClient, provider: OidcProvider, name: str) -> httpx.Response:
    url, _ = await start(api)
    return await callback(api, await sign_in(provider, url, name))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def problem(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == code, r.json()


async def owner(database: str) -> asyncpg.Connection:
    """A connection as the migration owner (the app role cannot edit pending logins)."""
    return await asyncpg.connect(database)


async def test_oidc_login_gives_a_session_that_calls_the_api_and_logout_revokes_it(
    api, oidc_provider, pool
) -> None:
    url, state = await start(api)
    query = parse_qs(urlsplit(url).query)
    assert url.startswith(f"{oidc_provider.issuer}/auth?")
    assert query["response_type"] == ["code"]
    assert query["client_id"] == [oidc_provider.client_id]
    assert query["redirect_uri"] == [oidc_provider.redirect_uri]
    assert query["code_challenge_method"] == ["S256"]
    assert set(query["scope"][0].split()) >= {"openid", "email"}
    assert query["nonce"][0] != state

    # Only the state's hash is stored, and the nonce and verifier only sealed.
    row = await pool.fetchrow("SELECT state_hash, sealed FROM oidc_pending_logins")
    assert bytes(row["state_hash"]) == state_hash(state)
    assert query["nonce"][0].encode() not in bytes(row["sealed"])

    back = await sign_in(oidc_provider, url, "ada")
    assert parse_qs(urlsplit(back).query)["iss"] == [oidc_provider.issuer]
    r = await callback(api, back)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["token"].startswith("bys_") and body["prefix"] == body["token"][:10]
    expires = datetime.fromisoformat(body["expires_at"])
    assert timedelta(hours=11, minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=12)
    assert await pool.fetchval("SELECT count(*) FROM oidc_pending_logins") == 0

    session = bearer(body["token"])
    me = await api.get("/api/v1/me", headers=session)
    assert me.status_code == 200, me.text
    assert me.json()["family"] == "session" and me.json()["kind"] == "user"
    user_id = me.json()["id"]
    owner_of_email = await pool.fetchval(
        "SELECT user_id FROM user_emails WHERE email = 'ada@example.test'"
    )
    assert owner_of_email == uuid.UUID(user_id)
    # A first-time user is no member of anything.
    orgs = await api.get("/api/v1/orgs", headers=session)
    assert orgs.status_code == 200 and orgs.json()["items"] == []

    stored = await pool.fetchrow(
        "SELECT token_hash FROM user_sessions WHERE id = $1::uuid", body["id"]
    )
    assert bytes(stored["token_hash"]) == hash_token(body["token"])
    rows = await pool.fetch(
        "SELECT event_type, payload, actor_id FROM events WHERE stream_id = $1 "
        "ORDER BY stream_version",
        f"user-{user_id}",
    )
    assert [r["event_type"] for r in rows] == [
        "user.created",
        "user.oidc_linked",
        "user.session_started",
    ]
    linked = json.loads(rows[1]["payload"])
    assert (linked["issuer"], linked["subject"]) == (oidc_provider.issuer, "ada")
    started = json.loads(rows[2]["payload"])
    assert started["method"] == "oidc" and started["session_id"] == body["id"]
    assert {r["actor_id"] for r in rows} == {user_id}

    assert (await api.post("/auth/logout", headers=session)).status_code == 204
    assert (await api.get("/api/v1/me", headers=session)).status_code == 401

    # The same provider account signs in as the same user again, with a new session.
    again = await login(api, oidc_provider, "ada")
    assert again.status_code == 200, again.text
    me = await api.get("/api/v1/me", headers=bearer(again.json()["token"]))
    assert me.json()["id"] == user_id
    count = await pool.fetchval(
        "SELECT count(*) FROM events WHERE stream_id = $1 AND event_type = 'user.created'",
        f"user-{user_id}",
    )
    assert count == 1


async def test_a_public_client_signs_in_with_pkce_alone(pool, projector, oidc_provider) -> None:
    settings = OidcSettings(
        issuer=oidc_provider.issuer,
        client_id=f"{oidc_provider.client_id}-public",
        redirect_url=oidc_provider.redirect_uri,
    )
    oidc = OidcClient(settings)
    app = create_app(pool, PgFeed(pool), oidc=oidc)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=API_BASE) as api:
        r = await login(api, oidc_provider, "ada")
        assert r.status_code == 200, r.text
        me = await api.get("/api/v1/me", headers=bearer(r.json()["token"]))
        assert me.status_code == 200 and me.json()["family"] == "session"
    await oidc.close()


async def test_a_login_started_on_one_api_process_finishes_on_another(
    pool, projector, oidc_provider
) -> None:
    """Two apps, each with its own OIDC client (and no memory in common): the
    pending login lives in PostgreSQL."""
    clients = [OidcClient(settings_for(oidc_provider)) for _ in range(2)]
    apps = [create_app(pool, PgFeed(pool), oidc=c) for c in clients]
    one, two = (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url=API_BASE) for a in apps
    )
    async with one, two:
        url, _ = await start(one)
        r = await callback(two, await sign_in(oidc_provider, url, "ada"))
        assert r.status_code == 200, r.text
        me = await one.get("/api/v1/me", headers=bearer(r.json()["token"]))
        assert me.status_code == 200
    for c in clients:
        await c.close()


async def test_two_first_sign_ins_of_one_account_at_once_make_one_user(
    api, oidc_provider, pool
) -> None:
    backs = []
    for _ in range(2):
        url, _ = await start(api)
        backs.append(await sign_in(oidc_provider, url, "twin"))
    answers = await asyncio.gather(*(callback(api, back) for back in backs))
    assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
    ids = {
        (await api.get("/api/v1/me", headers=bearer(r.json()["token"]))).json()["id"]
        for r in answers
    }
    assert len(ids) == 1
    assert await pool.fetchval("SELECT count(*) FROM user_oidc_identities") == 1
    created = await pool.fetchval("SELECT count(*) FROM events WHERE event_type = 'user.created'")
    assert created == 1


async def test_an_existing_user_is_linked_by_verified_email(api, oidc_provider, pool) -> None:
    made = await create_user(pool, email="Grace@Example.test", org_name="G", now=datetime.now(UTC))
    r = await login(api, oidc_provider, "grace@example.test")
    assert r.status_code == 200, r.text
    session = bearer(r.json()["token"])
    me = await api.get("/api/v1/me", headers=session)
    assert me.json()["id"] == str(made.user_id)
    orgs = await api.get("/api/v1/orgs", headers=session)
    assert [o["id"] for o in orgs.json()["items"]] == [str(made.org_id)]


async def test_a_user_already_linked_to_another_account_of_the_issuer_is_refused(
    api, oidc_provider, pool
) -> None:
    await create_user(pool, email="sam@example.test", org_name="S", now=datetime.now(UTC))
    assert (await login(api, oidc_provider, "sam@example.test")).status_code == 200
    # Another account at the provider (sub "sam") with the same verified address.
    r = await login(api, oidc_provider, "sam")
    problem(r, 409, "oidc_identity_conflict")


async def test_a_first_sign_in_without_a_verified_email_is_refused(
    api, oidc_provider, pool
) -> None:
    r = await login(api, oidc_provider, "unverified-joe")
    problem(r, 403, "oidc_email_unverified")
    assert await pool.fetchval("SELECT count(*) FROM user_emails") == 0
    assert await pool.fetchval("SELECT count(*) FROM user_sessions") == 0


async def test_a_tampered_state_is_refused_and_the_real_one_still_works(api, oidc_provider) -> None:
    url, state = await start(api)
    back = await sign_in(oidc_provider, url, "ada")
    flipped = ("A" if state[0] != "A" else "B") + state[1:]
    query = parse_qs(urlsplit(back).query)
    for bad in (flipped, "", "x" * 43, "short", state + "x"):
        forged = urlencode({**{k: v[0] for k, v in query.items()}, "state": bad})
        problem(await api.get(f"/auth/callback?{forged}"), 400, "oidc_state_invalid")
    problem(await api.get("/auth/callback"), 400, "oidc_state_invalid")
    assert (await callback(api, back)).status_code == 200


async def test_a_replayed_callback_is_refused(api, oidc_provider) -> None:
    url, _ = await start(api)
    back = await sign_in(oidc_provider, url, "ada")
    assert (await callback(api, back)).status_code == 200
    problem(await callback(api, back), 400, "oidc_state_invalid")


async def test_an_expired_login_is_refused(api, oidc_provider, database) -> None:
    url, state = await start(api)
    back = await sign_in(oidc_provider, url, "ada")
    conn = await owner(database)
    try:
        await conn.execute(
            "UPDATE oidc_pending_logins SET expires_at = now() - interval '1 second' "
            "WHERE state_hash = $1",
            state_hash(state),
        )
    finally:
        await conn.close()
    problem(await callback(api, back), 400, "oidc_state_expired")


async def test_a_provider_error_is_401_and_spends_the_state(api, oidc_provider) -> None:
    url, state = await start(api)
    back = await sign_in(oidc_provider, url, "ada")
    refused = await api.get(
        "/auth/callback",
        params={"state": state, "error": "access_denied", "error_description": "<b>no</b>"},
    )
    problem(refused, 401, "oidc_provider_error")
    assert "access_denied" in refused.json()["detail"]
    assert "<b>" not in refused.text
    problem(await callback(api, back), 400, "oidc_state_invalid")


async def test_a_callback_without_a_code_or_from_another_issuer_is_400(api, oidc_provider) -> None:
    _, state = await start(api)
    problem(await api.get("/auth/callback", params={"state": state}), 400, "oidc_callback_invalid")
    url, state = await start(api)
    back = await sign_in(oidc_provider, url, "ada")
    query = {k: v[0] for k, v in parse_qs(urlsplit(back).query).items()}
    query["iss"] = "https://impostor.example"
    problem(await api.get("/auth/callback", params=query), 400, "oidc_issuer_mismatch")


async def test_a_code_is_bound_to_its_own_login(api, oidc_provider) -> None:
    """PKCE: a code redeemed with another login's verifier is refused by the provider."""
    url_a, _ = await start(api)
    _, state_b = await start(api)
    back_a = await sign_in(oidc_provider, url_a, "ada")
    query = {k: v[0] for k, v in parse_qs(urlsplit(back_a).query).items()}
    query["state"] = state_b
    problem(await api.get("/auth/callback", params=query), 401, "oidc_code_refused")


async def test_an_id_token_with_another_logins_nonce_is_refused(
    api, oidc_provider, database
) -> None:
    url_a, state_a = await start(api)
    _, state_b = await start(api)
    back_a = await sign_in(oidc_provider, url_a, "ada")
    conn = await owner(database)
    try:
        sealed = {
            bytes(r["state_hash"]): bytes(r["sealed"])
            for r in await conn.fetch("SELECT state_hash, sealed FROM oidc_pending_logins")
        }
        a = unseal(state_a, sealed[state_hash(state_a)])
        b = unseal(state_b, sealed[state_hash(state_b)])
        assert a.nonce != b.nonce
        # Login A's verifier (so the code is redeemed) with login B's nonce.
        swapped = seal(state_a, PendingLogin(nonce=b.nonce, code_verifier=a.code_verifier))
        await conn.execute(
            "UPDATE oidc_pending_logins SET sealed = $2 WHERE state_hash = $1",
            state_hash(state_a),
            swapped,
        )
    finally:
        await conn.close()
    r = await callback(api, back_a)
    problem(r, 401, "oidc_invalid_id_token")
    assert "nonce" in r.json()["detail"]


async def test_password_login_is_refused_when_an_issuer_is_configured(api, pool) -> None:
    await create_user(
        pool, email="ada@example.com", org_name="O", now=datetime.now(UTC), password="pw123456"
    )
    r = await api.post("/auth/login", json={"email": "ada@example.com", "password": "pw123456"})
    problem(r, 403, "password_login_disabled")


async def test_without_an_issuer_the_oidc_routes_are_404(client) -> None:
    problem(await client.get("/auth/login"), 404, "oidc_not_configured")
    problem(await client.get("/auth/callback?state=x&code=y"), 404, "oidc_not_configured")


async def test_an_unreachable_provider_is_503(pool) -> None:
    from ops.stack import free_ports

    dead = f"http://127.0.0.1:{free_ports(1)[0]}"
    oidc = OidcClient(
        OidcSettings(issuer=dead, client_id="c", redirect_url=f"{API_BASE}/auth/callback")
    )
    app = create_app(pool, PgFeed(pool), oidc=oidc)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=API_BASE) as c:
        problem(await c.get("/auth/login"), 503, "oidc_provider_unavailable")
    await oidc.close()


async def test_no_login_secret_is_stored_in_the_clear(api, oidc_provider, database) -> None:
    """A finished login and one still pending, then every table and event is scanned
    for the state, nonce, PKCE verifier, authorization code and session token."""
    url, state = await start(api)
    back = await sign_in(oidc_provider, url, "ada")
    pending_url, pending_state = await start(api)
    conn = await owner(database)
    try:
        sealed = {
            bytes(r["state_hash"]): bytes(r["sealed"])
            for r in await conn.fetch("SELECT state_hash, sealed FROM oidc_pending_logins")
        }
        verifiers = [unseal(s, sealed[state_hash(s)]).code_verifier for s in (state, pending_state)]
        r = await callback(api, back)
        assert r.status_code == 200, r.text
        token = r.json()["token"]
        values = [
            state,
            pending_state,
            *verifiers,
            token,
            parse_qs(urlsplit(back).query)["code"][0],
            *(parse_qs(urlsplit(u).query)["nonce"][0] for u in (url, pending_url)),
        ]
        tables = [
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ]
        assert {"events", "oidc_pending_logins", "user_oidc_identities"} <= set(tables)
        for table in tables:
            dump = await conn.fetchval(
                f"SELECT coalesce(string_agg(t::text, ' '), '') FROM {table} t"
            )
            for value in values:
                assert value not in dump, f"{table} holds a login secret in the clear"
            if table != "user_sessions":
                assert hash_token(token).hex() not in dump, f"{table} holds the session hash"
    finally:
        await conn.close()
