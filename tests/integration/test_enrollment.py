"""Enrollment tokens (bye_) and agents with runtime keys (bya_), against real PostgreSQL.

A token is issued by a ManageEnvironment holder, shown once, and enrolls
exactly one agent: used, expired and revoked tokens answer 401 and create
nothing, and so do all but one of many concurrent enrollments with one token.
The agent's runtime key acts for that agent only, is refused on every route for
people, rotates (the old key dies at once) and dies with the agent.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from commands.bootstrap import create_user
from commands.credentials import hash_token
from commands.pgstore import PgEventStore
from commands.ratelimit import RateLimits
from domain import organization as org_mod
from domain.codec import default_codec
from domain.envelope import SYSTEM, Metadata, StreamAppend
from ops.app import create_app
from projections.feed import PgFeed


class Clock:
    """The application's clock, moved forward by the tests (expiry)."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture
def clock() -> Clock:
    return Clock()


def app_client(pool: asyncpg.Pool, clock: Clock, limits: RateLimits) -> httpx.AsyncClient:
    app = create_app(pool, PgFeed(pool), clock=clock, rate_limits=limits)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@pytest.fixture
async def client(pool: asyncpg.Pool, clock: Clock) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(pool, clock, RateLimits(default=10_000, auth=10_000)) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Env:
    """An organization with one project and environment, and its org_admin's token."""

    def __init__(self, client: httpx.AsyncClient, admin: str, org: str) -> None:
        self.client = client
        self.admin = bearer(admin)
        self.org = org
        self.base = ""

    async def setup(self) -> Env:
        r = await self.client.post(
            f"/api/v1/orgs/{self.org}/projects", json={"name": "P"}, headers=self.admin
        )
        assert r.status_code == 201, r.text
        self.project = r.json()["id"]
        r = await self.client.post(
            f"/api/v1/orgs/{self.org}/projects/{self.project}/environments",
            json={"name": f"env {uuid.uuid4().hex[:6]}", "posture": "prod"},
            headers=self.admin,
        )
        assert r.status_code == 201, r.text
        self.env = r.json()["id"]
        self.base = f"/api/v1/orgs/{self.org}/projects/{self.project}/environments/{self.env}"
        return self

    async def token(self, body: dict | None = None, auth: dict[str, str] | None = None) -> dict:
        r = await self.client.post(
            f"{self.base}/enrollment-tokens", json=body or {}, headers=auth or self.admin
        )
        assert r.status_code == 201, r.text
        return r.json()

    async def enroll(self, token: str, body: dict | None = None) -> httpx.Response:
        return await self.client.post(f"{self.base}/agents", json=body or {}, headers=bearer(token))

    async def agent(self, body: dict | None = None) -> dict:
        r = await self.enroll((await self.token())["token"], body)
        assert r.status_code == 201, r.text
        return r.json()

    async def tokens(self) -> dict[str, dict]:
        r = await self.client.get(f"{self.base}/enrollment-tokens", headers=self.admin)
        assert r.status_code == 200, r.text
        return {t["id"]: t for t in r.json()["items"]}

    async def agents(self) -> list[dict]:
        r = await self.client.get(f"{self.base}/agents", headers=self.admin)
        assert r.status_code == 200, r.text
        return r.json()["items"]


async def make_env(client: httpx.AsyncClient, pool: asyncpg.Pool, email: str) -> Env:
    made = await create_user(pool, email=email, org_name=f"{email} org", now=datetime.now(UTC))
    return await Env(client, made.token, str(made.org_id)).setup()


@pytest.fixture
async def env(client: httpx.AsyncClient, pool: asyncpg.Pool) -> Env:
    return await make_env(client, pool, "ada@example.com")


async def add_member(pool: asyncpg.Pool, org: str, user_id: uuid.UUID, role: str) -> None:
    """Append organization.member_added (there is no members route yet)."""
    store, codec = PgEventStore(pool), default_codec()
    stream = org_mod.stream_id(uuid.UUID(org))
    records = await store.read_stream(stream)
    state = org_mod.fold(codec.decode_recorded(r) for r in records)
    events = org_mod.add_member(state, user_id, role)  # type: ignore[arg-type]
    append = StreamAppend(
        stream_id=stream,
        stream_type=org_mod.STREAM_TYPE,
        expected_version=records[-1].stream_version,
        events=tuple(codec.encode(e) for e in events),
    )
    meta = Metadata(actor=SYSTEM, tenant_id=uuid.UUID(org), correlation_id=uuid.uuid4())
    await store.append([append], meta)


async def counts(pool: asyncpg.Pool) -> tuple[int, int, int]:
    return (
        await pool.fetchval("SELECT count(*) FROM events"),
        await pool.fetchval("SELECT count(*) FROM agents"),
        await pool.fetchval("SELECT count(*) FROM agent_keys"),
    )


async def event_types(pool: asyncpg.Pool, stream_id: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT event_type FROM events WHERE stream_id = $1 ORDER BY stream_version", stream_id
    )
    return [r["event_type"] for r in rows]


async def test_a_token_enrolls_one_agent_whose_key_is_shown_once(env: Env, pool) -> None:
    issued = await env.token({"name": "rack 4", "labels": {"zone": "eu-1"}})
    assert issued["token"].startswith("bye_") and len(issued["token"]) == 47
    assert issued["prefix"] == issued["token"][:10]
    expires = datetime.fromisoformat(issued["expires_at"])
    created = datetime.fromisoformat(issued["created_at"])
    assert expires - created == timedelta(hours=1)
    listed = (await env.tokens())[issued["id"]]
    assert listed["state"] == "active" and "token" not in listed

    r = await env.enroll(
        issued["token"],
        {
            "hostname": "edge-1.example.com",
            "labels": {"zone": "mine", "rack": "4"},
            "runtime_version": "1.4.2",
            "capabilities": ["replay", "artifact_upload", "replay"],
        },
    )
    assert r.status_code == 201, r.text
    enrolled = r.json()
    assert enrolled["api_key"].startswith("bya_") and len(enrolled["api_key"]) == 47
    assert enrolled["name"] == "edge-1.example.com"
    # The operator's labels on the token win over what the machine reports.
    assert enrolled["labels"] == {"zone": "eu-1", "rack": "4"}
    assert int(r.headers["X-ByteOr-Position"]) > 0

    [agent] = await env.agents()
    assert agent["id"] == enrolled["agent_id"] and agent["status"] == "offline"
    assert agent["capabilities"] == ["artifact_upload", "replay"]
    assert agent["key_prefix"] == enrolled["api_key"][:10] and "api_key" not in agent
    one = await env.client.get(f"{env.base}/agents/{agent['id']}", headers=env.admin)
    assert one.status_code == 200 and one.headers["ETag"] == '"1"'
    used = (await env.tokens())[issued["id"]]
    assert used["state"] == "used" and used["used_by_agent_id"] == enrolled["agent_id"]
    assert used["last_used_at"] is not None

    assert await event_types(pool, f"enrollment_token-{issued['id']}") == [
        "enrollment_token.issued",
        "enrollment_token.used",
    ]
    assert await event_types(pool, f"agent-{agent['id']}") == ["agent.enrolled"]
    actor = await pool.fetchrow(
        "SELECT actor_kind, actor_id FROM events WHERE event_type = 'agent.enrolled'"
    )
    assert (actor["actor_kind"], actor["actor_id"]) == ("token", issued["id"])

    # The key authenticates as this agent (its own rotation route) and records last use.
    r = await env.client.post(
        f"{env.base}/agents/{agent['id']}/keys/rotate", headers=bearer(enrolled["api_key"])
    )
    assert r.status_code == 200, r.text
    last_used = await pool.fetchval(
        "SELECT last_used_at FROM agent_keys WHERE key_hash = $1", hash_token(enrolled["api_key"])
    )
    assert last_used is not None


async def test_used_expired_or_revoked_tokens_answer_401_and_create_nothing(
    env: Env, pool, clock: Clock
) -> None:
    used = await env.token()
    assert (await env.enroll(used["token"])).status_code == 201
    revoked = await env.token()
    r = await env.client.delete(f"{env.base}/enrollment-tokens/{revoked['id']}", headers=env.admin)
    assert r.status_code == 204, r.text
    expiring = await env.token({"expires_in_s": 60})
    states = await env.tokens()
    assert [states[t["id"]]["state"] for t in (used, revoked, expiring)] == [
        "used",
        "revoked",
        "active",
    ]

    before = await counts(pool)
    for token in (used, revoked):
        r = await env.enroll(token["token"], {"name": "intruder"})
        assert r.status_code == 401, r.text
        assert r.json()["code"] == "unauthenticated"
    clock.offset = timedelta(seconds=61)
    assert (await env.tokens())[expiring["id"]]["state"] == "expired"
    r = await env.enroll(expiring["token"], {"name": "late"})
    assert r.status_code == 401, r.text
    assert await counts(pool) == before

    # A revoked token stays revoked; a used one cannot be revoked (its agent can).
    again = await env.client.delete(
        f"{env.base}/enrollment-tokens/{revoked['id']}", headers=env.admin
    )
    assert again.status_code == 204
    r = await env.client.delete(f"{env.base}/enrollment-tokens/{used['id']}", headers=env.admin)
    assert r.status_code == 409 and r.json()["code"] == "enrollment_token_used"
    assert await counts(pool) == before


async def test_concurrent_enrollments_with_one_token_create_exactly_one_agent(
    env: Env, pool
) -> None:
    token = (await env.token())["token"]
    before = await counts(pool)
    responses = await asyncio.gather(*(env.enroll(token, {"name": f"racer {i}"}) for i in range(8)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [401] * 7, [r.text for r in responses]
    events, agents, keys = await counts(pool)
    # One enrollment_token.used and one agent.enrolled, one agent, one key.
    assert (events - before[0], agents - before[1], keys - before[2]) == (2, 1, 1)
    assert len(await env.agents()) == 1


async def test_only_an_enrollment_token_of_this_environment_enrolls(env: Env, client, pool) -> None:
    agent = await env.agent()
    other = await make_env(client, pool, "bob@example.com")
    foreign_token = (await other.token())["token"]
    sibling = await Env(client, env.admin["Authorization"][7:], env.org).setup()
    sibling_token = (await sibling.token())["token"]
    before = await counts(pool)
    for auth, status in [
        (env.admin, 403),  # a personal access token: wrong family
        (bearer(agent["api_key"]), 403),
        (bearer(foreign_token), 401),  # another organization's environment
        (bearer(sibling_token), 401),  # another environment of the same project
        ({}, 401),
        (bearer("bye_" + "x" * 43), 401),
    ]:
        r = await client.post(f"{env.base}/agents", json={}, headers=auth)
        assert r.status_code == status, (auth, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    assert await counts(pool) == before
    # Both tokens are still good where they belong.
    assert (await other.enroll(foreign_token)).status_code == 201
    assert (await sibling.enroll(sibling_token)).status_code == 201


async def test_agent_keys_and_enrollment_tokens_are_refused_on_routes_for_people(
    env: Env,
) -> None:
    agent = await env.agent()
    token = (await env.token())["token"]
    routes = [
        ("GET", "/api/v1/me"),
        ("GET", "/api/v1/orgs"),
        ("GET", f"/api/v1/orgs/{env.org}"),
        ("GET", f"{env.base}"),
        ("GET", f"{env.base}/agents"),
        ("GET", f"{env.base}/agents/{agent['agent_id']}"),
        ("DELETE", f"{env.base}/agents/{agent['agent_id']}"),
        ("POST", f"{env.base}/enrollment-tokens"),
        ("GET", f"{env.base}/enrollment-tokens"),
        ("POST", "/api/v1/tokens"),
    ]
    for credential in (agent["api_key"], token):
        for method, path in routes:
            r = await env.client.request(method, path, json={}, headers=bearer(credential))
            assert r.status_code == 403, (credential[:4], method, path, r.text)
            assert r.json()["code"] == "wrong_credential_family"
    # Neither was used up or revoked by being refused.
    assert (await env.enroll(token)).status_code == 201
    assert len(await env.agents()) == 2


async def test_rotation_by_the_agent_or_an_environment_manager_kills_the_old_key(
    env: Env, client, pool
) -> None:
    agent = await env.agent({"name": "rotor"})
    other = await env.agent({"name": "bystander"})
    rotate = f"{env.base}/agents/{agent['agent_id']}/keys/rotate"

    r = await client.post(rotate, headers=bearer(agent["api_key"]))
    assert r.status_code == 200, r.text
    second = r.json()["api_key"]
    assert second.startswith("bya_") and second != agent["api_key"]
    # No grace period: the old key is dead the moment the new one exists.
    assert (await client.post(rotate, headers=bearer(agent["api_key"]))).status_code == 401

    r = await client.post(rotate, headers=env.admin)
    assert r.status_code == 200, r.text
    third = r.json()["api_key"]
    assert (await client.post(rotate, headers=bearer(second))).status_code == 401

    # Another agent's key is not this agent's (DOMAIN.md §6: 401).
    assert (await client.post(rotate, headers=bearer(other["api_key"]))).status_code == 401
    # A viewer of the organization may not rotate.
    viewer = await create_user(
        pool, email="vic@example.com", org_name="Vic's", now=datetime.now(UTC)
    )
    await add_member(pool, env.org, viewer.user_id, "viewer")
    r = await client.post(rotate, headers=bearer(viewer.token))
    assert r.status_code == 403, r.text
    listed = await client.get(f"{env.base}/agents", headers=bearer(viewer.token))
    assert listed.status_code == 200 and len(listed.json()["items"]) == 2

    assert (await client.post(rotate, headers=bearer(third))).status_code == 200
    assert await event_types(pool, f"agent-{agent['agent_id']}") == [
        "agent.enrolled",
        "agent.key_rotated",
        "agent.key_rotated",
        "agent.key_rotated",
    ]
    live = await pool.fetchval(
        "SELECT count(*) FROM agent_keys WHERE agent_id = $1 AND revoked_at IS NULL",
        uuid.UUID(agent["agent_id"]),
    )
    assert live == 1


async def test_revoking_an_agent_revokes_its_key(env: Env, client, pool) -> None:
    agent = await env.agent({"name": "doomed"})
    path = f"{env.base}/agents/{agent['agent_id']}"
    r = await client.delete(path, headers={**env.admin, "If-Match": '"7"'})
    assert r.status_code == 412, r.text
    r = await client.delete(path, headers={**env.admin, "If-Match": '"1"'})
    assert r.status_code == 204, r.text
    assert (
        await client.post(path + "/keys/rotate", headers=bearer(agent["api_key"]))
    ).status_code == 401
    shown = (await client.get(path, headers=env.admin)).json()
    assert shown["status"] == "revoked" and shown["key_prefix"] is None
    assert shown["revoked_at"] is not None

    # Revoking again changes nothing; rotating a revoked agent finds no agent.
    before = await counts(pool)
    assert (await client.delete(path, headers=env.admin)).status_code == 204
    r = await client.post(path + "/keys/rotate", headers=env.admin)
    assert r.status_code == 404 and r.json()["code"] == "agent_not_found"
    assert await counts(pool) == before
    assert await event_types(pool, f"agent-{agent['agent_id']}") == [
        "agent.enrolled",
        "agent.revoked",
    ]
    # Its name is free again.
    assert (await env.agent({"name": "doomed"}))["name"] == "doomed"


async def test_names_are_unique_among_live_agents_of_an_environment(env: Env, pool) -> None:
    first = await env.agent({"hostname": "edge-7"})
    second = await env.agent({"hostname": "edge-7"})
    assert first["name"] == "edge-7"
    assert second["name"] == f"edge-7-{uuid.UUID(second['agent_id']).hex[:8]}"
    assert (await env.agent())["name"] == "agent"

    token = await env.token()
    before = await counts(pool)
    r = await env.enroll(token["token"], {"name": "edge-7"})
    assert r.status_code == 409 and r.json()["code"] == "agent_name_taken"
    assert r.json()["errors"][0]["path"] == "/name"
    assert await counts(pool) == before
    # A refused enrollment does not use the token up.
    assert (await env.tokens())[token["id"]]["state"] == "active"
    assert (await env.enroll(token["token"], {"name": "edge-8"})).status_code == 201


async def test_token_requests_are_checked(env: Env) -> None:
    url = f"{env.base}/enrollment-tokens"
    for body, path in [
        ({"expires_in_s": 8 * 24 * 3600}, "/expires_in_s"),
        ({"expires_in_s": 10}, "/expires_in_s"),
        ({"ttl_seconds": 0}, "/ttl_seconds"),
        ({"expires_in_s": 600, "ttl_seconds": 600}, "/"),
        ({"labels": {"Bad Key": "x"}}, "/labels"),
        ({"token": "bye_mine"}, "/token"),
    ]:
        r = await env.client.post(url, json=body, headers=env.admin)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["errors"][0]["path"].startswith(path), (body, r.json())
    ttl = await env.token({"ttl_seconds": 7 * 24 * 3600})
    span = datetime.fromisoformat(ttl["expires_at"]) - datetime.fromisoformat(ttl["created_at"])
    assert span == timedelta(days=7)
    r = await env.client.post(url, json={}, headers={**env.admin, "Idempotency-Key": "k"})
    assert r.status_code == 422 and r.json()["code"] == "idempotency_key_unsupported"

    token = (await env.token())["token"]
    r = await env.enroll(token, {"hostname": "not a host", "capabilities": ["X"]})
    assert r.status_code == 422, r.text
    assert (await env.tokens()) and (await env.enroll(token)).status_code == 201


async def test_enrollment_is_rate_limited_per_environment(pool, clock: Clock) -> None:
    async with app_client(pool, clock, RateLimits(default=10_000, auth=10_000, enrollment=3)) as c:
        env = await make_env(c, pool, "ada@example.com")
        tokens = []
        for _ in range(3):
            tokens.append((await env.token())["token"])  # the token routes count too
        r = await env.enroll(tokens[0])
        assert r.status_code == 429, r.text
        assert int(r.headers["Retry-After"]) >= 1
        # Another environment has its own window.
        other = await Env(c, env.admin["Authorization"][7:], env.org).setup()
        assert (await other.agent())["agent_id"]


async def test_a_deleted_environment_takes_no_agents_and_its_agents_act_no_more(
    env: Env, client, pool
) -> None:
    agent = await env.agent()
    token = (await env.token())["token"]
    r = await client.delete(env.base, headers=env.admin)
    assert r.status_code == 204, r.text
    before = await counts(pool)
    r = await env.enroll(token)
    assert r.status_code == 404 and r.json()["code"] == "environment_not_found", r.text
    rotate = f"{env.base}/agents/{agent['agent_id']}/keys/rotate"
    r = await client.post(rotate, headers=bearer(agent["api_key"]))
    assert r.status_code == 404, r.text
    assert await counts(pool) == before
    used_at = await pool.fetchval(
        "SELECT used_at FROM enrollment_tokens WHERE token_hash = $1", hash_token(token)
    )
    assert used_at is None


async def test_two_tokens_racing_for_one_name_enroll_one_agent(env: Env, pool) -> None:
    tokens = [(await env.token())["token"] for _ in range(4)]
    responses = await asyncio.gather(*(env.enroll(t, {"name": "same"}) for t in tokens))
    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409]
    assert [a["name"] for a in await env.agents()] == ["same"]
    # The losers' tokens were not used up.
    states = sorted(t["state"] for t in (await env.tokens()).values())
    assert states == ["active", "active", "active", "used"]
