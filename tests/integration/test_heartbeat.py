"""Agent heartbeats against real PostgreSQL (DOMAIN.md §6).

Only an agent's own ``bya_`` key reports for it; each report replaces the
agent's latest-state row and appends no event; the agents list and get derive
``online``/``stale``/``offline``/``revoked`` from the last report and the
application's clock (moved forward here).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import httpx
import pytest

from commands.ratelimit import RateLimits, classify
from projections.feed import PgFeed
from projections.runner import wait_for_position
from projections.tenancy import NAME as TENANCY
from tests.integration.test_enrollment import Clock, Env, app_client, bearer, make_env

DIGEST = "sha256:" + "ab" * 32
REPORT = {
    "runtime_version": "1.4.2",
    "deployment_id": "6f1c1b2e-8d4f-4b7a-9c1e-2a3b4c5d6e7f",
    "bundle_digest": DIGEST,
    "health": "degraded",
    "applied_tuning": [
        {"key": "ring_capacity", "requested": "65536", "applied": "65536", "state": "applied"},
        {"key": "rt_priority", "requested": "80", "state": "failed", "reason": "no CAP_SYS_NICE"},
    ],
    "counters": {"messages_in": 1200, "drops": 0},
    "observations": {"lag_ms": 1.5},
}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def client(pool: asyncpg.Pool, clock: Clock) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(pool, clock, RateLimits(default=10_000, auth=10_000)) as c:
        yield c


@pytest.fixture
async def env(client: httpx.AsyncClient, pool: asyncpg.Pool) -> Env:
    return await make_env(client, pool, "ada@example.com")


def path(agent_id: str) -> str:
    return f"/api/v1/agents/{agent_id}/heartbeat"


async def beat(env: Env, agent: dict, body: dict | None = None) -> httpx.Response:
    return await env.client.post(
        path(agent["agent_id"]),
        json=REPORT if body is None else body,
        headers=bearer(agent["api_key"]),
    )


async def get_agent(env: Env, agent: dict) -> dict:
    r = await env.client.get(f"{env.base}/agents/{agent['agent_id']}", headers=env.admin)
    assert r.status_code == 200, r.text
    return r.json()


async def test_a_heartbeat_replaces_the_latest_state_row_and_appends_no_event(
    env: Env, pool
) -> None:
    agent = await env.agent({"runtime_version": "1.0.0"})
    assert (await get_agent(env, agent))["status"] == "offline"
    events = await pool.fetchval("SELECT count(*) FROM events")

    r = await beat(env, agent)
    assert r.status_code == 200, r.text
    ack = r.json()
    assert ack["agent_id"] == agent["agent_id"]
    assert ack["interval_s"] == 30
    assert ack["desired_deployment"] is None
    r = await beat(env, agent, {**REPORT, "runtime_version": "1.5.0", "counters": {"drops": 3}})
    assert r.status_code == 200, r.text

    assert await pool.fetchval("SELECT count(*) FROM events") == events
    rows = await pool.fetch("SELECT * FROM agent_heartbeats")
    assert len(rows) == 1
    assert rows[0]["agent_id"] == uuid.UUID(agent["agent_id"])
    assert rows[0]["heartbeats"] == 2
    assert rows[0]["runtime_version"] == "1.5.0"

    seen = await get_agent(env, agent)
    assert seen["status"] == "online"
    assert seen["last_seen_at"] == r.json()["received_at"]
    assert seen["runtime_version"] == "1.5.0"
    reported = seen["heartbeat"]
    assert reported["deployment_id"] == REPORT["deployment_id"]
    assert reported["bundle_digest"] == DIGEST
    assert reported["health"] == "degraded"
    assert reported["counters"] == {"drops": 3}
    assert reported["applied_tuning"][1]["state"] == "failed"
    assert reported["heartbeats"] == 2
    # A heartbeat changes no revision, so the ETag an operator holds stays good.
    assert seen["revision"] == 1
    listed = {a["id"]: a for a in await env.agents()}
    assert listed[agent["agent_id"]]["status"] == "online"


async def test_status_is_derived_from_the_last_heartbeat_and_the_clock(
    env: Env, clock: Clock
) -> None:
    agent = await env.agent()
    assert (await beat(env, agent)).status_code == 200
    # The clock runs on between the report and the read: a second's margin here
    # (tests/unit/test_heartbeat.py holds the exact boundaries).
    for offset, status in [
        (timedelta(seconds=89), "online"),
        (timedelta(seconds=92), "stale"),
        (timedelta(seconds=299), "stale"),
        (timedelta(seconds=302), "offline"),
    ]:
        clock.offset = offset
        assert (await get_agent(env, agent))["status"] == status, offset
    assert (await beat(env, agent)).status_code == 200
    assert (await get_agent(env, agent))["status"] == "online"

    r = await env.client.delete(f"{env.base}/agents/{agent['agent_id']}", headers=env.admin)
    assert r.status_code == 204, r.text
    gone = await get_agent(env, agent)
    assert gone["status"] == "revoked"
    assert gone["last_seen_at"] is not None


async def test_only_the_agents_own_key_reports_for_it(env: Env, client, pool) -> None:
    agent = await env.agent()
    other = await env.agent()
    foreign = await (await make_env(client, pool, "mallory@example.com")).agent()
    revoked = await env.agent()
    r = await env.client.delete(f"{env.base}/agents/{revoked['agent_id']}", headers=env.admin)
    assert r.status_code == 204
    api_key = await env.client.post(
        f"/api/v1/orgs/{env.org}/api-keys",
        json={"name": "k", "role": "org_admin"},
        headers=env.admin,
    )
    enrollment = (await env.token())["token"]
    target = path(agent["agent_id"])

    # People and enrollment tokens: the wrong family, whatever their role.
    for credential in (env.admin["Authorization"][7:], api_key.json()["key"], enrollment):
        r = await env.client.post(target, json=REPORT, headers=bearer(credential))
        assert r.status_code == 403, (credential[:4], r.text)
        assert r.json()["code"] == "wrong_credential_family"
    # Keys that authenticate nobody here: another agent's, another tenant's, a
    # revoked one, an unknown one, none.
    for headers in (
        bearer(other["api_key"]),
        bearer(foreign["api_key"]),
        bearer(revoked["api_key"]),
        bearer("bya_" + "D" * 43),
        {},
    ):
        r = await env.client.post(target, json=REPORT, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    r = await env.client.post(
        path(revoked["agent_id"]), json=REPORT, headers=bearer(revoked["api_key"])
    )
    assert r.status_code == 401
    assert await pool.fetchval("SELECT count(*) FROM agent_heartbeats") == 0
    assert (await beat(env, agent)).status_code == 200


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({}, "/runtime_version"),
        ({**REPORT, "runtime_version": "not a version!"}, "/runtime_version"),
        ({**REPORT, "bundle_digest": "md5:abc"}, "/bundle_digest"),
        ({**REPORT, "deployment_id": "nope"}, "/deployment_id"),
        ({**REPORT, "health": "fine"}, "/health"),
        (
            {**REPORT, "applied_tuning": [{"key": "x", "requested": "1", "state": "odd"}]},
            "/applied_tuning/0/state",
        ),
        ({**REPORT, "counters": {"drops": -1}}, "/counters/*"),
        ({**REPORT, "counters": {"Bad Key": 1}}, "/counters"),
        ({**REPORT, "extra": 1}, "/extra"),
    ],
)
async def test_bad_reports_answer_422_with_the_field(env: Env, pool, body, pointer) -> None:
    agent = await env.agent()
    r = await beat(env, agent, body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["code"] == "invalid_input"
    assert problem["errors"][0]["path"] == pointer, problem
    assert await pool.fetchval("SELECT count(*) FROM agent_heartbeats") == 0


async def test_malformed_and_oversized_reports(env: Env) -> None:
    agent = await env.agent()
    headers = {**bearer(agent["api_key"]), "Content-Type": "application/json"}
    r = await env.client.post(path(agent["agent_id"]), content=b"{", headers=headers)
    assert r.status_code == 422
    assert r.json()["code"] == "malformed_json"
    big = {**REPORT, "observations": {"x": 1.0}, "pad": "x" * 70_000}
    r = await env.client.post(path(agent["agent_id"]), json=big, headers=headers)
    assert r.status_code == 413, r.text
    assert r.json()["code"] == "request_too_large"


async def test_an_agent_of_a_deleted_environment_is_not_found(
    env: Env, client, pool, projector
) -> None:
    agent = await env.agent()
    r = await client.delete(env.base, headers=env.admin)
    assert r.status_code == 204, r.text
    # The heartbeat reads the environment view, a projection: wait for the deletion.
    head = await pool.fetchval("SELECT max(position) FROM events")
    assert await wait_for_position(pool, PgFeed(pool), TENANCY, head, 10.0)
    r = await beat(env, agent)
    assert r.status_code == 404, r.text
    assert r.json()["code"] == "agent_not_found"
    assert await pool.fetchval("SELECT count(*) FROM agent_heartbeats") == 0


def test_heartbeats_fit_the_default_rate_limit_class() -> None:
    assert classify("/api/v1/agents/{agent_id:uuid}/heartbeat", {}) == "default"
    assert RateLimits().default >= 60  # one a second, per agent
