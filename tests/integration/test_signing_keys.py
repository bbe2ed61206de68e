"""Signing keys over HTTP on real Postgres: create, list, rotate, retire, the key set
(served to the organization's agents and ViewOrg holders), private keys only as
ciphertext at rest and never in events or responses.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest

from commands.bootstrap import create_user
from commands.signing_keys import active_signer
from domain.credential import keys_from_key_set
from ops.app import create_app
from projections.feed import PgFeed
from tests.integration.deploy_world import add_members, agent, make_cipher, tree
from tests.lifecycle import verify

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def keyed(pool: asyncpg.Pool, projector) -> AsyncIterator[tuple[httpx.AsyncClient, object]]:
    cipher = make_cipher(pool)
    app = create_app(pool, PgFeed(pool), projection_wait_s=5.0, secret_cipher=cipher)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c, cipher


async def _user(pool, email: str, org: str) -> tuple[dict[str, str], str, object]:
    made = await create_user(pool, email=email, org_name=org, now=datetime.now(UTC))
    return {"Authorization": f"Bearer {made.token}"}, str(made.org_id), made.user_id


async def test_create_list_rotate_retire_and_key_set(keyed, pool) -> None:
    client, cipher = keyed
    auth, org_id, _ = await _user(pool, "ada@example.com", "Org")
    base = f"/api/v1/orgs/{org_id}/signing-keys"

    r = await client.post(base, json={"name": "primary"}, headers=auth)
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["status"] == "active" and first["alg"] == "EdDSA" and first["crv"] == "Ed25519"
    assert first["kid"].startswith("ed25519-")
    assert "private" not in r.text

    r = await client.post(f"{base}/{first['id']}/rotate", headers=auth)
    assert r.status_code == 201, r.text
    second = r.json()
    assert second["status"] == "active" and second["kid"] != first["kid"]

    listed = (await client.get(base, headers=auth)).json()["items"]
    assert {k["id"]: k["status"] for k in listed} == {
        first["id"]: "retiring",
        second["id"]: "active",
    }
    # Rotating a key that is not active any more is a conflict.
    r = await client.post(f"{base}/{first['id']}/rotate", headers=auth)
    assert r.status_code == 409 and r.json()["code"] == "signing_key_illegal_transition"

    # The newest active key signs.
    async with pool.acquire() as conn:
        kid, sign = await active_signer(conn, cipher, uuid.UUID(org_id))
    assert kid == second["kid"]
    keys = keys_from_key_set((await client.get(f"{base}/key-set", headers=auth)).content)
    assert set(keys) == {first["kid"], second["kid"]}
    assert all(k.status == "active" for k in keys.values())  # retiring still verifies
    assert verify(keys[kid].public_key, b"hello", sign(b"hello"))

    r = await client.post(f"{base}/{first['id']}/retire", headers=auth)
    assert r.status_code == 200 and r.json()["status"] == "retired"
    assert r.json()["not_after"] is not None
    again = await client.post(f"{base}/{first['id']}/retire", headers=auth)
    assert again.status_code == 200 and again.json()["revision"] == r.json()["revision"]
    keys = keys_from_key_set((await client.get(f"{base}/key-set", headers=auth)).content)
    assert keys[first["kid"]].status == "retired" and keys[first["kid"]].not_after is not None

    # Public parts only, everywhere: the private key is ciphertext in its table alone.
    rows = await pool.fetch("SELECT private_key_ref, public_key FROM signing_keys")
    assert len(rows) == 2
    payloads = b"".join(
        bytes(p) for p in await pool.fetchval("SELECT array_agg(payload) FROM events")
    )
    for row in rows:
        assert row["private_key_ref"].encode() not in payloads
    events = await pool.fetch(
        "SELECT event_type, actor_kind FROM events WHERE event_type LIKE 'signing_key.%' "
        "ORDER BY position"
    )
    assert [e["event_type"] for e in events] == [
        "signing_key.created",
        "signing_key.rotated_out",
        "signing_key.created",
        "signing_key.retired",
    ]
    assert {e["actor_kind"] for e in events} == {"user"}


async def test_key_set_for_agents_of_the_org_and_view_org_only(keyed, pool) -> None:
    client, _ = keyed
    auth, org_id, _ = await _user(pool, "ada@example.com", "Org")
    base = f"/api/v1/orgs/{org_id}/signing-keys"
    assert (await client.post(base, json={"name": "k"}, headers=auth)).status_code == 201
    ids = await tree(client, auth, org_id, "dev")
    mine = await agent(client, auth, ids)

    viewer_auth, _, viewer_id = await _user(pool, "vic@example.com", "Vic's")
    await add_members(pool, org_id, {viewer_id: "viewer"})  # type: ignore[dict-item]
    other_auth, other_org, _ = await _user(pool, "mal@example.com", "Other")
    theirs = await agent(client, other_auth, await tree(client, other_auth, other_org, "dev"))

    by_agent = await client.get(
        f"{base}/key-set", headers={"Authorization": f"Bearer {mine['api_key']}"}
    )
    assert by_agent.status_code == 200 and len(by_agent.json()["keys"]) == 1
    x = by_agent.json()["keys"][0]["x"]
    assert len(base64.urlsafe_b64decode(x + "=")) == 32
    assert (await client.get(f"{base}/key-set", headers=viewer_auth)).status_code == 200
    # Managing keys is org_admin work; a viewer cannot even list them.
    assert (await client.get(base, headers=viewer_auth)).status_code == 403
    r = await client.post(base, json={"name": "v"}, headers=viewer_auth)
    assert r.status_code == 403
    # Another tenant: its people get 404, its agents are not anyone here (401).
    assert (await client.get(f"{base}/key-set", headers=other_auth)).status_code == 404
    r = await client.get(
        f"{base}/key-set", headers={"Authorization": f"Bearer {theirs['api_key']}"}
    )
    assert r.status_code == 401
    # An agent key manages nothing.
    r = await client.get(base, headers={"Authorization": f"Bearer {mine['api_key']}"})
    assert r.status_code == 403 and r.json()["code"] == "wrong_credential_family"


async def test_without_a_master_key_signing_keys_are_unavailable(client, bootstrap) -> None:
    auth, org_id = await bootstrap.user("ada@example.com", "Org")
    r = await client.post(f"/api/v1/orgs/{org_id}/signing-keys", json={"name": "k"}, headers=auth)
    assert r.status_code == 503 and r.json()["code"] == "signing_keys_unavailable"
