"""Config bundles over HTTP on real Postgres: create, read back, update with If-Match,
delete, every validation finding with its path, the version a bundle pins, locking
once a deployment used it, other tenants, and an inline secret that never appears
in the clear or as ciphertext anywhere but the events (as ciphertext only)."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import msgspec
import pytest

from commands.pgstore import PgEventStore
from commands.secret_keys import MasterKey, MasterKeyring, SecretCipher
from domain import config_bundle as bundle_mod
from domain.codec import default_codec
from domain.envelope import SYSTEM, Metadata, StreamAppend
from ops.app import create_app
from projections.config_bundles import ConfigBundleProjection
from projections.feed import PgFeed
from workers.consumer import JobContext
from workers.spec_ingest import SpecIngest

pytestmark = pytest.mark.asyncio

SPEC_KV = (
    "pipeline.name=orders\npipeline.target=SingleRing\nsingle_ring.ordering=strict\n"
    "single_ring.shards=1\nsingle_ring.stages.0.key=x\n"
)
CANARY = "canary-" + uuid.uuid4().hex


def body(version_id: str, secret: str = CANARY, **extra) -> dict:
    return {
        "version_id": version_id,
        "tuning": {"profile": "low-latency", "ring_capacity": 4096, "batch_size": 64},
        "adapters": [
            {
                "name": "db",
                "family": "postgres",
                "endpoint": "postgresql://db.example:5432/app",
                "secretRefs": {
                    "password": {"kind": "inline", "value": secret},
                    "cert": {"kind": "vault", "mount": "secret", "path": "app/db", "field": "cert"},
                },
            },
            {"name": "out", "family": "kafka", "endpoint": "broker-1:9092,broker-2:9092"},
        ],
        "parameters": {"region": "eu-west-1", "replicas": 3, "verbose": False},
        **extra,
    }


@pytest.fixture
async def client(pool: asyncpg.Pool, projector) -> AsyncIterator[httpx.AsyncClient]:
    """The app with a master key configured (one cipher, as one API process has)."""
    cipher = SecretCipher(pool, MasterKeyring((MasterKey("test-1", os.urandom(32)),)))
    app = create_app(pool, PgFeed(pool), projection_wait_s=5.0, secret_cipher=cipher)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


class Tree:
    """An organization's project, environment and version, as one user sees them."""

    def __init__(
        self, auth: dict[str, str], org_id: str, project: str, env: str, version: str, at: int
    ):
        self.auth = auth
        self.org_id = org_id
        self.project = project  # path
        self.env = env  # path
        self.version_id = version
        self.bundles = env + "/bundles"
        self.position = at  # of the version's creation: read-your-writes for other readers


async def make_tree(client, pool, bootstrap, email: str) -> Tree:
    auth, org_id = await bootstrap.user(email, f"Org of {email}")
    r = await client.post(f"/api/v1/orgs/{org_id}/projects", json={"name": "P"}, headers=auth)
    assert r.status_code == 201, r.text
    project = r.json()["links"]["self"]
    r = await client.post(
        f"{project}/environments", json={"name": "prod", "posture": "prod"}, headers=auth
    )
    assert r.status_code == 201, r.text
    env = f"{project}/environments/{r.json()['id']}"
    r = await client.post(
        f"{project}/drafts",
        json={"name": "orders", "target": "SingleRing", "spec_kv": SPEC_KV},
        headers=auth,
    )
    assert r.status_code == 201, r.text
    draft_id = r.json()["id"]
    handler = SpecIngest(PgEventStore(pool))
    ctx = JobContext(
        job_id=uuid.uuid4(),
        job_type="spec_ingest",
        payload={"draft_id": draft_id, "revision": 1},
        attempt=1,
        max_attempts=5,
        generation=0,
        tenant_id=None,
    )
    assert (await handler(ctx) or {})["outcome"] == "valid"
    await handler.store.notifier.close()  # type: ignore[attr-defined]
    r = await client.post(f"{project}/drafts/{draft_id}/versions", headers=auth)
    assert r.status_code == 201, r.text
    at = int(r.headers["X-ByteOr-Position"])
    return Tree(auth, org_id, project, env, r.json()["id"], at)


async def count_events(pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM events"))


async def test_a_bundle_is_created_read_updated_and_deleted(client, pool, bootstrap) -> None:
    t = await make_tree(client, pool, bootstrap, "ada@example.com")
    r = await client.post(t.bundles, json=body(t.version_id), headers=t.auth)
    assert r.status_code == 201, r.text
    bundle = r.json()
    assert r.headers["ETag"] == '"1"' and bundle["revision"] == 1
    assert bundle["version_id"] == t.version_id and bundle["spec_hash"].startswith("sha256:")
    assert bundle["content_hash"].startswith("sha256:")
    assert bundle["tuning"] == {"profile": "low-latency", "ring_capacity": 4096, "batch_size": 64}
    assert bundle["parameters"] == {"region": "eu-west-1", "replicas": 3, "verbose": False}
    assert (bundle["locked"], bundle["used_by"]) == (False, [])
    db, out = bundle["adapters"]
    password = db["secretRefs"]["password"]
    assert password.keys() == {"kind", "key_id"} and password["kind"] == "inline"
    assert password["key_id"].startswith("dk_")
    assert db["secretRefs"]["cert"] == {
        "kind": "vault",
        "mount": "secret",
        "path": "app/db",
        "field": "cert",
    }
    assert out == {
        "name": "out",
        "family": "kafka",
        "endpoint": "broker-1:9092,broker-2:9092",
        "secretRefs": {},
    }

    # Read your writes: the query routes answer the same shape from the read table.
    pos = r.headers["X-ByteOr-Position"]
    got = await client.get(f"{bundle['links']['self']}?min_position={pos}", headers=t.auth)
    assert got.status_code == 200, got.text
    assert got.json() == bundle and got.headers["ETag"] == '"1"'
    listed = await client.get(t.bundles, headers=t.auth)
    assert [b["id"] for b in listed.json()["items"]] == [bundle["id"]]

    # PUT replaces the content; a stale If-Match is 412 and changes nothing.
    changed = body(t.version_id, secret="rotated-" + CANARY)
    del changed["version_id"]
    changed["parameters"] = {"region": "us-east-1"}
    r = await client.put(
        bundle["links"]["self"], json=changed, headers={**t.auth, "If-Match": '"1"'}
    )
    assert r.status_code == 200, r.text
    updated = r.json()
    assert updated["revision"] == 2 and r.headers["ETag"] == '"2"'
    assert updated["parameters"] == {"region": "us-east-1"}
    assert updated["content_hash"] != bundle["content_hash"]
    before = await count_events(pool)
    r = await client.put(
        bundle["links"]["self"], json=changed, headers={**t.auth, "If-Match": '"1"'}
    )
    assert r.status_code == 412, r.text
    assert r.json()["code"] == "revision_mismatch"
    r = await client.delete(bundle["links"]["self"], headers={**t.auth, "If-Match": '"1"'})
    assert r.status_code == 412, r.text
    assert await count_events(pool) == before
    r = await client.delete(bundle["links"]["self"], headers={**t.auth, "If-Match": '"2"'})
    assert r.status_code == 204, r.text
    pos = r.headers["X-ByteOr-Position"]
    got = await client.get(f"{bundle['links']['self']}?min_position={pos}", headers=t.auth)
    assert got.status_code == 404 and got.json()["code"] == "bundle_not_found"
    assert (await client.get(t.bundles, headers=t.auth)).json()["items"] == []
    # Deleted is terminal for the write side too.
    r = await client.put(bundle["links"]["self"], json=changed, headers=t.auth)
    assert r.status_code == 404 and r.json()["code"] == "bundle_not_found"


async def test_every_finding_is_reported_with_its_code_and_path(client, pool, bootstrap) -> None:
    t = await make_tree(client, pool, bootstrap, "ada@example.com")
    bad = {
        "version_id": t.version_id,
        "tuning": {"profile": "moon", "rt_priority": 150, "ring_capacity": 3000},
        "adapters": [
            {
                "name": "db",
                "family": "postgres",
                "endpoint": "postgresql://user:hunter2@db.example/app",
                "secretRefs": {"password": {"kind": "inline"}},
            },
            {"name": "db", "family": "carrier-pigeon", "endpoint": "x"},
        ],
        "parameters": {"api_token": "abc", "ok": 1.5},
    }
    before = await count_events(pool)
    r = await client.post(t.bundles, json=bad, headers=t.auth)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["code"] == "bundle_invalid"
    found = {(e["path"], e["message"].split(":", 1)[0]) for e in problem["errors"]}
    assert {
        ("/tuning/profile", "tuning_invalid_choice"),
        ("/tuning/rt_priority", "tuning_out_of_range"),
        ("/tuning/ring_capacity", "tuning_not_power_of_two"),
        ("/adapters/0/endpoint", "adapter_secret_in_endpoint"),
        ("/adapters/0/secretRefs/password/value", "secret_ref_missing_key"),
        ("/adapters/1/name", "adapter_name_duplicate"),
        ("/adapters/1/family", "adapter_family_invalid"),
        ("/parameters/api_token", "parameter_secret_like"),
        ("/parameters/ok", "parameter_value_invalid"),
    } <= found, found
    # A body that is not even the command's shape: 422 with the field's path.
    r = await client.post(t.bundles, json={"tuning": {"profile": "default"}}, headers=t.auth)
    assert r.status_code == 422 and r.json()["errors"][0]["path"].endswith("version_id")
    r = await client.post(t.bundles, json={**body(t.version_id), "surprise": 1}, headers=t.auth)
    assert r.status_code == 422, r.text
    assert await count_events(pool) == before


async def test_the_version_must_be_one_of_this_project(client, pool, bootstrap) -> None:
    t = await make_tree(client, pool, bootstrap, "ada@example.com")
    r = await client.post(t.bundles, json=body(str(uuid.uuid4())), headers=t.auth)
    assert r.status_code == 404 and r.json()["code"] == "version_not_found", r.text
    # A version of another project in the same organization does not do either.
    r = await client.post(f"/api/v1/orgs/{t.org_id}/projects", json={"name": "Q"}, headers=t.auth)
    other = r.json()["links"]["self"]
    r = await client.post(
        f"{other}/environments", json={"name": "dev", "posture": "dev"}, headers=t.auth
    )
    other_env = f"{other}/environments/{r.json()['id']}"
    r = await client.post(f"{other_env}/bundles", json=body(t.version_id), headers=t.auth)
    assert r.status_code == 404 and r.json()["code"] == "version_not_found", r.text
    assert r.json()["errors"][0]["path"] == "/version_id"


async def test_a_used_bundle_is_locked(client, pool, bootstrap) -> None:
    t = await make_tree(client, pool, bootstrap, "ada@example.com")
    r = await client.post(t.bundles, json=body(t.version_id), headers=t.auth)
    bundle = r.json()
    # No deployment route yet: record a deployment's use as its request will.
    store = PgEventStore(pool)
    codec = default_codec()
    deployment_id = uuid.uuid4()
    sid = bundle_mod.stream_id(uuid.UUID(bundle["id"]))
    await store.append(
        [
            StreamAppend(
                stream_id=sid,
                stream_type=bundle_mod.STREAM_TYPE,
                expected_version=1,
                events=(codec.encode(bundle_mod.ConfigBundleUsed(deployment_id=deployment_id)),),
            )
        ],
        Metadata(actor=SYSTEM, tenant_id=uuid.UUID(t.org_id), correlation_id=uuid.uuid4()),
    )
    await store.notifier.close()  # type: ignore[attr-defined]
    changed = body(t.version_id)
    del changed["version_id"]
    r = await client.put(bundle["links"]["self"], json=changed, headers=t.auth)
    assert r.status_code == 409 and r.json()["code"] == "bundle_in_use", r.text
    r = await client.delete(bundle["links"]["self"], headers=t.auth)
    assert r.status_code == 409 and r.json()["code"] == "bundle_in_use", r.text
    head = await pool.fetchval("SELECT max(position) FROM events")
    got = await client.get(f"{bundle['links']['self']}?min_position={head}", headers=t.auth)
    assert got.json()["locked"] is True and got.json()["used_by"] == [str(deployment_id)]
    assert got.json()["revision"] == 2


async def test_other_tenants_and_other_environments_get_404(client, pool, bootstrap) -> None:
    t = await make_tree(client, pool, bootstrap, "ada@example.com")
    r = await client.post(t.bundles, json=body(t.version_id), headers=t.auth)
    bundle = r.json()
    pos = r.headers["X-ByteOr-Position"]
    mallory = await make_tree(client, pool, bootstrap, "mallory@example.com")
    changed = body(t.version_id)
    del changed["version_id"]
    for method, path, payload in [
        ("GET", f"{bundle['links']['self']}?min_position={pos}", None),
        ("GET", t.bundles, None),
        ("POST", t.bundles, body(t.version_id)),
        ("PUT", bundle["links"]["self"], changed),
        ("DELETE", bundle["links"]["self"], None),
    ]:
        r = await client.request(method, path, json=payload, headers=mallory.auth)
        assert r.status_code == 404, (method, path, r.text)
    # Mallory's own environment does not reach Ada's bundle, nor Ada's version.
    r = await client.get(f"{mallory.bundles}/{bundle['id']}", headers=mallory.auth)
    assert r.status_code == 404
    r = await client.post(mallory.bundles, json=body(t.version_id), headers=mallory.auth)
    assert r.status_code == 404 and r.json()["code"] == "version_not_found"
    # Nor does another environment of Ada's own project.
    r = await client.post(
        f"{t.project}/environments", json={"name": "dev", "posture": "dev"}, headers=t.auth
    )
    dev = f"{t.project}/environments/{r.json()['id']}/bundles/{bundle['id']}"
    assert (await client.get(dev, headers=t.auth)).status_code == 404
    assert (await client.delete(dev, headers=t.auth)).status_code == 404


async def test_a_viewer_reads_but_does_not_write(client, pool, bootstrap) -> None:
    t = await make_tree(client, pool, bootstrap, "ada@example.com")
    key = await client.post(
        f"/api/v1/orgs/{t.org_id}/api-keys", json={"name": "v", "role": "viewer"}, headers=t.auth
    )
    viewer = {"Authorization": f"Bearer {key.json()['key']}"}
    r = await client.post(t.bundles, json=body(t.version_id), headers=viewer)
    assert r.status_code == 403, r.text
    # Its first read asks for the tree's writes (the environment may not be projected yet).
    read = await client.get(t.bundles, params={"min_position": t.position}, headers=viewer)
    assert read.status_code == 200, read.text


async def test_the_inline_secret_is_nowhere_in_the_clear(client, pool, bootstrap, database) -> None:
    t = await make_tree(client, pool, bootstrap, "ada@example.com")
    canary = "canary-" + uuid.uuid4().hex
    rotated = "rotated-" + uuid.uuid4().hex
    responses: list[httpx.Response] = []
    r = await client.post(t.bundles, json=body(t.version_id, secret=canary), headers=t.auth)
    assert r.status_code == 201, r.text
    responses.append(r)
    bundle = r.json()
    # The same request again under an Idempotency-Key, replayed from storage.
    for _ in range(2):
        responses.append(
            await client.post(
                t.bundles,
                json=body(t.version_id, secret=canary),
                headers={**t.auth, "Idempotency-Key": "once"},
            )
        )
    changed = body(t.version_id, secret=rotated)
    del changed["version_id"]
    responses.append(await client.put(bundle["links"]["self"], json=changed, headers=t.auth))
    head = await pool.fetchval("SELECT max(position) FROM events")
    responses.append(
        await client.get(f"{bundle['links']['self']}?min_position={head}", headers=t.auth)
    )
    responses.append(await client.get(t.bundles, headers=t.auth))
    assert all(r.is_success for r in responses), [r.text for r in responses]

    # The events hold ciphertext only, under the org's data key, bound to the field.
    payloads = await pool.fetch(
        "SELECT payload FROM events WHERE stream_id = $1 ORDER BY position",
        bundle_mod.stream_id(uuid.UUID(bundle["id"])),
    )
    stored = [bytes(p["payload"]) for p in payloads]
    ciphertexts = []
    for payload in stored:
        doc = msgspec.json.decode(payload)
        content = doc.get("content")
        if content:
            ref = content["adapters"][0]["secretRefs"]["password"]
            assert ref["kind"] == "inline" and ref["key_id"].startswith("dk_")
            ciphertexts.append(ref["ciphertext"])
    assert len(ciphertexts) == 2

    # Neither value nor any ciphertext in a response, nor any value in any table;
    # the ciphertext only in events (no read table holds it).
    for r in responses:
        for needle in (canary, rotated, *ciphertexts):
            assert needle not in r.text, r.request.url
    needles = [canary, rotated, base64.b64encode(canary.encode()).decode()]
    conn = await asyncpg.connect(database)
    try:
        tables = [
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ]
        assert "config_bundle_view" in tables
        for table in tables:
            dump = await conn.fetchval(
                f"SELECT coalesce(string_agg(t::text, ' '), '') FROM {table} t"
            )
            for needle in needles:
                assert needle not in dump, f"{table} holds an inline secret in the clear"
            if table != "events":
                for ciphertext in ciphertexts:
                    assert ciphertext not in dump, f"{table} holds an inline ciphertext"
    finally:
        await conn.close()


async def test_without_a_master_key_inline_secrets_are_refused(pool, projector, bootstrap) -> None:
    app = create_app(pool, PgFeed(pool), projection_wait_s=5.0)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        t = await make_tree(client, pool, bootstrap, "ada@example.com")
        before = await count_events(pool)
        r = await client.post(t.bundles, json=body(t.version_id), headers=t.auth)
        assert r.status_code == 503 and r.json()["code"] == "secrets_unavailable", r.text
        assert await count_events(pool) == before
        vault_only = body(t.version_id)
        del vault_only["adapters"][0]["secretRefs"]["password"]
        r = await client.post(t.bundles, json=vault_only, headers=t.auth)
        assert r.status_code == 201, r.text


async def test_the_routes_and_the_body_schema_are_in_the_openapi_document(client) -> None:
    doc = (await client.get("/schema/openapi.json")).json()
    paths = [p for p in doc["paths"] if "/environments/" in p and "/bundles" in p]
    assert len(paths) == 2, paths
    post = next(p for p in paths if p.endswith("/bundles"))
    schema = doc["paths"][post]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"version_id", "tuning", "adapters", "parameters"} <= schema["properties"].keys()


async def test_lists_page_and_the_projection_replays_idempotently(client, pool, bootstrap) -> None:
    t = await make_tree(client, pool, bootstrap, "ada@example.com")
    made = []
    for _ in range(3):
        r = await client.post(t.bundles, json=body(t.version_id), headers=t.auth)
        assert r.status_code == 201, r.text
        made.append(r.json()["id"])
    pos = r.headers["X-ByteOr-Position"]
    first = (await client.get(f"{t.bundles}?limit=2&min_position={pos}", headers=t.auth)).json()
    assert [b["id"] for b in first["items"]] == made[:2] and first["next_cursor"]
    rest = await client.get(f"{t.bundles}?limit=2&cursor={first['next_cursor']}", headers=t.auth)
    assert [b["id"] for b in rest.json()["items"]] == made[2:]
    assert rest.json()["next_cursor"] is None

    # Every event of a stream applied again (a replay after a crash): nothing moves.
    before = [dict(r) for r in await pool.fetch("SELECT * FROM config_bundle_view ORDER BY id")]
    store = PgEventStore(pool)
    projection = ConfigBundleProjection()
    async with pool.acquire() as conn:
        for bundle_id in made:
            for record in await store.read_stream(bundle_mod.stream_id(uuid.UUID(bundle_id))):
                await projection.apply(conn, record)
    await store.notifier.close()  # type: ignore[attr-defined]
    after = [dict(r) for r in await pool.fetch("SELECT * FROM config_bundle_view ORDER BY id")]
    assert after == before
