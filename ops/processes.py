"""The long-running processes: api, projector, relay, worker.

Each takes a resolved ``Runtime`` (URLs already chosen between external
services and the embedded stack by the CLI) and runs until SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterable
from typing import Any

import asyncpg
import msgspec
import uvicorn

from commands.object_store import ObjectStore
from commands.oidc_client import OidcClient, OidcSettings
from commands.pgstore import open_store
from commands.ratelimit import RateLimits
from commands.secret_keys import SecretCipher
from projections.config_bundles import ConfigBundleProjection
from projections.deployments import DeploymentProjection
from projections.drafts import DraftProjection
from projections.feed import PgFeed
from projections.jobs import JobIndexProjection
from projections.runner import ProjectionRunner
from projections.tenancy import TenancyProjection
from schema.migrate import MigrationError, pending
from schema.pg import connect, create_pool
from workers.deploy_build import deploy_build_handler
from workers.probe import Probe
from workers.relay import JetStreamPublisher, wait_for_nats
from workers.spec_ingest import spec_ingest_handler
from workers.streams import JobTypeTuning
from workers.vault_refs import VaultResolver

log = logging.getLogger("byteor.processes")


class Runtime(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str
    nats_url: str | None = None
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_bucket: str = "byteor-cloud"
    vault_addr: str | None = None
    vault_token: str | None = None
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    worker_host: str = "127.0.0.1"
    worker_port: int = 8081
    db_role: str = "byteor_app"
    pool_min: int = 2
    pool_max: int = 20
    projection_wait_s: float = 5.0
    log_level: str = "INFO"
    rate_limits: RateLimits = msgspec.field(default_factory=RateLimits)
    worker_concurrency: int = 4
    job_settings: dict[str, JobTypeTuning] = msgspec.field(default_factory=dict)
    reconcile_grace_s: float = 300.0
    reconcile_interval_s: float = 30.0
    credential_cache_s: float = 10.0  # 0: every request looks its credential up
    oidc: OidcSettings | None = None  # None: local password login
    # commands.secret_keys.MasterKeyring (ops/master_keys.py); None: no master key
    # configured, so the API refuses inline secrets.
    keyring: Any = None


class NotMigrated(RuntimeError):
    pass


async def require_migrated(database_url: str) -> None:
    conn = await connect(database_url, role=None, application_name="byteor-check")
    try:
        todo = await pending(conn)
    except MigrationError as exc:
        raise NotMigrated(str(exc)) from exc
    finally:
        await conn.close()
    if todo:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in todo)
        raise NotMigrated(f"migrations pending ({names}); run `byteor-cloud migrate` first")


def stop_event() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def run_api(rt: Runtime) -> None:
    from commands.credential_cache import CredentialCache
    from ops.app import create_app

    await require_migrated(rt.database_url)
    pool = await create_pool(
        rt.database_url,
        role=rt.db_role,
        min_size=rt.pool_min,
        max_size=rt.pool_max,
        application_name="byteor-api",
    )
    feed = PgFeed(pool)
    store = open_store(rt.database_url, size=rt.pool_max, role=rt.db_role)
    oidc = OidcClient(rt.oidc) if rt.oidc is not None else None
    # One per process: it caches the organizations' unwrapped data keys.
    cipher = SecretCipher(pool, rt.keyring) if rt.keyring is not None else None
    app = create_app(
        pool,
        feed,
        projection_wait_s=rt.projection_wait_s,
        rate_limits=rt.rate_limits,
        store=store,
        oidc=oidc,
        secret_cipher=cipher,
        object_store=object_store_of(rt),
        credential_cache=(
            CredentialCache(rt.database_url, role=rt.db_role, max_age_s=rt.credential_cache_s)
            if rt.credential_cache_s > 0
            else None
        ),
    )
    config = uvicorn.Config(
        app,
        host=rt.api_host,
        port=rt.api_port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    log.info("api listening", extra={"url": f"http://{rt.api_host}:{rt.api_port}"})
    try:
        await server.serve()
    finally:
        if oidc is not None:
            await oidc.close()
        await store.close()
        await pool.close()


async def _run_runner(rt: Runtime, runner: ProjectionRunner, stop: asyncio.Event) -> None:
    try:
        await runner.run(stop)
    finally:
        await runner.close()


async def run_projector(rt: Runtime) -> None:
    await require_migrated(rt.database_url)
    stop = stop_event()
    pool = await create_pool(
        rt.database_url,
        role=rt.db_role,
        min_size=1,
        max_size=4,
        application_name="byteor-projector",
    )
    listen = _with_role(rt)
    runner = ProjectionRunner(
        pool,
        PgFeed(pool, listen_dsn=listen),
        [
            TenancyProjection(),
            JobIndexProjection(),
            DraftProjection(),
            ConfigBundleProjection(),
            DeploymentProjection(),
        ],
        lease_dsn=listen,
    )
    log.info(
        "projector running",
        extra={"projections": ["tenancy", "job_index", "drafts", "config_bundles", "deployments"]},
    )
    try:
        await _run_runner(rt, runner, stop)
    finally:
        await pool.close()


async def run_relay(rt: Runtime) -> None:
    if rt.nats_url is None:
        raise SystemExit("the relay needs NATS: set BYTEOR_CLOUD_NATS_URL or start the stack")
    await require_migrated(rt.database_url)
    stop = stop_event()
    connected = await wait_for_nats(rt.nats_url, stop)
    if connected is None:
        return
    nc, js = connected
    pool = await create_pool(
        rt.database_url, role=rt.db_role, min_size=1, max_size=4, application_name="byteor-relay"
    )
    listen = _with_role(rt)
    runner = ProjectionRunner(
        pool, PgFeed(pool, listen_dsn=listen), [JetStreamPublisher(js)], lease_dsn=listen
    )
    log.info("relay running", extra={"nats": rt.nats_url})
    try:
        await _run_runner(rt, runner, stop)
    finally:
        await pool.close()
        with contextlib.suppress(Exception):
            await nc.drain()


async def run_worker(rt: Runtime) -> None:
    """The worker process: job consumers, dead-letter listener, reconciler, scheduler.

    Health and metrics are served on WORKER_BIND_ADDR. Job types consume once a
    handler is registered in HANDLERS (spec_ingest, deploy_bundle_build, ...
    arrive with their issues); the reconciler and the dead-letter listener run
    regardless, so no queued job is ever stranded. The scheduler queues the
    periodic jobs (retention, metering) once per period, however many workers
    run, for the job types that have a handler.
    """
    from litestar import Litestar

    from domain.schedule import DEFAULT_SCHEDULES
    from ops.health import healthz
    from ops.telemetry import metrics
    from workers.consumer import JobStore, run_workers
    from workers.reconciler import Reconciler
    from workers.scheduler import Scheduler
    from workers.streams import DEFAULT_JOB_TYPES, ensure, tuned

    stop = stop_event()
    if rt.nats_url is None:
        raise SystemExit("the worker needs NATS: set BYTEOR_CLOUD_NATS_URL or start the stack")
    await require_migrated(rt.database_url)
    connected = await wait_for_nats(rt.nats_url, stop)
    if connected is None:
        return
    nc, js = connected
    settings = await ensure(js, tuned(DEFAULT_JOB_TYPES, rt.job_settings))
    # Every consume loop may hold a connection for its handler and one for the store.
    size = max(4, rt.worker_concurrency + 2)
    pool = await create_pool(
        rt.database_url,
        role=rt.db_role,
        min_size=1,
        max_size=size,
        application_name="byteor-worker",
    )
    store = open_store(rt.database_url, size=size, role=rt.db_role)
    jobs = JobStore(store)
    handlers = {
        **HANDLERS,
        **{t: make(pool) for t, make in POOL_HANDLERS.items()},
        **{t: make(pool, rt) for t, make in RUNTIME_HANDLERS.items()},
    }
    app = Litestar(route_handlers=[healthz, metrics], logging_config=None)
    server = uvicorn.Server(
        uvicorn.Config(
            app, host=rt.worker_host, port=rt.worker_port, log_config=None, access_log=False
        )
    )
    # Our SIGINT/SIGTERM handlers (stop_event) stay in charge: uvicorn must not
    # capture the signals itself, and is told to exit when ``stop`` is set.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    log.info("worker running", extra={"url": f"http://{rt.worker_host}:{rt.worker_port}"})
    try:
        async with asyncio.TaskGroup() as group:
            serving = group.create_task(server.serve())
            group.create_task(
                run_workers(jobs, js, settings, handlers, stop, concurrency=rt.worker_concurrency)
            )
            reconciler = Reconciler(
                pool,
                jobs,
                js,
                job_types=handlers.keys(),
                grace_s=rt.reconcile_grace_s,
                interval_s=rt.reconcile_interval_s,
            )
            group.create_task(reconciler.run(stop))
            # Only job types with a handler: a queued job nobody consumes would be
            # republished by the reconciler every grace period, forever.
            scheduled = [s for s in DEFAULT_SCHEDULES if s.job_type in handlers]
            group.create_task(Scheduler(jobs, scheduled, settings).run(stop))
            await stop.wait()
            server.should_exit = True
            await serving
    finally:
        await _close_handlers(handlers.values())
        await store.close()
        await pool.close()
        with contextlib.suppress(Exception):
            await nc.drain()


async def _close_handlers(handlers: Iterable[Any]) -> None:
    """Let handlers that hold clients (object storage) close them.

    An unclosed HTTP session is reported by asyncio at exit as an error.
    """
    for handler in handlers:
        aclose = getattr(handler, "aclose", None)
        if aclose is None:
            continue
        try:
            await aclose()
        except Exception as exc:  # stopping anyway: note it, close the rest
            log.warning("closing a job handler failed: %s: %s", type(exc).__name__, exc)


# Job handlers by job type; each issue that brings a job type registers it here.
HANDLERS: dict[str, Any] = {}
# Job types whose handler needs the worker's database pool: built when it exists.
POOL_HANDLERS: dict[str, Callable[[asyncpg.Pool], Any]] = {
    "probe": Probe,
    "spec_ingest": spec_ingest_handler,
}


def object_store_of(rt: Runtime) -> ObjectStore | None:
    """The deploy bundles' object storage, when an S3 endpoint is configured."""
    if rt.s3_endpoint is None:
        return None
    return ObjectStore(
        endpoint_url=rt.s3_endpoint,
        access_key=rt.s3_access_key,
        secret_key=rt.s3_secret_key,
        bucket=rt.s3_bucket,
    )


def _deploy_build(pool: asyncpg.Pool, rt: Runtime) -> Any:
    return deploy_build_handler(
        pool,
        cipher=SecretCipher(pool, rt.keyring) if rt.keyring is not None else None,
        objects=object_store_of(rt),
        vault=VaultResolver.configured(rt.vault_addr, rt.vault_token),
    )


# Job types whose handler also needs the runtime's settings (keys, S3, Vault).
RUNTIME_HANDLERS: dict[str, Callable[[asyncpg.Pool, Runtime], Any]] = {
    "deploy_bundle_build": _deploy_build,
}


def _with_role(rt: Runtime) -> str:
    # LISTEN and lease sessions connect directly (not via the pool) on the same
    # DSN; schema.pg.connect gives them the same role and timeouts.
    return rt.database_url
