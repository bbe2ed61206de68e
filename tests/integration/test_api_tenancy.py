"""The first CQRS slice over HTTP: commands append events, the projection
builds read tables, queries read them (read-your-writes with min_position)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.asyncio


async def count_events(pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM events"))


async def test_create_and_read_back_org_project_environment(client, bootstrap) -> None:
    auth, _ = await bootstrap.user("ada@example.com", "Bootstrap Org")
    r = await client.post(
        "/api/v1/orgs", json={"name": "Acme", "settings": {"tier": "pro"}}, headers=auth
    )
    assert r.status_code == 201, r.text
    org = r.json()
    pos = r.headers["X-ByteOr-Position"]
    assert r.headers["ETag"] == '"2"'
    g = await client.get(f"/api/v1/orgs/{org['id']}?min_position={pos}", headers=auth)
    assert g.status_code == 200, g.text
    assert g.json() == org

    r = await client.post(
        f"/api/v1/orgs/{org['id']}/projects", json={"name": "Pipelines"}, headers=auth
    )
    assert r.status_code == 201, r.text
    project = r.json()
    r = await client.post(
        f"{project['links']['self']}/environments",
        json={"name": "prod", "posture": "prod"},
        headers=auth,
    )
    assert r.status_code == 201, r.text
    env = r.json()
    assert env["settings"] == {"max_inflight_deployments": 3, "artifact_retention_days": 90}
    pos = r.headers["X-ByteOr-Position"]
    listed = await client.get(
        f"{project['links']['self']}/environments?min_position={pos}", headers=auth
    )
    assert listed.status_code == 200
    assert listed.json() == {"items": [env], "next_cursor": None}
    got = await client.get(f"{env['links']['self']}", headers=auth)
    assert got.json() == env


async def test_update_with_stale_if_match_is_refused(client, bootstrap) -> None:
    auth, org_id = await bootstrap.user("ada@example.com", "Org")
    r = await client.put(
        f"/api/v1/orgs/{org_id}", json={"name": "Renamed"}, headers={**auth, "If-Match": '"2"'}
    )
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "Renamed"
    r = await client.put(
        f"/api/v1/orgs/{org_id}", json={"name": "Again"}, headers={**auth, "If-Match": '"2"'}
    )
    assert r.status_code == 412
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "revision_mismatch"


async def test_other_tenants_resources_answer_404(client, bootstrap) -> None:
    _ada, ada_org = await bootstrap.user("ada@example.com", "Ada Org")
    bob, _ = await bootstrap.user("bob@example.com", "Bob Org")
    for method, path in [
        ("GET", f"/api/v1/orgs/{ada_org}"),
        ("PUT", f"/api/v1/orgs/{ada_org}"),
        ("POST", f"/api/v1/orgs/{ada_org}/projects"),
        ("DELETE", f"/api/v1/orgs/{ada_org}"),
    ]:
        r = await client.request(method, path, json={"name": "x"}, headers=bob)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["code"] == "organization_not_found"
    listed = await client.get("/api/v1/orgs", headers=bob)
    assert ada_org not in [o["id"] for o in listed.json()["items"]]


async def test_missing_or_bad_token_is_401_problem(client) -> None:
    for headers in ({}, {"Authorization": "Bearer byp_nope"}, {"Authorization": "Basic x"}):
        r = await client.get("/api/v1/orgs", headers=headers)
        assert r.status_code == 401
        assert r.json()["code"] == "unauthenticated"


async def test_bad_input_is_422_problem_and_appends_nothing(client, bootstrap, pool) -> None:
    auth, org_id = await bootstrap.user("ada@example.com", "Org")
    before = await count_events(pool)
    cases = [
        ("/api/v1/orgs", b'{"name": ""}', "/name"),
        ("/api/v1/orgs", b'{"name": "ok", "extra": 1}', "/extra"),
        ("/api/v1/orgs", b"not json", "/"),
        ("/api/v1/orgs", b"[]", "/"),
        (f"/api/v1/orgs/{org_id}/projects", b'{"name": 5}', "/name"),
    ]
    for path, body, error_path in cases:
        r = await client.post(
            path, content=body, headers={**auth, "Content-Type": "application/json"}
        )
        assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
        problem = r.json()
        assert r.headers["content-type"].startswith("application/problem+json")
        assert {"type", "title", "status", "detail", "code", "errors"} <= problem.keys()
        assert problem["errors"][0]["path"] == error_path, problem
    assert await count_events(pool) == before


async def test_idempotency_key_returns_the_first_result(client, bootstrap, pool) -> None:
    auth, _ = await bootstrap.user("ada@example.com", "Org")
    headers = {**auth, "Idempotency-Key": "create-acme-1"}
    first = await client.post("/api/v1/orgs", json={"name": "Acme"}, headers=headers)
    before = await count_events(pool)
    again = await client.post("/api/v1/orgs", json={"name": "Acme"}, headers=headers)
    assert again.status_code == first.status_code == 201
    assert again.json() == first.json()
    assert again.headers["X-ByteOr-Position"] == first.headers["X-ByteOr-Position"]
    assert await count_events(pool) == before
    other = await client.post("/api/v1/orgs", json={"name": "Other"}, headers=headers)
    assert other.status_code == 422
    assert other.json()["code"] == "idempotency_key_reused"


async def test_deleting_a_project_hides_its_environments(client, bootstrap) -> None:
    auth, org_id = await bootstrap.user("ada@example.com", "Org")
    p = (
        await client.post(f"/api/v1/orgs/{org_id}/projects", json={"name": "P"}, headers=auth)
    ).json()
    e = await client.post(
        f"{p['links']['self']}/environments", json={"name": "dev", "posture": "dev"}, headers=auth
    )
    assert e.status_code == 201
    d = await client.delete(p["links"]["self"], headers=auth)
    assert d.status_code == 204
    pos = d.headers["X-ByteOr-Position"]
    r = await client.get(f"{p['links']['self']}?min_position={pos}", headers=auth)
    assert r.status_code == 404
    r = await client.get(e.json()["links"]["self"], headers=auth)
    assert r.status_code == 404


async def test_health_ready_metrics_and_openapi_need_no_token(client) -> None:
    assert (await client.get("/healthz")).status_code == 200
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["migrations"] == "ok"
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert "byteor_projection_lag_events" in metrics.text
    schema = await client.get("/schema/openapi.json")
    assert schema.status_code == 200
    assert "/api/v1/orgs" in schema.json()["paths"]
