"""``byteor-cloud``: the operator's command line.

    byteor-cloud up                     embedded stack + migrate + api, projector, relay, worker
    byteor-cloud api|projector|relay|worker
    byteor-cloud migrate
    byteor-cloud stack start|stop|status
    byteor-cloud admin create-user --email E --org NAME [--password-stdin]
    byteor-cloud jobs list [--org ID] [--state S] [--type T] [--limit N]
    byteor-cloud jobs show ID
    byteor-cloud jobs retry ID
    byteor-cloud jobs probe [--count N] [--sleep-ms MS] [--fail transient|permanent]
    byteor-cloud keys rotate [--new-data-keys] | keys status

Configuration comes from BYTEOR_CLOUD_* variables (ops/config.py). Any service
URL left unset is taken from the embedded stack under BYTEOR_CLOUD_HOME.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from ops.config import ConfigError, Settings


class CliError(Exception):
    """A failure the operator can act on: printed without a traceback, exit 2."""


def resolve_runtime(settings: Settings) -> Any:
    """Settings with every unset service URL (and its credentials) taken from the stack."""
    from commands.ratelimit import RateLimits
    from ops.processes import Runtime
    from ops.stack import Stack

    stack = Stack.load(settings.home)
    if stack is not None:
        settings = settings.with_stack(stack.state)
    if settings.database_url is None:
        raise CliError(
            "no database: set BYTEOR_CLOUD_DATABASE_URL, or start the embedded stack "
            "(`byteor-cloud stack start` or `make run`)"
        )
    api_host, api_port = settings.api_bind
    worker_host, worker_port = settings.worker_bind
    return Runtime(
        database_url=settings.database_url,
        nats_url=settings.nats_url,
        s3_endpoint=settings.s3_endpoint,
        s3_access_key=settings.s3_access_key,
        s3_secret_key=settings.s3_secret_key,
        s3_bucket=settings.s3_bucket,
        vault_addr=settings.vault_addr,
        vault_token=settings.vault_token,
        api_host=api_host,
        api_port=api_port,
        worker_host=worker_host,
        worker_port=worker_port,
        db_role=settings.db_role,
        pool_min=settings.db_pool_min,
        pool_max=settings.db_pool_max,
        projection_wait_s=settings.projection_wait_max_ms / 1000,
        log_level=settings.log_level,
        rate_limits=RateLimits(
            default=settings.rate_limit_per_minute,
            auth=settings.rate_limit_auth_per_minute,
            enrollment=settings.rate_limit_enrollment_per_minute,
            artifact=settings.rate_limit_artifact_per_minute,
            window_s=settings.rate_limit_window_s,
        ),
        worker_concurrency=settings.worker_concurrency,
        job_settings=settings.job_settings,
        reconcile_grace_s=settings.reconcile_grace_s,
        reconcile_interval_s=settings.reconcile_interval_s,
        credential_cache_s=settings.credential_cache_s,
        oidc=oidc_settings(settings),
    )


def _keyring_or_none(settings: Settings) -> Any:
    """The master keys, or None when none are configured for an external database:
    the API then runs and refuses inline secrets (503)."""
    import logging

    from ops.master_keys import keyring_for

    try:
        return keyring_for(settings)
    except ConfigError as exc:
        logging.getLogger("byteor.cli").warning(f"{exc}; inline secrets are refused")
        return None


def oidc_settings(settings: Settings) -> Any:
    """The OpenID provider's client settings, or None when no issuer is configured."""
    from commands.oidc_client import OidcSettings

    if settings.oidc_issuer is None:
        return None
    assert settings.oidc_client_id is not None and settings.oidc_redirect_url is not None
    return OidcSettings(
        issuer=settings.oidc_issuer,
        client_id=settings.oidc_client_id,
        client_secret=settings.oidc_client_secret,
        redirect_url=settings.oidc_redirect_url,
    )


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    # libuv's event loop: the services spend much of their CPU in the loop
    # itself (socket reads and writes for PostgreSQL, NATS and HTTP).
    import uvloop

    try:
        return uvloop.run(coro)
    except KeyboardInterrupt:
        return None


def _process(name: str) -> Callable[[Settings, argparse.Namespace], int]:
    def command(settings: Settings, args: argparse.Namespace) -> int:
        import msgspec

        from ops import processes
        from ops.gc_tuning import tune_for_service
        from ops.logs import configure

        configure(name, level=settings.log_level, fmt=settings.log_format)
        rt = resolve_runtime(settings)
        if name in ("api", "worker"):
            # The settings as given (before the stack's URLs): with the embedded
            # database and no configured key, its generated key file is used.
            rt = msgspec.structs.replace(rt, keyring=_keyring_or_none(settings))
        entry = getattr(processes, f"run_{name}")
        tune_for_service()
        try:
            _run(entry(rt))
        except processes.NotMigrated as exc:
            raise CliError(str(exc)) from exc
        return 0

    return command


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from schema.migrate import migrate_dsn

    rt = resolve_runtime(settings)
    applied = _run(migrate_dsn(rt.database_url))
    if applied:
        for m in applied:
            print(f"applied {m.version:04d}_{m.name}")
    else:
        print("schema is up to date")
    return 0


def cmd_stack(settings: Settings, args: argparse.Namespace) -> int:
    from ops.stack import services_needed, stack_status, start_stack, stop_stack

    if args.action == "start":
        status = start_stack(settings.home, services_needed(settings))
    elif args.action == "stop":
        status = stop_stack(settings.home)
    else:
        status = stack_status(settings.home)
    print(json.dumps(status, indent=2, default=str))
    return 0


def read_password(stream: Any) -> str:
    """The password on standard input: its first line, without the line ending."""
    line: str = stream.readline()
    password = line.removesuffix("\n").removesuffix("\r")
    if not password:
        raise CliError("--password-stdin: no password on standard input")
    return password


def cmd_create_user(settings: Settings, args: argparse.Namespace) -> int:
    from commands.bootstrap import create_user
    from domain.errors import DomainError
    from schema.pg import create_pool

    password = read_password(sys.stdin) if args.password_stdin else None
    rt = resolve_runtime(settings)

    async def go() -> Any:
        from ops.processes import require_migrated

        await require_migrated(rt.database_url)
        pool = await create_pool(rt.database_url, role=rt.db_role, min_size=1, max_size=2)
        try:
            return await create_user(
                pool, email=args.email, org_name=args.org, now=datetime.now(UTC), password=password
            )
        finally:
            await pool.close()

    try:
        made = asyncio.run(go())
    except DomainError as exc:
        detail = "; ".join(f"{e.path}: {e.message}" for e in exc.errors) or exc.detail
        raise CliError(f"invalid input: {detail}") from exc
    print(f"user_id:  {made.user_id}" + ("" if made.created_user else "  (existing user)"))
    print(f"org_id:   {made.org_id}")
    print(f"token:    {made.token}")
    if password is not None:
        print("password: set (log in with POST /auth/login)")
    print("This personal access token is shown once; store it now. Use it as")
    print("  Authorization: Bearer <token>")
    return 0


def _table(headers: list[str], rows: list[list[str]]) -> str:
    """Rows under their headers, columns padded to their widest cell."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(headers, widths, strict=True)).rstrip()]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _uuid_arg(value: str) -> Any:
    import uuid

    try:
        return uuid.UUID(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a UUID: {value!r}") from None


def _positive_int(value: str) -> int:
    try:
        number = int(value, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _with_pool(settings: Settings, work: Callable[[Any], Coroutine[Any, Any, Any]]) -> Any:
    from schema.pg import create_pool

    rt = resolve_runtime(settings)

    async def go() -> Any:
        from ops.processes import NotMigrated, require_migrated

        try:
            await require_migrated(rt.database_url)
        except NotMigrated as exc:
            raise CliError(str(exc)) from exc
        pool = await create_pool(rt.database_url, role=rt.db_role, min_size=1, max_size=2)
        try:
            return await work(pool)
        finally:
            await pool.close()

    return asyncio.run(go())


def cmd_jobs_list(settings: Settings, args: argparse.Namespace) -> int:
    from domain.job import STATUSES

    if args.state is not None and args.state not in STATUSES:
        raise CliError(f"--state: one of {', '.join(STATUSES)}")

    async def work(pool: Any) -> Any:
        return await pool.fetch(
            """
            SELECT * FROM job_index
            WHERE ($1::uuid IS NULL OR org_id = $1)
              AND ($2::text IS NULL OR status = $2)
              AND ($3::text IS NULL OR job_type = $3)
            ORDER BY created_at DESC, job_id LIMIT $4
            """,
            args.org,
            args.state,
            args.type,
            args.limit,
        )

    rows = _with_pool(settings, work)
    if not rows:
        print("no jobs")
        return 0
    print(
        _table(
            ["JOB", "TYPE", "STATE", "GEN", "ORG", "CREATED", "UPDATED"],
            [
                [
                    str(r["job_id"]),
                    r["job_type"],
                    r["status"],
                    str(r["generation"]),
                    str(r["org_id"] or "-"),
                    _when(r["created_at"]),
                    _when(r["updated_at"]),
                ]
                for r in rows
            ],
        )
    )
    return 0


def cmd_jobs_show(settings: Settings, args: argparse.Namespace) -> int:
    async def work(pool: Any) -> Any:
        row = await pool.fetchrow("SELECT * FROM job_index WHERE job_id = $1", args.job_id)
        attempts = await pool.fetch(
            "SELECT * FROM job_attempts WHERE job_id = $1 ORDER BY generation, attempt",
            args.job_id,
        )
        return row, attempts

    row, attempts = _with_pool(settings, work)
    if row is None:
        raise CliError(f"job {args.job_id} not found (in the job index)")
    print(f"job:         {row['job_id']}")
    print(f"type:        {row['job_type']}")
    print(f"state:       {row['status']}")
    print(f"generation:  {row['generation']}")
    print(f"org:         {row['org_id'] or '-'}")
    print(f"created:     {_when(row['created_at'])}")
    print(f"updated:     {_when(row['updated_at'])}")
    print(f"due:         {_when(row['due_at'])}")
    if not attempts:
        print("attempts:    none")
        return 0
    print("attempts:")
    print(
        _table(
            ["GEN", "ATTEMPT", "STARTED", "FINISHED", "OUTCOME", "ERROR"],
            [
                [
                    str(a["generation"]),
                    str(a["attempt"]),
                    _when(a["started_at"]),
                    _when(a["finished_at"]),
                    a["outcome"] or "-",
                    f"{a['error_class']}: {a['error_message']}" if a["error_class"] else "-",
                ]
                for a in attempts
            ],
        )
    )
    return 0


def cmd_jobs_retry(settings: Settings, args: argparse.Namespace) -> int:
    """Re-queue a dead_letter/failed job from its stream (not the read table),
    audited as job.requeued with a system actor naming the operator's login."""
    import getpass
    import uuid

    from commands.pgstore import PgEventStore
    from domain import job as job_mod
    from domain.codec import default_codec
    from domain.envelope import Actor, Metadata
    from domain.errors import DomainError

    actor = Actor(kind="system", id=f"cli:{getpass.getuser()}")

    async def work(pool: Any) -> Any:
        store = PgEventStore(pool)
        codec = default_codec()
        records = await store.read_stream(job_mod.stream_id(args.job_id))
        state = job_mod.fold(codec.decode_recorded(r) for r in records)
        version = records[-1].stream_version if records else 0
        job, append = job_mod.requeue_append(state, version, by=actor.id)
        meta = Metadata(
            actor=actor,
            tenant_id=records[0].tenant_id,
            correlation_id=uuid.uuid4(),
            recorded_at=datetime.now(UTC),
        )
        await store.append([append], meta)
        return job

    try:
        job = _with_pool(settings, work)
    except DomainError as exc:
        raise CliError(f"cannot retry job {args.job_id}: {exc.detail} ({exc.code})") from exc
    print(f"job {job.id} ({job.job_type}) re-queued as generation {job.generation}")
    return 0


def _progress(label: str) -> Callable[[int, int], None]:
    """A progress bar on stderr (one line per update when stderr is not a terminal)."""
    tty = sys.stderr.isatty()

    def show(done: int, total: int) -> None:
        width = 30
        filled = width if total == 0 else width * done // total
        line = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label}"
        if tty:
            print("\r" + line, end="\n" if done >= total else "", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    return show


def cmd_keys_rotate(settings: Settings, args: argparse.Namespace) -> int:
    """Re-wrap every data key under the current master key; optionally fresh data keys."""
    from commands import key_rotation
    from ops.master_keys import keyring_for

    keyring = keyring_for(settings)

    async def work(pool: Any) -> Any:
        report = await key_rotation.rewrap(
            pool, keyring, batch_size=args.batch_size, progress=_progress("data keys re-wrapped")
        )
        fresh = None
        if args.new_data_keys:
            fresh = await key_rotation.new_data_keys(
                pool, keyring, progress=_progress("organizations with a fresh data key")
            )
        return report, fresh

    report, fresh = _with_pool(settings, work)
    print(f"current master key: {report.master_key_id}")
    print(f"re-wrapped: {report.rewrapped} data keys")
    if fresh is not None:
        print(f"fresh data keys: {fresh} organizations (old data keys kept for decryption)")
    for master_id, count in sorted(report.unavailable.items()):
        print(f"not re-wrapped: {count} data keys under master key {master_id!r}, not configured")
    if report.corrupt:
        print(f"not re-wrapped: {len(report.corrupt)} data keys whose wrap does not authenticate:")
        for key_id in report.corrupt:
            print(f"  {key_id}")
    if not report.complete:
        raise CliError("rotation incomplete: configure the missing master keys and run it again")
    return 0


def cmd_keys_status(settings: Settings, args: argparse.Namespace) -> int:
    """Data keys per master key id, and which master keys this configuration has."""
    from commands import key_rotation
    from ops.master_keys import keyring_for

    try:
        keyring = keyring_for(settings, create=False)
        configured: tuple[str, ...] = keyring.ids
    except ConfigError as exc:
        print(f"warning: {exc}", file=sys.stderr)
        configured = ()
    rows = _with_pool(settings, key_rotation.usage)
    seen = {r.master_key_id for r in rows}
    table = [
        [
            r.master_key_id,
            _configured(r.master_key_id, configured),
            str(r.data_keys),
            str(r.current_data_keys),
            str(r.orgs),
        ]
        for r in rows
    ] + [[k, _configured(k, configured), "0", "0", "0"] for k in configured if k not in seen]
    if not table:
        print("no master keys configured and no data keys")
        return 0
    print(_table(["MASTER KEY", "CONFIGURED", "DATA KEYS", "CURRENT", "ORGS"], table))
    stale = sum(r.data_keys for r in rows if configured and r.master_key_id != configured[0])
    if stale:
        print(f"{stale} data keys are not under the current master key: run `keys rotate`")
    return 0


def _configured(master_key_id: str, configured: tuple[str, ...]) -> str:
    if not configured:
        return "?"
    if master_key_id == configured[0]:
        return "current"
    return "yes" if master_key_id in configured else "NO"


def cmd_jobs_probe(settings: Settings, args: argparse.Namespace) -> int:
    """Enqueue probe jobs (workers/probe.py) and wait until a worker has run them all."""
    import getpass
    import time
    import uuid

    import msgspec

    from commands.pgstore import PgEventStore
    from domain.envelope import Actor, Metadata
    from workers.enqueue import enqueue
    from workers.probe import JOB_TYPE, probe_payload
    from workers.streams import DEFAULT_JOB_TYPES

    if args.count < 1:
        raise CliError("--count: must be at least 1")
    try:
        payload = probe_payload(sleep_ms=args.sleep_ms, fail=args.fail)
    except msgspec.ValidationError as exc:
        raise CliError(f"--sleep-ms: {exc}") from None
    # The job's budget must match the consumer's max_deliver (the worker's settings).
    attempts = next(s.max_attempts for s in DEFAULT_JOB_TYPES if s.job_type == JOB_TYPE)
    tuning = settings.job_settings.get(JOB_TYPE)
    if tuning is not None and tuning.max_attempts is not None:
        attempts = tuning.max_attempts
    meta = Metadata(
        actor=Actor(kind="system", id=f"cli:{getpass.getuser()}"),
        tenant_id=None,
        correlation_id=uuid.uuid4(),
    )

    async def work(pool: Any) -> tuple[dict[str, int], float]:
        store = PgEventStore(pool)
        started = time.monotonic()
        try:
            ids = []
            for _ in range(args.count):
                job_id, _ = await enqueue(
                    store, meta, job_type=JOB_TYPE, payload=payload, max_attempts=attempts
                )
                ids.append(job_id)
            streams = [f"job-{i}" for i in ids]
            while True:
                rows = await pool.fetch(
                    """
                    SELECT DISTINCT ON (stream_id) event_type FROM events
                    WHERE stream_id = ANY($1::text[]) ORDER BY stream_id, stream_version DESC
                    """,
                    streams,
                )
                last: dict[str, int] = {}
                for r in rows:
                    last[r["event_type"]] = last.get(r["event_type"], 0) + 1
                finished = sum(
                    n
                    for t, n in last.items()
                    if t in ("job.completed", "job.failed", "job.dead_lettered")
                )
                if finished == len(ids) or time.monotonic() - started > args.timeout:
                    return last, time.monotonic() - started
                await asyncio.sleep(0.1)
        finally:
            await store.notifier.close()

    last, elapsed = _with_pool(settings, work)
    shown = ", ".join(f"{t.removeprefix('job.')}: {n}" for t, n in sorted(last.items()))
    print(f"{args.count} probe jobs after {elapsed:.1f}s: {shown}")
    if last.get("job.completed", 0) == args.count:
        return 0
    if args.fail is None:
        raise CliError(
            "not every probe completed; is a worker running? "
            "(`byteor-cloud jobs list --type probe`)"
        )
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    import httpx

    from ops.agent_sim import SimError
    from ops.demo import DemoError, demo

    rt = resolve_runtime(settings)
    api = f"http://{rt.api_host}:{rt.api_port}"
    try:
        return int(_run(demo(rt.database_url, rt.db_role, api, args)) or 0)
    except (DemoError, SimError, httpx.HTTPError) as exc:
        raise CliError(f"demo: {exc} (is `make run` up?)") from exc


def cmd_agent_simulate(settings: Settings, args: argparse.Namespace) -> int:
    from ops.agent_sim import run_cli

    return run_cli(args, args.token or os.environ.get("BYTEOR_CLOUD_TOKEN"))


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from ops.up import run_up

    return run_up(settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="byteor-cloud",
        description="ByteOr Cloud control plane: API, projections, relay, workers and operations.",
        epilog="Configuration: BYTEOR_CLOUD_* environment variables (see README).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser(
        "up",
        help="start the embedded stack, migrate, and run every process in the foreground",
        description="Start PostgreSQL, NATS, S3 and Vault (unless external URLs are set), "
        "apply migrations, then run api, projector, relay and worker until Ctrl-C.",
    )
    up.set_defaults(func=cmd_up)
    for name, text in [
        ("api", "serve the HTTP API (BYTEOR_CLOUD_API_BIND_ADDR, default 127.0.0.1:8080)"),
        ("projector", "keep the read models up to date (one active per projection)"),
        ("relay", "publish the event feed to NATS JetStream (events.<org>.<type>.<event>)"),
        ("worker", "run background job consumers (BYTEOR_CLOUD_WORKER_BIND_ADDR)"),
    ]:
        p = sub.add_parser(name, help=text, description=text)
        p.set_defaults(func=_process(name))
    migrate = sub.add_parser(
        "migrate",
        help="apply pending schema migrations",
        description="Apply schema/migrations "
        "in order, in one transaction under an advisory lock; a no-op when up to date.",
    )
    migrate.set_defaults(func=cmd_migrate)

    stack = sub.add_parser(
        "stack",
        help="manage the embedded PostgreSQL/NATS/S3/Vault stack",
        description="The embedded stack lives under BYTEOR_CLOUD_HOME (default ./.byteor).",
    )
    stack.add_argument("action", choices=["start", "stop", "status"])
    stack.set_defaults(func=cmd_stack)

    admin = sub.add_parser("admin", help="administrative commands")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True, metavar="COMMAND")
    create = admin_sub.add_parser(
        "create-user",
        help="create a user and an organization they administer; print a token once",
        description="Creates the user (or reuses one with this e-mail), a new organization "
        "with the user as org_admin, and prints a personal access token once.",
    )
    create.add_argument("--email", required=True, help="the user's e-mail address")
    create.add_argument("--org", required=True, help="name of the organization to create")
    create.add_argument(
        "--password-stdin",
        action="store_true",
        help="read a local login password (first line of standard input) and store its "
        "scrypt hash; log in with POST /auth/login",
    )
    create.set_defaults(func=cmd_create_user)

    jobs = sub.add_parser(
        "jobs",
        help="inspect and re-queue background jobs",
        description="Read the job index and attempt history, or re-queue a dead-lettered "
        "or failed job; works directly on the database (BYTEOR_CLOUD_DATABASE_URL or the "
        "embedded stack).",
    )
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True, metavar="COMMAND")
    jobs_list = jobs_sub.add_parser(
        "list", help="list jobs, newest first", description="List jobs, newest first."
    )
    jobs_list.add_argument("--org", type=_uuid_arg, help="only this organization's jobs")
    jobs_list.add_argument("--state", help="only jobs in this state (e.g. dead_letter)")
    jobs_list.add_argument("--type", help="only jobs of this type")
    jobs_list.add_argument("--limit", type=int, default=100, help="at most N jobs (default 100)")
    jobs_list.set_defaults(func=cmd_jobs_list)
    jobs_show = jobs_sub.add_parser(
        "show",
        help="one job and its attempt history",
        description="One job from the job index with every attempt of every generation.",
    )
    jobs_show.add_argument("job_id", metavar="ID", type=_uuid_arg, help="the job's id")
    jobs_show.set_defaults(func=cmd_jobs_show)
    jobs_retry = jobs_sub.add_parser(
        "retry",
        help="re-queue a dead_letter or failed job",
        description="Append job.requeued (a new generation with a fresh attempt budget); "
        "the relay publishes it to jobs.<type>. Refused for any other state.",
    )
    jobs_retry.add_argument("job_id", metavar="ID", type=_uuid_arg, help="the job's id")
    jobs_retry.set_defaults(func=cmd_jobs_retry)
    jobs_probe = jobs_sub.add_parser(
        "probe",
        help="run diagnostic probe jobs end to end and wait for them",
        description="Enqueue N probe jobs through the event store (the relay publishes "
        "them, a worker runs them; each records its run and one effect in probe_runs and "
        "probe_effects) and wait until all have finished. Exit 2 if any did not complete.",
    )
    jobs_probe.add_argument("--count", type=int, default=1, help="how many probes (default 1)")
    jobs_probe.add_argument(
        "--sleep-ms", type=int, default=0, help="each probe holds its attempt this long"
    )
    jobs_probe.add_argument(
        "--fail",
        choices=["transient", "permanent"],
        help="make every attempt fail (to see retries and dead letters, or failed)",
    )
    jobs_probe.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait (default 60)"
    )
    jobs_probe.set_defaults(func=cmd_jobs_probe)

    keys = sub.add_parser(
        "keys",
        help="master keys and per-organization data keys of inline secrets",
        description="Inline secrets are encrypted with per-organization data keys, which are "
        "stored wrapped by a master key (BYTEOR_CLOUD_MASTER_KEYS or "
        "BYTEOR_CLOUD_MASTER_KEY_FILE; the first key is current). Key material is never shown.",
    )
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    keys_rotate = keys_sub.add_parser(
        "rotate",
        help="re-wrap every data key under the current master key",
        description="Re-wrap every data key not yet under the current (first configured) "
        "master key, in batches, while the system runs; idempotent. Configure the new key "
        "first and keep the old ones until this has finished (see `keys status`).",
    )
    keys_rotate.add_argument(
        "--new-data-keys",
        action="store_true",
        help="also give every organization a fresh current data key (old ones are kept "
        "to decrypt what they encrypted)",
    )
    keys_rotate.add_argument(
        "--batch-size",
        type=_positive_int,
        default=200,
        help="data keys per transaction (default 200)",
    )
    keys_rotate.set_defaults(func=cmd_keys_rotate)
    keys_status = keys_sub.add_parser(
        "status",
        help="data keys per master key id",
        description="Count data keys (all, current, organizations) per master key id and "
        "show which master keys are configured; no key material.",
    )
    keys_status.set_defaults(func=cmd_keys_status)

    agent = sub.add_parser(
        "agent",
        help="the reference agent",
        description="A reference ByteOr agent speaking the agent protocol over HTTP.",
    )
    agent_sub = agent.add_subparsers(dest="agent_command", required=True, metavar="COMMAND")
    simulate = agent_sub.add_parser(
        "simulate",
        help="enroll N simulated agents and heartbeat from one process",
        description="Enroll --count agents in one environment (one single-use enrollment "
        "token each: given, or minted with --token), then heartbeat each every --interval "
        "seconds for --duration seconds from one asyncio process over keep-alive "
        "connections. Progress on stderr; the last line is a JSON summary (sent, errors, "
        "p50/p99 latency). Exit 1 if any heartbeat failed.",
    )
    from ops.agent_sim import add_arguments as add_simulate_arguments

    add_simulate_arguments(simulate)
    simulate.set_defaults(func=cmd_agent_simulate)

    demo = sub.add_parser(
        "demo",
        help="demo data on a running stack: a user, a deployment and agents that activate it",
        description="With `make run` up: creates a user and organization (token printed "
        "once), a project, a dev environment, a signing key, a validated draft, a version, "
        "a config bundle with an inline secret, --agents simulated agents and a deployment "
        "they download, verify offline and activate. The last line is a JSON summary.",
    )
    from ops.demo import add_arguments as add_demo_arguments

    add_demo_arguments(demo)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        return int(args.func(settings, args))
    except ConfigError as exc:
        print(f"byteor-cloud: configuration error: {exc}", file=sys.stderr)
        return 2
    except CliError as exc:
        print(f"byteor-cloud: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
