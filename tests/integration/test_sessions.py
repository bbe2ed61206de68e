"""Local password login: a bys_ session for the right password, one 401 for every
wrong answer (no user enumeration), logout revokes the session at once."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from commands.bootstrap import create_user
from commands.credentials import hash_token, verify_password
from ops.cli import build_parser, read_password

pytestmark = pytest.mark.asyncio

PASSWORD = "correct horse battery staple"


async def make_user(pool, email: str = "ada@example.com", password: str | None = PASSWORD):
    return await create_user(
        pool, email=email, org_name="Org", now=datetime.now(UTC), password=password
    )


async def login(client, email: str, password: str):
    return await client.post("/auth/login", json={"email": email, "password": password})


async def test_login_use_and_logout(client, pool) -> None:
    made = await make_user(pool)
    r = await login(client, "Ada@Example.com", PASSWORD)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token"].startswith("bys_")
    expires = datetime.fromisoformat(body["expires_at"])
    assert timedelta(hours=11, minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=12)
    session = {"Authorization": f"Bearer {body['token']}"}

    orgs = await client.get("/api/v1/orgs", headers=session)
    assert orgs.status_code == 200, orgs.text
    r = await client.post("/api/v1/tokens", json={"name": "from-session"}, headers=session)
    assert r.status_code == 201  # a session is a user credential

    stored = await pool.fetchrow(
        "SELECT user_id, token_hash, last_used_at FROM user_sessions WHERE id = $1::uuid",
        body["id"],
    )
    assert stored["user_id"] == made.user_id
    assert bytes(stored["token_hash"]) == hash_token(body["token"])
    assert stored["last_used_at"] is not None

    r = await client.post("/auth/logout", headers=session)
    assert r.status_code == 204, r.text
    assert (await client.get("/api/v1/orgs", headers=session)).status_code == 401
    assert (await client.post("/auth/logout", headers=session)).status_code == 401

    rows = await pool.fetch(
        "SELECT event_type, payload, actor_id FROM events WHERE stream_id = $1 "
        "ORDER BY stream_version",
        f"user-{made.user_id}",
    )
    types = [r["event_type"] for r in rows]
    assert types[-3:] == ["user.session_started", "user.token_issued", "user.session_ended"]
    started = json.loads(rows[-3]["payload"])
    assert started["session_id"] == body["id"] and started["prefix"] == body["token"][:10]
    assert rows[-3]["actor_id"] == str(made.user_id)


async def test_failed_logins_all_look_alike(client, pool) -> None:
    await make_user(pool)
    await make_user(pool, email="nopass@example.com", password=None)
    answers = [
        await login(client, "ada@example.com", "wrong password!"),
        await login(client, "nobody@example.com", PASSWORD),
        await login(client, "nopass@example.com", PASSWORD),
    ]
    for r in answers:
        assert r.status_code == 401, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
    bodies = [{k: v for k, v in r.json().items() if k != "instance"} for r in answers]
    assert bodies[0] == bodies[1] == bodies[2]
    assert bodies[0]["code"] == "invalid_credentials"


async def test_a_pat_cannot_log_out_and_session_prefixes_are_not_pats(client, bootstrap, pool):
    auth, _ = await bootstrap.user("bob@example.com", "B")
    r = await client.post("/auth/logout", headers=auth)
    assert r.status_code == 403
    assert r.json()["code"] == "session_required"
    await make_user(pool)
    token = (await login(client, "ada@example.com", PASSWORD)).json()["token"]
    for prefix in ("byp_", "byo_"):
        swapped = {"Authorization": f"Bearer {prefix}{token[4:]}"}
        assert (await client.get("/api/v1/orgs", headers=swapped)).status_code == 401


async def test_an_expired_session_answers_401(client, pool, database) -> None:
    await make_user(pool)
    body = (await login(client, "ada@example.com", PASSWORD)).json()
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(
            "UPDATE user_sessions SET expires_at = now() - interval '1 second' WHERE id = $1::uuid",
            body["id"],
        )
    finally:
        await conn.close()
    r = await client.get("/api/v1/orgs", headers={"Authorization": f"Bearer {body['token']}"})
    assert r.status_code == 401


@pytest.mark.parametrize(
    "body", [{}, {"email": "a@example.com"}, {"email": "a@example.com", "password": ""}, []]
)
async def test_malformed_logins_are_422(client, body) -> None:
    r = await client.post("/auth/login", json=body)
    assert r.status_code == 422, r.text


async def test_create_user_stores_only_an_scrypt_hash_and_records_the_event(pool) -> None:
    made = await make_user(pool)
    encoded = await pool.fetchval(
        "SELECT password_hash FROM user_passwords WHERE user_id = $1", made.user_id
    )
    assert encoded.startswith("scrypt$") and PASSWORD not in encoded
    assert verify_password(PASSWORD, encoded)
    types = [
        r["event_type"]
        for r in await pool.fetch(
            "SELECT event_type FROM events WHERE stream_id = $1 ORDER BY stream_version",
            f"user-{made.user_id}",
        )
    ]
    assert types == ["user.created", "user.token_issued", "user.password_set"]


async def test_the_cli_reads_the_password_from_stdin() -> None:
    import io

    args = build_parser().parse_args(
        ["admin", "create-user", "--email", "a@example.com", "--org", "O", "--password-stdin"]
    )
    assert args.password_stdin is True
    assert read_password(io.StringIO("s3cret pass\n")) == "s3cret pass"
    assert read_password(io.StringIO("s3cret pass\r\nignored\n")) == "s3cret pass"
