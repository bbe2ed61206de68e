"""Drafts and versions over HTTP on real Postgres: create, read back (read-your-writes),
update with If-Match, delete, preview, size limits, versions from valid revisions.

The ``spec_ingest`` handler runs here in the test's event loop, called directly
(test_drafts_e2e.py runs it behind the relay and a real NATS consumer).
"""

from __future__ import annotations

import uuid

import httpx
import pytest

from commands.pgstore import PgEventStore
from domain import draft as draft_mod
from domain.spec import compile_kv, kv
from workers.consumer import JobContext
from workers.spec_ingest import SpecIngest

pytestmark = pytest.mark.asyncio

# The canonical spec (lowering writes defaults such as single_ring.producer too).
VALID = compile_kv(
    b"""pipeline.name=orders
pipeline.target=SingleRing
single_ring.ordering=per_key
single_ring.shard_key=customer_id
single_ring.shards=8
single_ring.stages.0.key=dataguard_check
single_ring.stages.1.depends_on.0=0
single_ring.stages.1.key=http_post:https://hooks.example.com/orders
"""
).spec.decode()
# Not canonical (blank line, spaces, order) but the same spec.
VALID_AGAIN = "single_ring.shards = 8\n\n" + "\n".join(
    line for line in VALID.splitlines() if not line.startswith("single_ring.shards")
)
INVALID = VALID.replace("single_ring.shards=8", "single_ring.shards=0")


async def count_events(pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM events"))


async def project_of(client: httpx.AsyncClient, auth, org_id: str) -> str:
    r = await client.post(f"/api/v1/orgs/{org_id}/projects", json={"name": "P"}, headers=auth)
    assert r.status_code == 201, r.text
    return str(r.json()["links"]["self"])


async def ingest(pool, draft_id: str, revision: int) -> dict | None:
    """Run the spec_ingest handler once, as a worker would for that revision's job."""
    handler = SpecIngest(PgEventStore(pool))
    ctx = JobContext(
        job_id=uuid.uuid4(),
        job_type="spec_ingest",
        payload={"draft_id": draft_id, "revision": revision},
        attempt=1,
        max_attempts=5,
        generation=0,
        tenant_id=None,
    )
    result = await handler(ctx)
    await handler.store.notifier.close()  # type: ignore[attr-defined]
    return result


async def create(client, auth, project: str, **body) -> httpx.Response:
    body.setdefault("name", "orders")
    body.setdefault("target", "SingleRing")
    return await client.post(f"{project}/drafts", json=body, headers=auth)


async def test_a_draft_is_saved_read_back_updated_and_deleted(client, bootstrap, pool) -> None:
    auth, org_id = await bootstrap.user("ada@example.com", "Org")
    project = await project_of(client, auth, org_id)
    r = await create(client, auth, project, spec_kv=VALID)
    assert r.status_code == 201, r.text
    draft = r.json()
    assert draft["revision"] == 1 and r.headers["ETag"] == '"1"'
    assert draft["validation"] == {
        "status": "pending",
        "revision": 1,
        "diagnostics": [],
        "spec_hash": None,
        "required_capabilities": [],
    }
    assert draft["spec_kv"] == VALID and draft["plan"] is None
    # The revision and its spec_ingest job are one transaction.
    records = await pool.fetch(
        "SELECT stream_type, transaction_id, payload FROM events WHERE position > 0 "
        "AND (stream_id = $1 OR event_type = 'job.queued') ORDER BY position",
        f"draft-{draft['id']}",
    )
    assert [r["stream_type"] for r in records][-2:] == ["draft", "job"]
    assert records[-1]["transaction_id"] == records[-2]["transaction_id"]

    pos = r.headers["X-ByteOr-Position"]
    got = await client.get(f"{draft['links']['self']}?min_position={pos}", headers=auth)
    assert got.status_code == 200, got.text
    assert got.json() == draft
    listed = await client.get(f"{project}/drafts", headers=auth)
    (item,) = listed.json()["items"]
    assert item["id"] == draft["id"] and "spec_kv" not in item

    # A rename keeps the validation; a new input makes it pending for the new revision.
    r = await client.put(
        draft["links"]["self"], json={"name": "renamed"}, headers={**auth, "If-Match": '"1"'}
    )
    assert r.status_code == 200, r.text
    assert r.json()["revision"] == 2 and r.json()["validation"]["revision"] == 1
    plan = {
        "pipeline": {"name": "p", "target": "SingleRing"},
        "single_ring": {"shards": 1, "ordering": "strict", "stages": [{"key": "x"}]},
    }
    r = await client.put(draft["links"]["self"], json={"plan": plan}, headers=auth)
    assert r.status_code == 200, r.text
    updated = r.json()
    assert (updated["revision"], updated["input_kind"], updated["plan"]) == (3, "plan", plan)
    assert updated["validation"]["status"] == "pending"
    assert updated["validation"]["revision"] == 3

    # A stale If-Match is refused and changes nothing.
    before = await count_events(pool)
    r = await client.put(
        draft["links"]["self"], json={"name": "late"}, headers={**auth, "If-Match": '"2"'}
    )
    assert r.status_code == 412, r.text
    assert r.json()["code"] == "revision_mismatch"
    assert await count_events(pool) == before

    r = await client.delete(draft["links"]["self"], headers={**auth, "If-Match": '"3"'})
    assert r.status_code == 204, r.text
    pos = r.headers["X-ByteOr-Position"]
    got = await client.get(f"{draft['links']['self']}?min_position={pos}", headers=auth)
    assert got.status_code == 404 and got.json()["code"] == "draft_not_found"
    assert (
        await client.put(draft["links"]["self"], json={"name": "x"}, headers=auth)
    ).status_code == 404


async def test_spec_ingest_records_validation_and_versions_follow_it(
    client, bootstrap, pool
) -> None:
    auth, org_id = await bootstrap.user("ada@example.com", "Org")
    project = await project_of(client, auth, org_id)
    draft = (await create(client, auth, project, spec_kv=VALID)).json()
    versions = f"{draft['links']['self']}/versions"

    r = await client.post(versions, headers=auth)
    assert r.status_code == 409 and r.json()["code"] == "draft_validation_pending", r.text

    assert (await ingest(pool, draft["id"], 1))["outcome"] == "valid"
    # A duplicate delivery appends nothing.
    before = await count_events(pool)
    assert (await ingest(pool, draft["id"], 1))["outcome"] == "recorded_already"
    assert await count_events(pool) == before

    head = await pool.fetchval("SELECT max(position) FROM events")
    got = (await client.get(f"{draft['links']['self']}?min_position={head}", headers=auth)).json()
    spec_hash = kv.spec_hash(VALID.encode())
    assert got["validation"] == {
        "status": "valid",
        "revision": 1,
        "diagnostics": [],
        "spec_hash": spec_hash,
        "required_capabilities": ["http_post"],
    }

    r = await client.post(versions, headers=auth)
    assert r.status_code == 201, r.text
    version = r.json()
    assert (version["number"], version["spec_hash"]) == (1, spec_hash)
    assert version["required_capabilities"] == ["http_post"]
    assert version["report"]["target"] == "SingleRing"
    again = await client.post(versions, json={"revision": 1}, headers=auth)
    assert again.status_code == 200, again.text
    assert again.json() == version

    # The same spec in another spelling, from another draft: the same version.
    other = (await create(client, auth, project, name="again", spec_kv=VALID_AGAIN)).json()
    assert (await ingest(pool, other["id"], 1))["outcome"] == "valid"
    r = await client.post(f"{other['links']['self']}/versions", headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == version["id"]

    pos = (await pool.fetchval("SELECT max(position) FROM events")) or 0
    found = await client.get(
        f"{project}/versions?spec_hash={spec_hash}&min_position={pos}", headers=auth
    )
    assert found.status_code == 200, found.text
    assert found.json() == {"items": [version], "next_cursor": None}
    none = await client.get(f"{project}/versions?spec_hash=sha256:{'0' * 64}", headers=auth)
    assert none.json()["items"] == []
    bad = await client.get(f"{project}/versions?spec_hash=md5:x", headers=auth)
    assert bad.status_code == 422 and bad.json()["errors"][0]["path"] == "query.spec_hash"
    got = await client.get(version["links"]["self"], headers=auth)
    assert got.json() == version
    text = await client.get(f"{version['links']['self']}/spec.kv", headers=auth)
    assert text.status_code == 200
    assert text.headers["content-type"].startswith("text/plain")
    assert text.content == VALID.encode()

    # A revision named that is no longer current is refused.
    r = await client.put(draft["links"]["self"], json={"name": "n"}, headers=auth)
    r = await client.post(versions, json={"revision": 1}, headers=auth)
    assert r.status_code == 409 and r.json()["code"] == "draft_revision_not_current"


async def test_an_invalid_draft_shows_diagnostics_and_cannot_be_versioned(
    client, bootstrap, pool
) -> None:
    auth, org_id = await bootstrap.user("ada@example.com", "Org")
    project = await project_of(client, auth, org_id)
    draft = (await create(client, auth, project, spec_kv=INVALID)).json()
    assert (await ingest(pool, draft["id"], 1))["outcome"] == "invalid"
    head = await pool.fetchval("SELECT max(position) FROM events")
    got = (await client.get(f"{draft['links']['self']}?min_position={head}", headers=auth)).json()
    validation = got["validation"]
    assert validation["status"] == "invalid"
    (diagnostic,) = validation["diagnostics"]
    assert diagnostic["code"] == "shards_min"
    line = INVALID.splitlines().index("single_ring.shards=0") + 1
    assert diagnostic["path"] == "single_ring.shards" and diagnostic["line"] == line
    r = await client.post(f"{draft['links']['self']}/versions", headers=auth)
    assert r.status_code == 409, r.text
    problem = r.json()
    assert problem["code"] == "draft_not_valid"
    assert problem["errors"][0]["path"] == "single_ring.shards"
    assert problem["errors"][0]["message"].startswith("shards_min:")

    # A job for a superseded revision records nothing.
    await client.put(draft["links"]["self"], json={"spec_kv": VALID}, headers=auth)
    before = await count_events(pool)
    assert (await ingest(pool, draft["id"], 1))["outcome"] == "superseded"
    assert await count_events(pool) == before
    assert (await ingest(pool, draft["id"], 2))["outcome"] == "valid"


async def test_a_plan_whose_target_is_not_the_drafts_is_invalid(client, bootstrap, pool) -> None:
    auth, org_id = await bootstrap.user("ada@example.com", "Org")
    project = await project_of(client, auth, org_id)
    draft = (await create(client, auth, project, target="LaneGraph", spec_kv=VALID)).json()
    assert (await ingest(pool, draft["id"], 1))["outcome"] == "invalid"
    r = await client.post(f"{draft['links']['self']}/preview", headers=auth)
    assert r.status_code == 200, r.text
    assert [d["code"] for d in r.json()["diagnostics"]] == ["draft_target_mismatch"]


async def test_preview_validates_and_lowers_without_saving(client, bootstrap, pool) -> None:
    auth, org_id = await bootstrap.user("ada@example.com", "Org")
    project = await project_of(client, auth, org_id)
    draft = (await create(client, auth, project, spec_kv=VALID_AGAIN)).json()
    preview = f"{draft['links']['self']}/preview"
    before = await count_events(pool)

    r = await client.post(preview, headers=auth)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "valid"
    assert body["spec_kv"] == VALID and body["spec_hash"] == kv.spec_hash(VALID.encode())
    assert [d["code"] for d in body["diagnostics"]] == ["spec_not_canonical"]
    assert body["required_capabilities"] == ["http_post"]
    assert body["report"]["stage_count"] == 2

    r = await client.post(preview, json={"spec_kv": INVALID}, headers=auth)
    assert r.json()["status"] == "invalid" and r.json()["spec_kv"] is None
    assert r.json()["diagnostics"][0]["code"] == "shards_min"
    r = await client.post(preview, json={"spec_kv": "no equals here"}, headers=auth)
    assert r.json()["diagnostics"][0]["code"] == "kv_missing_equals"
    r = await client.post(preview, json={"plan": {"pipeline": 5}}, headers=auth)
    assert r.json()["diagnostics"][0]["code"] == "plan_invalid"
    r = await client.post(preview, json={"spec_kv": VALID, "plan": {}}, headers=auth)
    assert r.status_code == 422
    assert await count_events(pool) == before


async def test_specs_over_the_limits_are_refused_with_a_clear_error(
    client, bootstrap, pool
) -> None:
    auth, org_id = await bootstrap.user("ada@example.com", "Org")
    project = await project_of(client, auth, org_id)
    before = await count_events(pool)
    big = "pipeline.name=" + "x" * kv.MAX_BYTES + "\n"
    r = await create(client, auth, project, spec_kv=big)
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["code"] == "spec_too_large"
    assert problem["errors"][0]["path"] == "/spec_kv"
    assert "1 MiB" in problem["detail"] or "1048576" in problem["detail"]

    many = "".join(f"a.{i}=1\n" for i in range(kv.MAX_KEYS + 1))
    r = await create(client, auth, project, spec_kv=many)
    assert r.status_code == 422 and r.json()["code"] == "spec_too_many_keys", r.text

    lanes = [{"name": f"l{i}", "kind": "Events", "on_full": "Block"} for i in range(3400)]
    plan = {"pipeline": {"name": "p", "target": "LaneGraph"}, "lane_graph": {"lanes": lanes}}
    r = await create(client, auth, project, target="LaneGraph", plan=plan)
    assert r.status_code == 422 and r.json()["code"] == "spec_too_many_keys", r.text
    assert r.json()["errors"][0]["path"] == "/plan"
    assert await count_events(pool) == before

    # At the limit it is accepted (and stored in parts, each well below NATS's limit).
    exactly = "".join(f"a.{i}=1\n" for i in range(kv.MAX_KEYS))
    r = await create(client, auth, project, spec_kv=exactly)
    assert r.status_code == 201, r.text


async def test_a_large_spec_round_trips_through_parts(client, bootstrap, pool) -> None:
    auth, org_id = await bootstrap.user("ada@example.com", "Org")
    project = await project_of(client, auth, org_id)
    stages = 900  # about 300 KB of canonical KV: several parts
    lines = ["pipeline.name=chain", "pipeline.target=LaneGraph"]
    lines += [f"lane_graph.egress.0=lane-{stages}", "lane_graph.ingress.0=lane-0"]
    for i in range(stages + 1):
        lines += [
            f"lane_graph.lanes.{i}.kind=Events",
            f"lane_graph.lanes.{i}.name=lane-{i}",
            f"lane_graph.lanes.{i}.on_full=Block",
        ]
    for i in range(stages):
        lines += [
            f"lane_graph.stages.{i}.inputs.0=lane-{i}",
            f"lane_graph.stages.{i}.key=http_post:https://sink.example.com/{'p' * 200}/{i}",
            f"lane_graph.stages.{i}.name=stage-{i}",
            f"lane_graph.stages.{i}.outputs.0=lane-{i + 1}",
            f"lane_graph.stages.{i}.role=stage",
        ]
    text = kv.canonicalize("\n".join(lines) + "\n").decode()
    assert len(text) > 3 * draft_mod.PART_CHARS
    r = await create(client, auth, project, target="LaneGraph", spec_kv=text)
    assert r.status_code == 201, r.text
    draft = r.json()
    largest = await pool.fetchval(
        "SELECT max(octet_length(payload::text)) FROM events WHERE stream_id = $1",
        f"draft-{draft['id']}",
    )
    assert largest < 512 * 1024
    assert (await ingest(pool, draft["id"], 1))["outcome"] == "valid"
    r = await client.post(f"{draft['links']['self']}/versions", headers=auth)
    assert r.status_code == 201, r.text
    version = r.json()
    pos = r.headers["X-ByteOr-Position"]
    got = await client.get(f"{draft['links']['self']}?min_position={pos}", headers=auth)
    assert got.json()["spec_kv"] == text and got.json()["versions"] == 1
    spec = await client.get(f"{version['links']['self']}/spec.kv", headers=auth)
    assert spec.text == text


async def test_another_tenants_drafts_and_versions_are_not_found(client, bootstrap, pool) -> None:
    auth, org_id = await bootstrap.user("ada@example.com", "Org")
    project = await project_of(client, auth, org_id)
    draft = (await create(client, auth, project, spec_kv=VALID)).json()
    await ingest(pool, draft["id"], 1)
    version = (await client.post(f"{draft['links']['self']}/versions", headers=auth)).json()
    pos = await pool.fetchval("SELECT max(position) FROM events")
    assert (
        await client.get(f"{version['links']['self']}?min_position={pos}", headers=auth)
    ).is_success

    mallory, _ = await bootstrap.user("mallory@example.com", "Other")
    for method, path in [
        ("GET", draft["links"]["self"]),
        ("PUT", draft["links"]["self"]),
        ("DELETE", draft["links"]["self"]),
        ("POST", f"{draft['links']['self']}/preview"),
        ("POST", f"{draft['links']['self']}/versions"),
        ("GET", f"{project}/drafts"),
        ("POST", f"{project}/drafts"),
        ("GET", f"{project}/versions"),
        ("GET", version["links"]["self"]),
        ("GET", f"{version['links']['self']}/spec.kv"),
    ]:
        writes = method in ("PUT", "DELETE") or path.endswith("/drafts")
        body = {"name": "x", "target": "SingleRing", "spec_kv": VALID} if writes else None
        r = await client.request(method, path, json=body, headers=mallory)
        assert r.status_code == 404, (method, path, r.status_code, r.text)


async def test_the_plan_schema_is_in_the_openapi_document(client) -> None:
    doc = (await client.get("/schema/openapi.json")).json()
    path = next(p for p in doc["paths"] if p.endswith("/drafts"))
    body = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    plan = body["properties"]["plan"]["anyOf"][0]
    assert set(plan["properties"]) == {"pipeline", "single_ring", "lane_graph"}
    assert "$ref" not in str(body)


async def test_drafts_are_listed_in_pages(client, bootstrap, pool) -> None:
    auth, org_id = await bootstrap.user("ada@example.com", "Org")
    project = await project_of(client, auth, org_id)
    made = [
        (await create(client, auth, project, name=f"d{i}", spec_kv=VALID)).json() for i in range(3)
    ]
    pos = await pool.fetchval("SELECT max(position) FROM events")
    first = (await client.get(f"{project}/drafts?limit=2&min_position={pos}", headers=auth)).json()
    assert [d["id"] for d in first["items"]] == [d["id"] for d in made[:2]]
    rest = await client.get(f"{project}/drafts?limit=2&cursor={first['next_cursor']}", headers=auth)
    assert rest.json() == {"items": [first_item(made[2])], "next_cursor": None}


def first_item(detail: dict) -> dict:
    """A list item: the draft without its input."""
    return {k: v for k, v in detail.items() if k not in ("spec_kv", "plan")}
