"""Bad input on every route: a 4xx problem+json, never a 5xx, and nothing appended.

Routes are read from the application itself, so a new route is covered the
day it is added.
"""

from __future__ import annotations

import re

import httpx
import pytest
from litestar.routes import HTTPRoute

from commands.ratelimit import RateLimits
from ops.app import MAX_BODY_BYTES, create_app
from projections.feed import PgFeed

BAD_BODIES = [
    b"",
    b"not json",
    b"[]",
    b"null",
    b'"string"',
    b"{",
    b'{"name": 5}',
    b'{"name": ""}',
    b'{"name": "x", "unknown_field": true}',
    b'{"name": "\\u0000"}',
    b'{"name": "' + b"x" * 5000 + b'"}',
    b'{"name": "ok", "posture": "moon"}',
    b'{"name": "ok", "settings": {"Bad Key": 1}}',
    b'{"name": "ok", "settings": {"k": {"nested": 1}}}',
    b"\xff\xfe\x00",
]
BAD_QUERIES = [
    "limit=0",
    "limit=201",
    "limit=abc",
    "cursor=%%%",
    "cursor=bm90LWEtY3Vyc29y",
    "min_position=-1",
    "min_position=x",
]


@pytest.fixture
async def client(pool, projector):
    """The app with room in its rate limits: this test sends many requests per route,
    and the credential routes (tokens, API keys) share the tight ``auth`` limit, the
    enrollment routes the ``enrollment`` one."""
    limits = RateLimits(default=100_000, auth=100_000, enrollment=100_000)
    app = create_app(pool, PgFeed(pool), rate_limits=limits)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


def http_routes(app) -> list[tuple[str, str]]:
    out = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or not route.path.startswith("/api/"):
            continue
        for method in route.methods:
            if method in ("HEAD", "OPTIONS"):
                continue
            out.append((method, route.path))
    return sorted(set(out))


ENVIRONMENT = "/api/v1/orgs/{org_id:uuid}/projects/{project_id:uuid}/environments/{env_id:uuid}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# Ids a route names that make_tree does not create (a token, an API key): any id will do.
UNKNOWN_ID = "00000000-0000-4000-8000-0000000000ff"


def fill(path: str, ids: dict[str, str]) -> str:
    return re.sub(r"\{(\w+):uuid\}", lambda m: ids.get(m.group(1), UNKNOWN_ID), path)


async def make_tree(client, auth, org_id: str) -> dict[str, str]:
    p = await client.post(f"/api/v1/orgs/{org_id}/projects", json={"name": "P"}, headers=auth)
    project_id = p.json()["id"]
    e = await client.post(
        f"/api/v1/orgs/{org_id}/projects/{project_id}/environments",
        json={"name": "dev", "posture": "dev"},
        headers=auth,
    )
    return {"org_id": org_id, "project_id": project_id, "env_id": e.json()["id"]}


def assert_problem(r, what) -> None:
    assert 400 <= r.status_code < 500, (what, r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json"), what
    body = r.json()
    assert {"type", "title", "status", "detail", "code"} <= body.keys(), (what, body)
    assert body["status"] == r.status_code


@pytest.mark.slow
async def test_every_route_rejects_bad_input_cleanly(client, bootstrap, pool) -> None:
    auth, org_id = await bootstrap.user("ada@example.com", "Org")
    ids = await make_tree(client, auth, org_id)
    app = client._transport.app  # the ASGI app under test
    routes = http_routes(app)
    assert len(routes) >= 15
    # Enrollment takes an enrollment token only (commands/families.py): present one
    # there, so that its bodies are judged and not its credential. Bad bodies leave
    # the token unused.
    env_path = fill(ENVIRONMENT, ids)
    enroll = await client.post(f"{env_path}/enrollment-tokens", json={}, headers=auth)
    by_route = {("POST", ENVIRONMENT + "/agents"): bearer(enroll.json()["token"])}
    # Heartbeats take the agent's own key only: judge their bodies with one.
    second = await client.post(f"{env_path}/enrollment-tokens", json={}, headers=auth)
    agent = await client.post(f"{env_path}/agents", json={}, headers=bearer(second.json()["token"]))
    heartbeat = ("POST", "/api/v1/agents/{agent_id:uuid}/heartbeat")
    by_route[heartbeat] = bearer(agent.json()["api_key"])
    # Only there: elsewhere a live agent would let a bad DELETE or rotation succeed.
    ids_by_route = {heartbeat: {**ids, "agent_id": agent.json()["agent_id"]}}
    # So do the agents' deployment routes; their unknown deployments answer 404.
    for method, template in http_routes(client._transport.app):
        if template.startswith("/api/v1/agents/{agent_id:uuid}/") and "{deployment_id" in template:
            by_route[(method, template)] = by_route[heartbeat]
            ids_by_route[(method, template)] = ids_by_route[heartbeat]
    before = await pool.fetchval("SELECT count(*) FROM events")
    for method, template in routes:
        path = fill(template, ids_by_route.get((method, template), ids))
        headers = {**by_route.get((method, template), auth), "Content-Type": "application/json"}
        if method in ("POST", "PUT"):
            for body in BAD_BODIES:
                r = await client.request(method, path, content=body, headers=headers)
                assert_problem(r, (method, template, body[:40]))
            big = b'{"name": "' + b"x" * MAX_BODY_BYTES + b'"}'
            r = await client.request(method, path, content=big, headers=headers)
            assert r.status_code == 413, (method, template)
            assert_problem(r, (method, template, "big"))
        if method == "GET":
            for query in BAD_QUERIES:
                r = await client.get(f"{path}?{query}", headers=auth)
                # Single-resource GETs have no paging parameters and ignore them.
                if r.status_code != 200:
                    assert_problem(r, (method, template, query))
        # Ids that do not exist, and ids that are not ids.
        if not template.endswith(":uuid}"):
            continue
        for bogus in ("00000000-0000-4000-8000-000000000000", "not-a-uuid"):
            broken = re.sub(r"/[0-9a-f-]{36}$", f"/{bogus}", path)
            r = await client.request(method, broken, content=b'{"name": "x"}', headers=headers)
            assert r.status_code == 404, (method, template, bogus, r.text)
            assert_problem(r, (method, template, bogus))
    after = await pool.fetchval("SELECT count(*) FROM events")
    assert after == before


async def test_list_routes_reject_bad_paging_parameters(client, bootstrap, pool) -> None:
    auth, org_id = await bootstrap.user("ada@example.com", "Org")
    head = await pool.fetchval("SELECT max(position) FROM events")
    assert (await client.get(f"/api/v1/orgs/{org_id}?min_position={head}", headers=auth)).is_success
    for query, path in [
        ("limit=0", "query.limit"),
        ("limit=201", "query.limit"),
        ("limit=abc", "query.limit"),
        ("cursor=bm90LWEtY3Vyc29y", "query.cursor"),
        ("min_position=-1", "query.min_position"),
    ]:
        r = await client.get(f"/api/v1/orgs/{org_id}/projects?{query}", headers=auth)
        assert r.status_code == 422, (query, r.text)
        assert r.json()["errors"][0]["path"] == path, (query, r.json())
