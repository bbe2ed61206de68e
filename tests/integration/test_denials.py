"""Authorization denials reach the audit log as one access.denied event per
principal, route and minute, however many requests were denied."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from commands.denials import flush
from commands.pgstore import PgEventStore
from domain.codec import default_codec

pytestmark = pytest.mark.asyncio


async def denial_events(pool) -> list[dict]:
    rows = await pool.fetch(
        "SELECT payload, actor_kind, actor_id, tenant_id FROM events "
        "WHERE event_type = 'access.denied' ORDER BY position"
    )
    return [
        {**json.loads(r["payload"]), "actor": (r["actor_kind"], r["actor_id"]), "tenant": r[3]}
        for r in rows
    ]


async def test_a_flood_of_denials_becomes_one_event_per_principal_route_and_minute(
    client, bootstrap, pool
) -> None:
    admin, org = await bootstrap.user("ada@example.com", "Ada Org")
    bob, _bob_org = await bootstrap.user("bob@example.com", "Bob Org")
    r = await client.post(
        f"/api/v1/orgs/{org}/api-keys", json={"name": "ro", "role": "viewer"}, headers=admin
    )
    assert r.status_code == 201, r.text
    viewer = {"Authorization": f"Bearer {r.json()['key']}"}
    events_before = await pool.fetchval("SELECT count(*) FROM events")

    for _ in range(40):  # another tenant probing Ada's organization: 404 each time
        assert (await client.get(f"/api/v1/orgs/{org}", headers=bob)).status_code == 404
    for _ in range(7):  # a viewer trying to write: 403
        r = await client.post(f"/api/v1/orgs/{org}/projects", json={"name": "P"}, headers=viewer)
        assert r.status_code == 403, r.text
    # A plain missing resource is not a denial.
    missing = "00000000-0000-0000-0000-000000000001"
    assert (await client.get(f"/api/v1/orgs/{missing}", headers=admin)).status_code == 404

    # Counted, not yet events: 47 denied requests appended nothing.
    assert await pool.fetchval("SELECT count(*) FROM events") == events_before
    assert await pool.fetchval("SELECT sum(count) FROM access_denials") == 47

    store = PgEventStore(pool)
    now = datetime.now(UTC)
    # The current minute stays open (more denials may still be counted in it).
    assert await flush(pool, store, default_codec(), now - timedelta(minutes=5)) == 0
    assert await flush(pool, store, default_codec(), now + timedelta(minutes=2)) == 2
    assert await pool.fetchval("SELECT count(*) FROM access_denials") == 0
    assert await flush(pool, store, default_codec(), now + timedelta(minutes=2)) == 0

    write, probe = sorted(await denial_events(pool), key=lambda e: e["status"])
    assert probe["status"] == 404 and probe["count"] == 40
    assert probe["route"] == "GET /api/v1/orgs/{org_id}"
    assert probe["principal_kind"] == "user"
    assert probe["credential_family"] == "personal_access_token"
    assert probe["actor"] == ("user", probe["principal_id"])
    assert str(probe["tenant"]) == org and probe["org_id"] == org
    assert write["status"] == 403 and write["count"] == 7
    assert write["route"] == "POST /api/v1/orgs/{org_id}/projects"
    assert write["principal_kind"] == "api_key" and write["code"] == "permission_denied"
    assert write["permission"] == "ManageProject" and write["reason"]
    assert write["first_at"] <= write["last_at"]
    # No credential material in the audit record.
    for event in (probe, write):
        assert not any(str(v).startswith(("bys_", "byp_", "byo_")) for v in event.values())


async def test_late_denials_of_a_flushed_minute_append_a_second_event(
    client, bootstrap, pool
) -> None:
    _admin, org = await bootstrap.user("cy@example.com", "Cy Org")
    eve, _ = await bootstrap.user("eve@example.com", "Eve Org")
    store, codec = PgEventStore(pool), default_codec()
    later = datetime.now(UTC) + timedelta(minutes=2)

    assert (await client.get(f"/api/v1/orgs/{org}", headers=eve)).status_code == 404
    assert await flush(pool, store, codec, later) == 1
    # Same principal, route and minute again after its flush: a second event on the
    # same stream (expected version 1), not a conflict that would wedge the flusher.
    assert (await client.get(f"/api/v1/orgs/{org}", headers=eve)).status_code == 404
    assert await flush(pool, store, codec, later) == 1
    rows = await pool.fetch(
        "SELECT stream_id, stream_version FROM events WHERE event_type = 'access.denied' "
        "ORDER BY position"
    )
    if rows[0]["stream_id"] == rows[1]["stream_id"]:  # both within one wall-clock minute
        assert [r["stream_version"] for r in rows] == [1, 2]
    else:  # the minute turned between the two requests
        assert [r["stream_version"] for r in rows] == [1, 1]
