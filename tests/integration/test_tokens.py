"""Personal access tokens over HTTP: issue (shown once), list, revoke; each change an
event on the user's stream, written with the credential row; revoked and expired
tokens answer 401 at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from commands.credentials import hash_token

pytestmark = pytest.mark.asyncio


async def _user_events(pool, user_id: str) -> list[tuple[str, dict]]:
    rows = await pool.fetch(
        "SELECT event_type, payload FROM events WHERE stream_id = $1 ORDER BY stream_version",
        f"user-{user_id}",
    )
    import json

    return [(r["event_type"], json.loads(r["payload"])) for r in rows]


async def test_issue_list_use_and_revoke_a_token(client, bootstrap, pool) -> None:
    auth, _org = await bootstrap.user("ada@example.com", "Org")
    expires = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    r = await client.post(
        "/api/v1/tokens", json={"name": "ci", "expires_at": expires}, headers=auth
    )
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["token"].startswith("byp_") and made["prefix"] == made["token"][:10]
    assert made["name"] == "ci" and made["expires_at"] is not None and made["created_at"]
    assert r.headers["X-ByteOr-Position"]
    new = {"Authorization": f"Bearer {made['token']}"}

    # The new token works, and the listing shows it without the secret.
    listed = await client.get("/api/v1/tokens", headers=new)
    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    assert {i["name"] for i in items} == {"bootstrap", "ci"}
    assert all("token" not in i and "token_hash" not in i for i in items)
    assert made["token"] not in listed.text
    ci = next(i for i in items if i["id"] == made["id"])
    assert ci["last_used_at"] is not None  # touched by the listing request itself

    me = await client.get("/api/v1/orgs", headers=new)
    user_id = await pool.fetchval("SELECT user_id FROM user_emails")
    assert me.status_code == 200

    r = await client.delete(f"/api/v1/tokens/{made['id']}", headers=auth)
    assert r.status_code == 204, r.text
    assert (await client.get("/api/v1/tokens", headers=new)).status_code == 401
    again = await client.delete(f"/api/v1/tokens/{made['id']}", headers=auth)
    assert again.status_code == 404
    listed = await client.get("/api/v1/tokens", headers=auth)
    assert [i["name"] for i in listed.json()["items"]] == ["bootstrap"]

    events = await _user_events(pool, str(user_id))
    assert [t for t, _ in events] == [
        "user.created",
        "user.token_issued",
        "user.token_issued",
        "user.token_revoked",
    ]
    assert events[2][1]["token_id"] == made["id"] and events[2][1]["prefix"] == made["prefix"]
    assert events[3][1]["token_id"] == made["id"]
    row = await pool.fetchrow(
        "SELECT token_hash, revoked_at FROM personal_access_tokens WHERE id = $1::uuid",
        made["id"],
    )
    assert bytes(row["token_hash"]) == hash_token(made["token"]) and row["revoked_at"]


async def test_one_user_cannot_see_or_revoke_anothers_token(client, bootstrap) -> None:
    ada, _ = await bootstrap.user("ada@example.com", "A")
    bob, _ = await bootstrap.user("bob@example.com", "B")
    made = (await client.post("/api/v1/tokens", json={"name": "x"}, headers=ada)).json()
    r = await client.delete(f"/api/v1/tokens/{made['id']}", headers=bob)
    assert r.status_code == 404
    assert r.json()["code"] == "token_not_found"
    bobs = (await client.get("/api/v1/tokens", headers=bob)).json()["items"]
    assert made["id"] not in [i["id"] for i in bobs]
    ok = await client.get("/api/v1/tokens", headers={"Authorization": f"Bearer {made['token']}"})
    assert ok.status_code == 200


async def test_an_expired_token_answers_401(client, bootstrap, database) -> None:
    auth, _ = await bootstrap.user("ada@example.com", "Org")
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    made = (
        await client.post(
            "/api/v1/tokens", json={"name": "short", "expires_at": soon}, headers=auth
        )
    ).json()
    bearer = {"Authorization": f"Bearer {made['token']}"}
    assert (await client.get("/api/v1/tokens", headers=bearer)).status_code == 200
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(
            "UPDATE personal_access_tokens SET expires_at = now() - interval '1 second' "
            "WHERE id = $1::uuid",
            made["id"],
        )
    finally:
        await conn.close()
    r = await client.get("/api/v1/tokens", headers=bearer)
    assert r.status_code == 401
    assert r.json()["code"] == "unauthenticated"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"name": "x", "expires_at": "2001-01-01T00:00:00Z"}, "invalid_expiry"),
        ({"name": "x", "expires_at": "2999-01-01T00:00:00"}, None),
        ({"name": ""}, None),
        ({"name": "x", "scopes": ["Nope"]}, None),
        ({"name": "x", "token": "byp_x"}, None),
    ],
)
async def test_bad_token_requests_are_422(client, bootstrap, body, code) -> None:
    auth, _ = await bootstrap.user("ada@example.com", "Org")
    r = await client.post("/api/v1/tokens", json=body, headers=auth)
    assert r.status_code == 422, r.text
    if code:
        assert r.json()["code"] == code


async def test_idempotency_keys_are_refused_on_secret_issuing_routes(client, bootstrap) -> None:
    auth, _ = await bootstrap.user("ada@example.com", "Org")
    r = await client.post(
        "/api/v1/tokens", json={"name": "x"}, headers={**auth, "Idempotency-Key": "k1"}
    )
    assert r.status_code == 422
    assert r.json()["code"] == "idempotency_key_unsupported"


async def test_a_scoped_token_is_narrowed_and_cannot_escalate(client, bootstrap) -> None:
    auth, org = await bootstrap.user("ada@example.com", "Org")
    created = await client.post(
        "/api/v1/tokens",
        json={"name": "ro", "scopes": ["ViewOrg", "ViewProject"]},
        headers=auth,
    )
    made = created.json()
    assert made["scopes"] == ["ViewOrg", "ViewProject"]
    ro = {"Authorization": f"Bearer {made['token']}"}
    pos = created.headers["X-ByteOr-Position"]
    assert (await client.get(f"/api/v1/orgs/{org}?min_position={pos}", headers=ro)).is_success
    r = await client.post(f"/api/v1/orgs/{org}/projects", json={"name": "p"}, headers=ro)
    assert r.status_code == 403, r.text
    r = await client.post("/api/v1/tokens", json={"name": "wide"}, headers=ro)
    assert r.status_code == 403
    assert r.json()["code"] == "scope_escalation"
    r = await client.post("/api/v1/tokens", json={"name": "n", "scopes": ["ViewOrg"]}, headers=ro)
    assert r.status_code == 201


@pytest.mark.parametrize(
    "token",
    [
        "byp_" + "A" * 43,  # well formed, unknown
        "byp_short",
        "bys_" + "A" * 43,
        "byo_" + "A" * 43,
        "bye_" + "A" * 43,
        "xyz_" + "A" * 43,
        "plain",
    ],
)
async def test_unknown_malformed_and_foreign_tokens_answer_401(client, token) -> None:
    r = await client.get("/api/v1/tokens", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")


async def test_a_pat_presented_with_another_familys_prefix_is_refused(client, bootstrap) -> None:
    auth, _ = await bootstrap.user("ada@example.com", "Org")
    token = auth["Authorization"].removeprefix("Bearer ")
    for prefix in ("bys_", "byo_"):
        swapped = prefix + token[4:]
        r = await client.get("/api/v1/tokens", headers={"Authorization": f"Bearer {swapped}"})
        assert r.status_code == 401


async def test_auth_attempts_are_counted_by_family_and_reason(client, bootstrap) -> None:
    from prometheus_client import REGISTRY

    def value(family: str, outcome: str, reason: str) -> float:
        got = REGISTRY.get_sample_value(
            "byteor_auth_attempts_total",
            {"family": family, "outcome": outcome, "reason": reason},
        )
        return got or 0.0

    auth, _ = await bootstrap.user("ada@example.com", "Org")
    ok0 = value("personal_access_token", "success", "ok")
    nf0 = value("personal_access_token", "failure", "not_found")
    up0 = value("unknown", "failure", "unknown_prefix")
    await client.get("/api/v1/tokens", headers=auth)
    await client.get("/api/v1/tokens", headers={"Authorization": "Bearer byp_" + "B" * 43})
    await client.get("/api/v1/tokens", headers={"Authorization": "Bearer nope_x"})
    assert value("personal_access_token", "success", "ok") == ok0 + 1
    assert value("personal_access_token", "failure", "not_found") == nf0 + 1
    assert value("unknown", "failure", "unknown_prefix") == up0 + 1
