"""Organization API keys: issued by an org_admin (shown once), act in their own
organization under their role, never manage memberships, never reach another
organization (404), and stop working the moment they are revoked."""

from __future__ import annotations

import json

import pytest

from commands.credentials import hash_token

pytestmark = pytest.mark.asyncio


async def issue(client, auth, org: str, role: str, name: str = "automation") -> dict:
    r = await client.post(
        f"/api/v1/orgs/{org}/api-keys", json={"name": name, "role": role}, headers=auth
    )
    assert r.status_code == 201, r.text
    # Where the read model must have caught up before a query sees the org.
    return {**r.json(), "position": r.headers["X-ByteOr-Position"]}


def bearer(key: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {key['key']}"}


async def test_a_project_admin_key_creates_projects_in_its_org_only(client, bootstrap) -> None:
    admin, org = await bootstrap.user("ada@example.com", "Ada Org")
    _bob, other_org = await bootstrap.user("bob@example.com", "Bob Org")
    key = await issue(client, admin, org, "project_admin")
    assert key["key"].startswith("byo_") and key["prefix"] == key["key"][:10]
    assert key["role"] == "project_admin" and key["org_id"] == org

    r = await client.post(f"/api/v1/orgs/{org}/projects", json={"name": "P"}, headers=bearer(key))
    assert r.status_code == 201, r.text
    pos = r.headers["X-ByteOr-Position"]
    project = r.json()
    r = await client.post(
        f"/api/v1/orgs/{org}/projects/{project['id']}/environments",
        json={"name": "dev", "posture": "dev"},
        headers=bearer(key),
    )
    assert r.status_code == 201, r.text

    listed = await client.get(
        f"/api/v1/orgs/{org}/projects?min_position={pos}", headers=bearer(key)
    )
    assert listed.status_code == 200, listed.text
    assert [p["id"] for p in listed.json()["items"]] == [project["id"]]
    orgs = await client.get(f"/api/v1/orgs?min_position={pos}", headers=bearer(key))
    assert [o["id"] for o in orgs.json()["items"]] == [org]

    for method, path in [
        ("GET", f"/api/v1/orgs/{other_org}"),
        ("GET", f"/api/v1/orgs/{other_org}/projects"),
        ("POST", f"/api/v1/orgs/{other_org}/projects"),
        ("PUT", f"/api/v1/orgs/{other_org}"),
        ("POST", f"/api/v1/orgs/{other_org}/api-keys"),
    ]:
        body = {"name": "x", "role": "viewer"} if path.endswith("api-keys") else {"name": "x"}
        r = await client.request(method, path, json=body, headers=bearer(key))
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["code"] == "organization_not_found"


async def test_a_viewer_key_views_but_lacks_manage_project(client, bootstrap) -> None:
    admin, org = await bootstrap.user("ada@example.com", "Org")
    key = await issue(client, admin, org, "viewer")
    r = await client.post(f"/api/v1/orgs/{org}/projects", json={"name": "P"}, headers=bearer(key))
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "permission_denied"
    seen = f"/api/v1/orgs/{org}?min_position={key['position']}"
    assert (await client.get(seen, headers=bearer(key))).status_code == 200


async def test_keys_never_manage_memberships_or_create_orgs(client, bootstrap) -> None:
    admin, org = await bootstrap.user("ada@example.com", "Org")
    key = await issue(client, admin, org, "org_admin")
    auth = bearer(key)
    r = await client.post(
        f"/api/v1/orgs/{org}/api-keys", json={"name": "k", "role": "viewer"}, headers=auth
    )
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "permission_denied"
    assert (await client.get(f"/api/v1/orgs/{org}/api-keys", headers=auth)).status_code == 403
    r = await client.delete(f"/api/v1/orgs/{org}/api-keys/{key['id']}", headers=auth)
    assert r.status_code == 403
    r = await client.post("/api/v1/orgs", json={"name": "New"}, headers=auth)
    assert r.status_code == 403
    # Org settings are membership-level administration too (ManageOrgMemberships).
    assert (
        await client.put(f"/api/v1/orgs/{org}", json={"name": "N"}, headers=auth)
    ).status_code == 403
    # An org_admin key still manages projects.
    r = await client.post(f"/api/v1/orgs/{org}/projects", json={"name": "P"}, headers=auth)
    assert r.status_code == 201
    # Keys are not user credentials: no personal tokens.
    assert (
        await client.post("/api/v1/tokens", json={"name": "t"}, headers=auth)
    ).status_code == 403


async def test_list_and_revoke_keys_with_events_on_the_org_stream(client, bootstrap, pool) -> None:
    admin, org = await bootstrap.user("ada@example.com", "Org")
    key = await issue(client, admin, org, "operator", name="deployer")
    listed = await client.get(f"/api/v1/orgs/{org}/api-keys", headers=admin)
    assert listed.status_code == 200, listed.text
    (item,) = listed.json()["items"]
    assert item["id"] == key["id"] and item["role"] == "operator" and "key" not in item
    assert key["key"] not in listed.text

    r = await client.delete(f"/api/v1/orgs/{org}/api-keys/{key['id']}", headers=admin)
    assert r.status_code == 204, r.text
    assert (await client.get(f"/api/v1/orgs/{org}", headers=bearer(key))).status_code == 401
    r = await client.delete(f"/api/v1/orgs/{org}/api-keys/{key['id']}", headers=admin)
    assert r.status_code == 404
    assert r.json()["code"] == "api_key_not_found"
    assert (await client.get(f"/api/v1/orgs/{org}/api-keys", headers=admin)).json()["items"] == []

    rows = await pool.fetch(
        "SELECT event_type, payload FROM events WHERE stream_id = $1 ORDER BY stream_version",
        f"organization-{org}",
    )
    types = [r["event_type"] for r in rows]
    assert types[-2:] == ["organization.api_key_issued", "organization.api_key_revoked"]
    issued = json.loads(rows[-2]["payload"])
    assert issued["key_id"] == key["id"]
    assert (issued["name"], issued["role"], issued["prefix"]) == (
        "deployer",
        "operator",
        key["prefix"],
    )
    for row in rows:
        payload = (
            bytes(row["payload"]).decode()
            if isinstance(row["payload"], bytes)
            else str(row["payload"])
        )
        assert key["key"] not in payload
        assert hash_token(key["key"]).hex() not in payload


async def test_issuing_a_key_keeps_the_org_etag_consistent(client, bootstrap) -> None:
    admin, org = await bootstrap.user("ada@example.com", "Org")
    r = await client.post(
        f"/api/v1/orgs/{org}/api-keys", json={"name": "k", "role": "viewer"}, headers=admin
    )
    pos = r.headers["X-ByteOr-Position"]
    got = await client.get(f"/api/v1/orgs/{org}?min_position={pos}", headers=admin)
    r = await client.put(
        f"/api/v1/orgs/{org}",
        json={"name": "Renamed"},
        headers={**admin, "If-Match": got.headers["ETag"]},
    )
    assert r.status_code == 200, r.text


async def test_an_expired_key_answers_401(client, bootstrap, database) -> None:
    import asyncpg

    admin, org = await bootstrap.user("ada@example.com", "Org")
    key = await issue(client, admin, org, "viewer")
    seen = f"/api/v1/orgs/{org}?min_position={key['position']}"
    assert (await client.get(seen, headers=bearer(key))).status_code == 200
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(
            "UPDATE org_api_keys SET expires_at = now() - interval '1 second' WHERE id = $1::uuid",
            key["id"],
        )
    finally:
        await conn.close()
    assert (await client.get(f"/api/v1/orgs/{org}", headers=bearer(key))).status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {"name": "k"},
        {"name": "k", "role": "owner"},
        {"name": "k", "role": "viewer", "expires_at": "2001-01-01T00:00:00Z"},
        {"name": "k", "role": "viewer", "key": "byo_x"},
    ],
)
async def test_bad_key_requests_are_422(client, bootstrap, body) -> None:
    admin, org = await bootstrap.user("ada@example.com", "Org")
    r = await client.post(f"/api/v1/orgs/{org}/api-keys", json=body, headers=admin)
    assert r.status_code == 422, r.text
