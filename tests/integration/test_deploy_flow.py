"""Deployments end to end (issue 6): HTTP → event store → relay → NATS JetStream → the
real consume loop running ``deploy_bundle_build`` (Vault, object storage, signing) →
agents pulling, verifying offline and reporting over HTTP → projection → HTTP.

The API, the projector, the relay and one build worker run in this event loop
against the session's real PostgreSQL, NATS, S3 (SeaweedFS) and Vault (OpenBao).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import secrets
import tarfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aioboto3
import httpx
import nats
import pytest
from nats.js import JetStreamContext

from commands.object_store import ObjectStore
from commands.pgstore import PgEventStore
from commands.ratelimit import RateLimits
from commands.secret_keys import MasterKey, MasterKeyring, SecretCipher
from domain.backoff import Backoff
from ops.agent_flow import Agent
from ops.app import create_app
from ops.processes import RUNTIME_HANDLERS, Runtime
from ops.services.vault import Vault
from ops.stack import free_port_pair
from projections.feed import PgFeed
from tests.integration import deploy_world
from tests.integration.test_drafts import VALID, create, ingest
from workers.consumer import JobContext, JobStore, JobWorker
from workers.deploy_build import DeployBuild
from workers.relay import JetStreamPublisher, ensure_events_stream
from workers.streams import DEAD_LETTER_STREAM, JOBS_STREAM, JobTypeSettings, ensure
from workers.vault_refs import VaultResolver

pytestmark = pytest.mark.asyncio

SETTINGS = JobTypeSettings(
    job_type="deploy_bundle_build",
    max_attempts=6,
    ack_wait_s=10.0,
    backoff=Backoff(base_s=0.3, factor=1.5, cap_s=1.0),
)
APPLIED = [{"key": "pinning", "requested": "none", "applied": "none", "state": "applied"}]


class Recorder:
    """Every response body the API gave, for the canary scan."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, response: httpx.Response) -> None:
        await response.aread()
        self.bodies.append(response.content)


class Stack:
    def __init__(self, client, pool, js, s3, bucket, cipher, recorder) -> None:
        self.client: httpx.AsyncClient = client
        self.pool = pool
        self.js = js
        self.s3 = s3
        self.bucket = bucket
        self.cipher = cipher
        self.recorder = recorder
        self.keyring: MasterKeyring | None = None

    def worker(self, vault: VaultResolver | None, objects: ObjectStore) -> DeployBuild:
        return DeployBuild(
            PgEventStore(self.pool), self.pool, cipher=self.cipher, objects=objects, vault=vault
        )


@pytest.fixture
async def js(nats_server) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_server.url)
    jsc = nc.jetstream()
    for name in (JOBS_STREAM, DEAD_LETTER_STREAM):
        with contextlib.suppress(Exception):
            await jsc.delete_stream(name)
    await ensure(jsc, [SETTINGS])
    await ensure_events_stream(jsc)
    yield jsc
    await nc.close()


def store_for(s3, bucket: str) -> ObjectStore:
    return ObjectStore(
        endpoint_url=s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, bucket=bucket
    )


@pytest.fixture
async def stack(pool, database, projector, js, s3) -> AsyncIterator[Stack]:
    keyring = MasterKeyring([MasterKey("e2e", secrets.token_bytes(32))])
    cipher = SecretCipher(pool, keyring)
    bucket = "deploy-" + uuid.uuid4().hex[:12]
    objects = store_for(s3, bucket)
    limits = RateLimits(default=100_000, auth=100_000, enrollment=100_000)
    app = create_app(
        pool, PgFeed(pool), rate_limits=limits, secret_cipher=cipher, object_store=objects
    )
    recorder = Recorder()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", event_hooks={"response": [recorder]}
    ) as client:
        made = Stack(client, pool, js, s3, bucket, cipher, recorder)
        made.keyring = keyring
        yield made
    await objects.close()


@contextlib.asynccontextmanager
async def engine(stack: Stack, database: str, handler: DeployBuild) -> AsyncIterator[None]:
    """The relay and one deploy_bundle_build consume loop, for the block's duration."""
    from projections.runner import ProjectionRunner

    stop = asyncio.Event()
    relay = ProjectionRunner(
        stack.pool,
        PgFeed(stack.pool, listen_dsn=database),
        [JetStreamPublisher(stack.js)],
        lease_dsn=database,
    )
    store = PgEventStore(stack.pool)
    worker = JobWorker(JobStore(store), stack.js, SETTINGS, handler, fetch_timeout=0.5)
    tasks = [asyncio.create_task(relay.run(stop)), asyncio.create_task(worker.run(stop))]
    try:
        yield
    finally:
        stop.set()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, 10)
        await relay.close()
        await store.notifier.close()
        await handler.store.notifier.close()  # type: ignore[attr-defined]


def write_secret(vault: Vault, path: str, data: dict[str, object]) -> None:
    kv = vault.client().secrets.kv.v2
    kv.create_or_update_secret(path=path, secret=data, mount_point="secret")


async def wait_status(
    client: httpx.AsyncClient, auth, path: str, wanted: set[str], within: float = 30.0
) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        r = await client.get(path, headers=auth)
        got = r.json()
        if r.status_code == 200 and got["status"] in wanted:
            return dict(got)
        if time.monotonic() > deadline:
            pytest.fail(f"{path} not in {wanted}: {got}")
        await asyncio.sleep(0.1)


async def job_of(pool, deployment_id: str) -> dict[str, Any]:
    row = await pool.fetchrow(
        """
        SELECT stream_id, array_agg(event_type ORDER BY stream_version) AS types,
               string_agg(payload::text, ' ' ORDER BY stream_version) AS text
        FROM events WHERE stream_type = 'job'
          AND stream_id IN (SELECT stream_id FROM events
                            WHERE event_type = 'job.queued' AND payload::text LIKE '%' || $1 || '%')
        GROUP BY stream_id
        """,
        deployment_id,
    )
    assert row is not None
    return dict(row)


async def world(stack: Stack, posture: str = "prod") -> dict[str, Any]:
    """An org with a signing key, an operator, a version of VALID, a tree and 3 agents."""
    from tests.integration.conftest import Bootstrap

    boot = Bootstrap(stack.pool)
    admin, org_id = await boot.user(f"ada-{uuid.uuid4().hex[:6]}@example.com", "Org")
    operator, _ = await boot.user(f"op-{uuid.uuid4().hex[:6]}@example.com", "Elsewhere")
    me = (await stack.client.get("/api/v1/me", headers=operator)).json()
    await deploy_world.add_members(stack.pool, org_id, {uuid.UUID(me["id"]): "operator"})
    client = stack.client
    r = await client.post(f"/api/v1/orgs/{org_id}/signing-keys", json={"name": "k"}, headers=admin)
    assert r.status_code == 201, r.text
    ids = await deploy_world.tree(client, admin, org_id, posture)
    project = f"/api/v1/orgs/{org_id}/projects/{ids['project_id']}"
    draft = (await create(client, admin, project, spec_kv=VALID)).json()
    assert (await ingest(stack.pool, draft["id"], 1) or {})["outcome"] == "valid"
    r = await client.post(f"{draft['links']['self']}/versions", headers=admin)
    assert r.status_code == 201, r.text
    agents = [await deploy_world.agent(client, admin, ids) for _ in range(3)]
    return {
        "admin": admin,
        "operator": operator,
        "ids": ids,
        "env": deploy_world.env_path(ids),
        "version_id": r.json()["id"],
        "agents": [Agent(client, a["agent_id"], a["api_key"]) for a in agents],
    }


async def config_bundle(
    stack: Stack, w: dict[str, Any], inline: str, vault_path: str, run: str
) -> str:
    body = {
        "version_id": w["version_id"],
        "tuning": {"profile": "default"},
        "adapters": [
            {
                "name": "db",
                "family": "postgres",
                "endpoint": "postgresql://db.example:5432/app",
                "secretRefs": {
                    "password": {"kind": "inline", "value": inline},
                    "token": {
                        "kind": "vault",
                        "mount": "secret",
                        "path": vault_path,
                        "field": "pw",
                    },
                },
            }
        ],
        "parameters": {"run": run},
    }
    r = await stack.client.post(f"{w['env']}/bundles", json=body, headers=w["admin"])
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def deploy(stack: Stack, w: dict[str, Any], bundle_id: str) -> dict[str, Any]:
    """Request (admin), refuse self-approval, approve (operator), wait for the build."""
    client = stack.client
    r = await client.post(
        f"{w['env']}/deployments", json={"bundle_id": bundle_id}, headers=w["admin"]
    )
    assert r.status_code == 201, r.text
    return await approve_and_build(stack, w, r.json())


async def approve_and_build(stack: Stack, w: dict[str, Any], dep: dict[str, Any]) -> dict:
    client = stack.client
    assert dep["status"] == "pending_approval" and dep["approval_id"]
    approval = f"{w['env']}/approvals/{dep['approval_id']}"
    r = await client.post(f"{approval}/approve", json={}, headers=w["admin"])
    assert r.status_code == 403 and r.json()["code"] == "approval_by_requester", r.text
    r = await client.post(f"{approval}/approve", json={}, headers=w["operator"])
    assert r.status_code == 200, r.text
    path = f"{w['env']}/deployments/{dep['id']}"
    return await wait_status(client, w["admin"], path, {"deploying", "failed"})


async def roll_out(w: dict[str, Any], deployment_id: str) -> None:
    for i, agent in enumerate(w["agents"]):
        result = await agent.sync(applied_tuning=APPLIED)
        assert result.outcome == "activated", result
        assert str(result.deployment_id) == deployment_id and result.secrets == 2
        assert result.status == ("active" if i == len(w["agents"]) - 1 else "deploying")
        again = await agent.sync()
        assert again.outcome == "reported_already"


async def test_version_to_active_agents_then_rollback(
    stack: Stack, database, vault: Vault, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    inline_canary = "inline-canary-" + secrets.token_hex(12)
    vault_canary = "vault-canary-" + secrets.token_hex(12)
    vault_path = f"apps/{uuid.uuid4().hex}"
    await asyncio.to_thread(write_secret, vault, vault_path, {"pw": vault_canary})
    w = await world(stack)
    client, admin = stack.client, w["admin"]
    first = await config_bundle(stack, w, inline_canary, vault_path, "one")
    second = await config_bundle(stack, w, inline_canary, vault_path, "two")
    objects = store_for(stack.s3, stack.bucket)
    handler = stack.worker(VaultResolver(vault.addr, vault.token), objects)
    async with engine(stack, database, handler):
        # No deployment yet: the agents are idle.
        assert (await w["agents"][0].sync()).outcome == "idle"
        a = await deploy(stack, w, first)
        assert a["status"] == "deploying" and a["bundle_digest"].startswith("sha256:"), a
        await roll_out(w, a["id"])
        a = await wait_status(client, admin, f"{w['env']}/deployments/{a['id']}", {"active"})
        assert {r["agent_id"] for r in a["reports"]} == {str(x.agent_id) for x in w["agents"]}
        for report in a["reports"]:
            got = [{k: t[k] for k in APPLIED[0]} for t in report["applied_tuning"]]
            assert got == APPLIED, report
        job = await job_of(stack.pool, a["id"])
        assert list(job["types"])[-1] == "job.completed", job

        b = await deploy(stack, w, second)
        assert b["status"] == "deploying" and b["bundle_digest"] != a["bundle_digest"]
        await roll_out(w, b["id"])
        await wait_status(client, admin, f"{w['env']}/deployments/{b['id']}", {"active"})
        await wait_status(client, admin, f"{w['env']}/deployments/{a['id']}", {"superseded"})

        # Rollback: a new deployment of the first bundle restores it.
        r = await client.post(f"{w['env']}/deployments/{b['id']}/rollback", headers=admin)
        assert r.status_code == 201, r.text
        c = await approve_and_build(stack, w, r.json())
        assert c["status"] == "deploying" and c["bundle_id"] == first, c
        await roll_out(w, c["id"])
        c = await wait_status(client, admin, f"{w['env']}/deployments/{c['id']}", {"active"})
        await wait_status(client, admin, f"{w['env']}/deployments/{b['id']}", {"rolled_back"})
        current = await w["agents"][1].current()
        assert current is not None and current["id"] == c["id"]
        assert current["config_bundle_id"] == first
        assert "bundle_key" not in a and "secrets_key" not in str(a)

        # One agent only sees its own deployments.
        other = w["agents"][0]
        r = await client.get(
            f"/api/v1/agents/{w['agents'][1].agent_id}/deployments/current",
            headers=other._headers,
        )
        assert r.status_code == 401, r.text
        r = await client.get(f"{other.base}/bundles/{uuid.uuid4()}", headers=other._headers)
        assert r.status_code == 404, r.text
    # The worker closes its handlers when it stops: the storage client goes with it.
    await handler.aclose()
    with pytest.raises(RuntimeError):
        objects.client  # noqa: B018
    await handler.aclose()  # twice is harmless

    # The canary scan: events, read tables, logs, responses, stored objects.
    canaries = (inline_canary.encode(), vault_canary.encode())
    events = await stack.pool.fetchval("SELECT string_agg(e::text, ' ') FROM events e")
    assert all(c.decode() not in events for c in canaries)
    tables = await stack.pool.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'events'"
    )
    for t in tables:
        dump = await stack.pool.fetchval(
            f"SELECT coalesce(string_agg(t::text, ' '), '') FROM \"{t['tablename']}\" t"
        )
        assert all(c.decode() not in dump for c in canaries), t["tablename"]
    logged = "\n".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
    assert all(c.decode() not in logged for c in canaries)
    # The requests carried the inline value once (bundle creation); no response did.
    assert all(c not in body for body in stack.recorder.bodies for c in canaries)
    files_seen = 0
    session = aioboto3.Session()
    async with session.client("s3", **stack.s3.client_kwargs()) as s3c:
        listed = await s3c.list_objects_v2(Bucket=stack.bucket)
        keys = [o["Key"] for o in listed.get("Contents", [])]
        assert len(keys) == 3, keys  # three deployments, three content addresses
        for key in keys:
            data = await (await s3c.get_object(Bucket=stack.bucket, Key=key))["Body"].read()
            assert all(c not in data for c in canaries)
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                for member in tar.getmembers():
                    content = tar.extractfile(member).read()  # type: ignore[union-attr]
                    files_seen += 1
                    if member.name != "secrets.json.enc":
                        assert all(c not in content for c in canaries), (key, member.name)
    assert files_seen >= 3 * 7


async def test_a_missing_vault_secret_fails_the_job_and_the_deployment(
    stack: Stack, database, vault: Vault
) -> None:
    w = await world(stack)
    bundle = await config_bundle(stack, w, "inline-x", f"apps/absent-{uuid.uuid4().hex}", "r")
    # The handler as the worker process builds it from its settings.
    rt = Runtime(
        database_url=database,
        s3_endpoint=stack.s3.endpoint,
        s3_access_key=stack.s3.access_key,
        s3_secret_key=stack.s3.secret_key,
        s3_bucket=stack.bucket,
        vault_addr=vault.addr,
        vault_token=vault.token,
        keyring=stack.keyring,
    )
    handler = RUNTIME_HANDLERS["deploy_bundle_build"](stack.pool, rt)
    objects = handler.objects
    async with engine(stack, database, handler):
        dep = await deploy(stack, w, bundle)
        assert dep["status"] == "failed", dep
        failed = dep["history"][-1]
        assert failed["reason"] == "build_failed"
        assert dep["failure_reason"] == "build_failed"
        assert "VaultSecretMissing" in dep["failure_detail"], dep
        assert "absent" in dep["failure_detail"], dep
        deadline = time.monotonic() + 10
        while "job.failed" not in (job := await job_of(stack.pool, dep["id"]))["types"]:
            assert time.monotonic() < deadline, job
            await asyncio.sleep(0.1)
        assert "VaultSecretMissing" in job["text"] and "absent" in job["text"]
        assert (await w["agents"][0].sync()).outcome == "idle"
    await objects.close()


async def test_vault_down_retries_then_builds_when_it_returns(
    stack: Stack, database, tmp_path: Path
) -> None:
    # A Vault of its own, sealed for a while: sealing the session's would break others.
    server = Vault(tmp_path / "sealed", free_port_pair(), secrets.token_urlsafe(24))
    await asyncio.to_thread(server.start)
    try:
        path = f"apps/{uuid.uuid4().hex}"
        await asyncio.to_thread(write_secret, server, path, {"pw": "v"})
        await asyncio.to_thread(server.client().sys.seal)
        w = await world(stack)
        bundle = await config_bundle(stack, w, "inline-y", path, "r")
        objects = store_for(stack.s3, stack.bucket)
        handler = stack.worker(VaultResolver(server.addr, server.token), objects)
        async with engine(stack, database, handler):
            r = await stack.client.post(
                f"{w['env']}/deployments", json={"bundle_id": bundle}, headers=w["admin"]
            )
            dep = r.json()
            approval = f"{w['env']}/approvals/{dep['approval_id']}"
            r = await stack.client.post(f"{approval}/approve", json={}, headers=w["operator"])
            assert r.status_code == 200, r.text
            deadline = time.monotonic() + 15
            while "job.retry_scheduled" not in str(
                (job := await job_of(stack.pool, dep["id"]))["types"]
            ):
                assert time.monotonic() < deadline, job
                await asyncio.sleep(0.1)
            assert "VaultUnavailable" in job["text"]
            path_dep = f"{w['env']}/deployments/{dep['id']}"
            assert (await stack.client.get(path_dep, headers=w["admin"])).json()["status"] == (
                "building"
            )
            unseal_key = re.search(r"Unseal Key: (\S+)", server.log.read_text())
            assert unseal_key is not None
            await asyncio.to_thread(server.client().sys.submit_unseal_key, unseal_key.group(1))
            built = await wait_status(stack.client, w["admin"], path_dep, {"deploying", "failed"})
            assert built["status"] == "deploying", built
        await objects.close()
    finally:
        await asyncio.to_thread(server.stop)


class CrashAfterUpload(DeployBuild):
    """A worker that dies once between the upload and ``complete_build``."""

    crashed = False

    async def _decide(self, ctx, deployment_id, decide) -> None:  # type: ignore[no-untyped-def]
        if not self.crashed:
            self.crashed = True
            raise ConnectionError("worker lost mid-build")
        await super()._decide(ctx, deployment_id, decide)


async def test_a_redelivered_build_reuses_its_key_and_content_address(
    stack: Stack, vault: Vault
) -> None:
    vault_path = f"apps/{uuid.uuid4().hex}"
    await asyncio.to_thread(write_secret, vault, vault_path, {"pw": "v"})
    w = await world(stack, posture="dev")
    bundle = await config_bundle(stack, w, "inline-z", vault_path, "r")
    r = await stack.client.post(
        f"{w['env']}/deployments", json={"bundle_id": bundle}, headers=w["admin"]
    )
    assert r.status_code == 201 and r.json()["status"] == "approved", r.text
    dep = r.json()
    job = await job_of(stack.pool, dep["id"])
    assert list(job["types"]) == ["job.queued"]
    job_id = uuid.UUID(job["stream_id"].removeprefix("job-"))
    objects = store_for(stack.s3, "redeliver-" + uuid.uuid4().hex[:8])
    handler = CrashAfterUpload(
        PgEventStore(stack.pool),
        stack.pool,
        cipher=stack.cipher,
        objects=objects,
        vault=VaultResolver(vault.addr, vault.token),
    )

    def ctx(attempt: int, job: uuid.UUID = job_id) -> JobContext:
        return JobContext(
            job_id=job,
            job_type="deploy_bundle_build",
            payload={"deployment_id": dep["id"]},
            attempt=attempt,
            max_attempts=5,
            generation=0,
            tenant_id=None,
        )

    with pytest.raises(ConnectionError):
        await handler(ctx(1))
    path = f"{w['env']}/deployments/{dep['id']}"
    building = await wait_status(stack.client, w["admin"], path, {"building"})
    assert building["bundle_digest"] is None
    done = await handler(ctx(2))
    assert done is not None and done["outcome"] == "built"
    # A duplicate delivery, and a stray job for the same deployment, change nothing.
    assert (await handler(ctx(3)) or {})["outcome"] == "nothing_to_build"
    assert (await handler(ctx(1, uuid.uuid4())) or {})["outcome"] == "built_by_another_job"
    built = await wait_status(stack.client, w["admin"], path, {"deploying"})
    assert built["bundle_digest"] == done["digest"]
    session = aioboto3.Session()
    async with session.client("s3", **stack.s3.client_kwargs()) as s3c:
        listed = await s3c.list_objects_v2(Bucket=objects.bucket)
    # Both attempts uploaded the same bytes under the same content address.
    assert [o["Key"].rsplit("/", 1)[-1] for o in listed["Contents"]] == [
        done["digest"].removeprefix("sha256:") + ".tar.gz"
    ]
    history = [h["status"] for h in built["history"]]
    assert history == ["approved", "building", "deploying"]
    await objects.close()
    await handler.store.notifier.close()  # type: ignore[attr-defined]


class TamperingAgent(Agent):
    """An agent whose download was changed on the way (one byte of the tarball)."""

    async def download(self, current: dict[str, Any]) -> bytes:
        data = bytearray(await super().download(current))
        data[len(data) // 2] ^= 0x01
        return bytes(data)


async def test_a_tampered_download_is_rejected_and_fails_the_deployment(
    stack: Stack, database, vault: Vault
) -> None:
    vault_path = f"apps/{uuid.uuid4().hex}"
    await asyncio.to_thread(write_secret, vault, vault_path, {"pw": "v"})
    w = await world(stack, posture="dev")
    bundle = await config_bundle(stack, w, "inline-t", vault_path, "r")
    objects = store_for(stack.s3, stack.bucket)
    handler = stack.worker(VaultResolver(vault.addr, vault.token), objects)
    async with engine(stack, database, handler):
        r = await stack.client.post(
            f"{w['env']}/deployments", json={"bundle_id": bundle}, headers=w["admin"]
        )
        path = f"{w['env']}/deployments/{r.json()['id']}"
        await wait_status(stack.client, w["admin"], path, {"deploying"})
        good = w["agents"][0]
        assert (await good.sync()).outcome == "activated"
        bad = w["agents"][1]
        tampering = TamperingAgent(stack.client, bad.agent_id, bad._headers["Authorization"][7:])
        result = await tampering.sync()
        assert (result.outcome, result.rejection) == ("failed", "bundle_digest_mismatch")
        assert result.status == "failed"
        failed = await wait_status(stack.client, w["admin"], path, {"failed"})
        assert failed["failure_reason"] == "agent_failed"
        assert "bundle_digest_mismatch" in failed["failure_detail"]
        # The third agent finds nothing left to run.
        assert (await w["agents"][2].sync()).outcome == "idle"
    await objects.close()


async def test_an_activation_timeout_fails_the_deployment_lazily(
    stack: Stack, database, vault: Vault, pool
) -> None:
    vault_path = f"apps/{uuid.uuid4().hex}"
    await asyncio.to_thread(write_secret, vault, vault_path, {"pw": "v"})
    w = await world(stack, posture="dev")
    bundle = await config_bundle(stack, w, "inline-u", vault_path, "r")
    objects = store_for(stack.s3, stack.bucket)
    handler = stack.worker(VaultResolver(vault.addr, vault.token), objects)
    async with engine(stack, database, handler):
        r = await stack.client.post(
            f"{w['env']}/deployments", json={"bundle_id": bundle}, headers=w["admin"]
        )
        dep_id = r.json()["id"]
        path = f"{w['env']}/deployments/{dep_id}"
        await wait_status(stack.client, w["admin"], path, {"deploying"})
        assert (await w["agents"][0].sync()).outcome == "activated"
    await objects.close()
    # Eleven minutes later (the default timeout is 600 s): an API whose clock says so.
    later = create_app(
        pool,
        PgFeed(pool),
        clock=lambda: datetime.now(UTC) + timedelta(seconds=660),
        secret_cipher=stack.cipher,
    )
    transport = httpx.ASGITransport(app=later)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        late = w["agents"][1]
        r = await client.post(
            f"{late.base}/deployments/{dep_id}/status",
            json={"state": "activated"},
            headers=late._headers,
        )
        assert r.status_code == 200 and r.json()["status"] == "failed", r.text
        failed = await wait_status(client, w["admin"], path, {"failed"})
        assert failed["failure_reason"] == "activation_timeout"
        assert set(failed["rollout"]["pending"]) == {str(a.agent_id) for a in w["agents"][1:]}
        r = await client.get(f"{late.base}/deployments/current", headers=late._headers)
        assert r.status_code == 200 and r.json()["deployment"] is None, r.text


async def test_the_simulated_agents_pull_verify_and_activate(
    stack: Stack, database, vault: Vault
) -> None:
    """``byteor-cloud agent simulate``'s sync phase: each simulated agent activates the
    new deployment once, and names it in its later heartbeats."""
    from ops.agent_sim import SimAgent, sync_all

    vault_path = f"apps/{uuid.uuid4().hex}"
    await asyncio.to_thread(write_secret, vault, vault_path, {"pw": "sim-secret"})
    w = await world(stack)
    bundle = await config_bundle(stack, w, "sim-inline", vault_path, "sim")
    sims = [
        SimAgent(i, agent_id=str(a.agent_id), api_key=a._headers["Authorization"][7:])
        for i, a in enumerate(w["agents"])
    ]
    objects = store_for(stack.s3, stack.bucket)
    handler = stack.worker(VaultResolver(vault.addr, vault.token), objects)
    async with engine(stack, database, handler):
        dep = await deploy(stack, w, bundle)
        assert dep["status"] == "deploying", dep
        stop, tally = asyncio.Event(), {}
        syncing = asyncio.create_task(
            sync_all(stack.client, sims, every=0.05, stop=stop, tally=tally)
        )
        path = f"{w['env']}/deployments/{dep['id']}"
        done = await wait_status(stack.client, w["admin"], path, {"active", "failed"})
        await asyncio.sleep(0.2)  # more rounds: nothing is reported twice
        stop.set()
        await syncing
    await objects.close()
    assert done["status"] == "active", done
    assert tally == {"activated": 3}, tally
    assert all(s.deployment_id == dep["id"] for s in sims)
    assert b'"deployment_id"' in sims[0].report(1)


async def test_no_vault_configured_fails_the_job_and_the_deployment(stack: Stack, database) -> None:
    """Fail closed: a bundle with a Vault ref and a worker without Vault settings."""
    w = await world(stack)
    bundle = await config_bundle(stack, w, "inline-y", f"apps/{uuid.uuid4().hex}", "r")
    rt = Runtime(  # the worker process's settings, Vault left out
        database_url=database,
        s3_endpoint=stack.s3.endpoint,
        s3_access_key=stack.s3.access_key,
        s3_secret_key=stack.s3.secret_key,
        s3_bucket=stack.bucket,
        keyring=stack.keyring,
    )
    handler = RUNTIME_HANDLERS["deploy_bundle_build"](stack.pool, rt)
    objects = handler.objects
    async with engine(stack, database, handler):
        dep = await deploy(stack, w, bundle)
        assert dep["status"] == "failed", dep
        assert dep["failure_reason"] == "build_failed"
        assert "VaultNotConfigured" in dep["failure_detail"], dep
        deadline = time.monotonic() + 10
        while "job.failed" not in (job := await job_of(stack.pool, dep["id"]))["types"]:
            assert time.monotonic() < deadline, job
            await asyncio.sleep(0.1)
        assert "retry_scheduled" not in " ".join(job["types"]), job  # failed at once
    await objects.close()
