"""Deploy benchmark: bundle build time, and deploy request → every agent active.

    python -m ops.bench.deploy [--builds 20] [--adapters 20] [--agents 10] [--deploys 20]

Starts its own PostgreSQL, NATS, S3 (SeaweedFS) and Vault (OpenBao) in a
temporary directory; the API (in-process ASGI), the projector, the relay and
one ``deploy_bundle_build`` consume loop run in this process's event loop.

  build    ``--builds`` deployments of a config bundle with ``--adapters``
           adapters, each with one inline and one Vault secret, built by
           calling the job handler directly: Vault reads, inline decryption,
           tarball, signature, upload and the two events. p50/p99 in ms.
  deploy   ``--deploys`` times: ``POST …/deployments`` in a ``dev`` environment
           (no approval needed: "approval pre-attached") with ``--agents``
           agents each polling its current deployment every 50 ms, pulling,
           verifying offline and reporting activation (ops/agent_flow.py);
           latency = request sent → the deployment's ``deployment.activated``
           event recorded (event store clock), p50/p99 in ms. This includes the
           relay and JetStream hop to the worker and the build itself.

Targets (issue 6): build p50 < 500 ms; request → active p99 < 5 s. The
machine is shared with whatever else runs, so figures are as measured.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import nats

from commands.bootstrap import create_user
from commands.object_store import ObjectStore
from commands.pgstore import PgEventStore
from commands.ratelimit import RateLimits
from commands.secret_keys import MasterKey, MasterKeyring, SecretCipher
from domain.backoff import Backoff
from ops.agent_flow import Agent
from ops.app import create_app
from ops.services.base import free_port
from ops.services.nats import Nats
from ops.services.postgres import Postgres
from ops.services.s3 import SeaweedS3
from ops.services.vault import Vault
from ops.stack import free_port_pair, free_ports, s3_ports
from projections.config_bundles import ConfigBundleProjection
from projections.deployments import DeploymentProjection
from projections.drafts import DraftProjection
from projections.feed import PgFeed
from projections.runner import ProjectionRunner
from projections.tenancy import TenancyProjection
from schema.migrate import migrate_dsn
from schema.pg import create_pool
from workers.consumer import JobContext, JobStore, JobWorker
from workers.deploy_build import DeployBuild
from workers.relay import JetStreamPublisher, ensure_events_stream
from workers.spec_ingest import SpecIngest
from workers.streams import JobTypeSettings, ensure
from workers.vault_refs import VaultResolver

SETTINGS = JobTypeSettings(
    job_type="deploy_bundle_build", ack_wait_s=30.0, backoff=Backoff(base_s=0.2, cap_s=1.0)
)
SPEC = (
    "pipeline.name=bench\npipeline.target=SingleRing\nsingle_ring.ordering=strict\n"
    "single_ring.shards=1\nsingle_ring.stages.0.key=x\n"
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Services:
    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="byteor-bench-deploy-"))
        self.pg = Postgres(self.tmp / "pg", free_port())
        port, monitor = free_ports(2)
        self.nats = Nats(self.tmp / "nats", port, monitor)
        self.s3 = SeaweedS3(
            self.tmp / "s3",
            s3_ports(),
            access_key="BENCH" + secrets.token_hex(8).upper(),
            secret_key=secrets.token_urlsafe(30),
        )
        self.vault = Vault(self.tmp / "vault", free_port_pair(), secrets.token_urlsafe(24))
        self.dsn = ""

    def start(self) -> None:
        log("starting PostgreSQL, NATS, S3 and Vault")
        self.pg.start()
        self.nats.start()
        self.s3.start()
        self.vault.start()
        self.pg.create_database("bench")
        self.dsn = self.pg.dsn("bench")
        asyncio.run(migrate_dsn(self.dsn))

    def stop(self) -> None:
        for stop in (self.vault.stop, self.s3.kill, self.nats.stop, self.pg.stop):
            with contextlib.suppress(Exception):
                stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


class Bench:
    def __init__(self, services: Services, pool: asyncpg.Pool, args: argparse.Namespace) -> None:
        self.services = services
        self.pool = pool
        self.args = args
        self.cipher = SecretCipher(
            pool, MasterKeyring([MasterKey("bench", secrets.token_bytes(32))])
        )
        s3 = services.s3
        self.objects = ObjectStore(
            endpoint_url=s3.endpoint,
            access_key=s3.access_key,
            secret_key=s3.secret_key,
            bucket="bench-bundles",
        )
        app = create_app(
            pool,
            PgFeed(pool),
            rate_limits=RateLimits(default=1_000_000, auth=1_000_000, enrollment=1_000_000),
            secret_cipher=self.cipher,
            object_store=self.objects,
        )
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
            base_url="http://bench",
        )
        self.handler = DeployBuild(
            PgEventStore(pool),
            pool,
            cipher=self.cipher,
            objects=self.objects,
            vault=VaultResolver(services.vault.addr, services.vault.token),
        )

    async def ok(self, method: str, path: str, auth: dict[str, str], body: Any = None) -> Any:
        r = await self.client.request(method, path, json=body, headers=auth)
        if not r.is_success:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:300]}")
        return r.json() if r.content else None

    async def setup(self) -> None:
        made = await create_user(
            self.pool, email="bench@example.com", org_name="Bench", now=datetime.now(UTC)
        )
        self.auth = {"Authorization": f"Bearer {made.token}"}
        org = f"/api/v1/orgs/{made.org_id}"
        await self.ok("POST", f"{org}/signing-keys", self.auth, {"name": "bench"})
        project = await self.ok("POST", f"{org}/projects", self.auth, {"name": "P"})
        self.project = f"{org}/projects/{project['id']}"
        env = await self.ok(
            "POST",
            f"{self.project}/environments",
            self.auth,
            {"name": "dev", "posture": "dev", "settings": {"max_inflight_deployments": 100}},
        )
        self.env = f"{self.project}/environments/{env['id']}"
        draft = await self.ok(
            "POST",
            f"{self.project}/drafts",
            self.auth,
            {"name": "bench", "target": "SingleRing", "spec_kv": SPEC},
        )
        await SpecIngest(PgEventStore(self.pool))(self._ctx("spec_ingest", draft_id=draft["id"]))
        version = await self.ok("POST", f"{self.project}/drafts/{draft['id']}/versions", self.auth)
        self.version_id = version["id"]
        kv = self.services.vault.client().secrets.kv.v2
        await asyncio.to_thread(
            kv.create_or_update_secret,
            path="bench/app",
            secret={"pw": "vault-secret"},
            mount_point="secret",
        )
        self.agents: list[Agent] = []
        for i in range(self.args.agents + 1):
            token = await self.ok("POST", f"{self.env}/enrollment-tokens", self.auth, {})
            enrolled = await self.ok(
                "POST",
                f"{self.env}/agents",
                {"Authorization": f"Bearer {token['token']}"},
                {"name": f"agent-{i}"},
            )
            self.agents.append(Agent(self.client, enrolled["agent_id"], enrolled["api_key"]))
        # The first agent is only a target for the build runs; it never polls.
        self.builder, self.agents = self.agents[0], self.agents[1:]

    def _ctx(self, job_type: str, **payload: Any) -> JobContext:
        if job_type == "spec_ingest":
            payload["revision"] = 1
        return JobContext(
            job_id=uuid.uuid4(),
            job_type=job_type,
            payload=payload,
            attempt=1,
            max_attempts=5,
            generation=0,
            tenant_id=None,
        )

    async def bundle(self, adapters: int) -> str:
        body = {
            "version_id": self.version_id,
            "tuning": {"profile": "default"},
            "adapters": [
                {
                    "name": f"a{i}",
                    "family": "postgres",
                    "endpoint": f"postgresql://db{i}.example:5432/app",
                    "secretRefs": {
                        "password": {"kind": "inline", "value": f"inline-{i}"},
                        "token": {
                            "kind": "vault",
                            "mount": "secret",
                            "path": "bench/app",
                            "field": "pw",
                        },
                    },
                }
                for i in range(adapters)
            ],
            "parameters": {"run": uuid.uuid4().hex},
        }
        return str((await self.ok("POST", f"{self.env}/bundles", self.auth, body))["id"])

    async def builds(self) -> list[float]:
        """The handler on approved deployments whose jobs nobody consumes (no engine yet)."""
        bundle = await self.bundle(self.args.adapters)
        took: list[float] = []
        for _ in range(self.args.builds):
            body = {"bundle_id": bundle, "agent_ids": [str(self.builder.agent_id)]}
            dep = await self.ok("POST", f"{self.env}/deployments", self.auth, body)
            started = time.perf_counter()
            done = await self.handler(self._ctx("deploy_bundle_build", deployment_id=dep["id"]))
            took.append((time.perf_counter() - started) * 1000)
            assert done is not None and done["outcome"] == "built", done
        return took

    async def deploys(self, stop: asyncio.Event) -> list[float]:
        bundle = await self.bundle(2)
        targets = [str(a.agent_id) for a in self.agents]
        latencies: list[float] = []
        polling = [asyncio.create_task(self._poll(a, stop)) for a in self.agents]
        try:
            for _ in range(self.args.deploys):
                sent = datetime.now(UTC)
                body = {"bundle_id": bundle, "agent_ids": targets}
                dep = await self.ok("POST", f"{self.env}/deployments", self.auth, body)
                activated = await self._activated_at(dep["id"])
                latencies.append((activated - sent).total_seconds() * 1000)
        finally:
            stop.set()
            await asyncio.gather(*polling, return_exceptions=True)
        return latencies

    async def _poll(self, agent: Agent, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):
                await agent.sync()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)

    async def _activated_at(self, deployment_id: str, within: float = 60.0) -> datetime:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            at: datetime | None = await self.pool.fetchval(
                """
                SELECT recorded_at FROM events
                WHERE stream_id = $1 AND event_type = 'deployment.activated'
                """,
                f"deployment-{deployment_id}",
            )
            if at is not None:
                return at
            await asyncio.sleep(0.02)
        raise RuntimeError(f"deployment {deployment_id} not active within {within} s")


@contextlib.asynccontextmanager
async def engine(
    pool: asyncpg.Pool, dsn: str, url: str, handler: DeployBuild
) -> AsyncIterator[None]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure(js, [SETTINGS])
    await ensure_events_stream(js)
    stop = asyncio.Event()
    runners = [
        ProjectionRunner(
            pool,
            PgFeed(pool, listen_dsn=dsn),
            [
                TenancyProjection(),
                DraftProjection(),
                ConfigBundleProjection(),
                DeploymentProjection(),
            ],
            lease_dsn=dsn,
        ),
        ProjectionRunner(
            pool, PgFeed(pool, listen_dsn=dsn), [JetStreamPublisher(js)], lease_dsn=dsn
        ),
    ]
    store = PgEventStore(pool)
    worker = JobWorker(JobStore(store), js, SETTINGS, handler, fetch_timeout=0.5)
    tasks = [asyncio.create_task(r.run(stop)) for r in runners]
    tasks.append(asyncio.create_task(worker.run(stop)))
    try:
        yield
    finally:
        stop.set()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, 10)
        for runner in runners:
            await runner.close()
        await nc.close()


async def run(services: Services, args: argparse.Namespace) -> dict[str, Any]:
    pool = await create_pool(services.dsn, min_size=2, max_size=20)
    try:
        bench = Bench(services, pool, args)
        await bench.setup()
        # Before the relay runs: the build jobs queued by these requests reach the
        # worker only later, and find their deployments built.
        build_ms = await bench.builds()
        log(f"build: p50 {statistics.median(build_ms):.1f} ms over {len(build_ms)}")
        async with engine(pool, services.dsn, services.nats.url, bench.handler):
            deploy_ms = await bench.deploys(asyncio.Event())
            log(f"request → active: p50 {statistics.median(deploy_ms):.0f} ms")
        await bench.client.aclose()
        await bench.objects.close()
    finally:
        await pool.close()
    return {
        "bench": "deploy",
        "adapters": args.adapters,
        "agents": args.agents,
        "builds": len(build_ms),
        "build_p50_ms": round(statistics.median(build_ms), 1),
        "build_p99_ms": round(pct(build_ms, 0.99), 1),
        "deploys": len(deploy_ms),
        "request_to_active_p50_ms": round(statistics.median(deploy_ms), 1),
        "request_to_active_p99_ms": round(pct(deploy_ms, 0.99), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.bench.deploy", description=__doc__)
    parser.add_argument("--builds", type=int, default=20)
    parser.add_argument("--adapters", type=int, default=20)
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--deploys", type=int, default=20)
    args = parser.parse_args(argv)
    services = Services()
    try:
        services.start()
        result = asyncio.run(run(services, args))
    finally:
        services.stop()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
