"""Real processes for the job engine's fault tests.

``JobRig`` runs ``byteor-cloud relay``, ``worker`` and ``projector`` as child
processes (``python -m ops.cli ...``) against one database and a NATS server
of the test's own, so a test may SIGKILL any of them, or stop and restart the
NATS server, without touching the session's shared services. Job settings are
shortened through ``BYTEOR_CLOUD_JOB_SETTINGS`` so a dead worker's message is
redelivered within seconds.

The workload is the built-in ``probe`` job type (workers/probe.py), whose
tables show every handler run and every effect; ``check_exactly_once`` turns
them and the job streams into the assertions every fault test makes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import nats
import pytest
from nats.js.errors import NotFoundError

from commands.pgstore import PgEventStore
from domain import job
from domain.codec import default_codec
from domain.envelope import Actor, Metadata
from ops.services.base import free_port
from ops.services.nats import Nats
from ops.stack import free_ports
from schema.pg import create_pool
from workers.enqueue import enqueue
from workers.probe import JOB_TYPE, probe_payload
from workers.streams import JOBS_STREAM

REPO = Path(__file__).resolve().parents[2]
ORG = uuid.UUID("44444444-4444-4444-8444-444444444444")
MAX_ATTEMPTS = 5
# A dead worker's message comes back after ack_wait (then the backoff entries,
# each at least ack_wait); failed attempts retry after 0.2 s, 0.4 s, ... 1 s.
PROBE_SETTINGS = {
    JOB_TYPE: {
        "ack_wait_s": 2.0,
        "max_attempts": MAX_ATTEMPTS,
        "backoff_base_s": 0.2,
        "backoff_cap_s": 1.0,
    }
}
OUTCOMES = {"job.completed", "job.retry_scheduled", "job.failed", "job.dead_lettered"}
FINISHED = {"job.completed", "job.failed", "job.dead_lettered"}
CODEC = default_codec()


class Proc:
    """One ``byteor-cloud <command>`` child process; its output goes to a log file."""

    def __init__(self, command: str, env: dict[str, str], log: Path) -> None:
        self.command = command
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.ended = False  # stopped or killed on purpose

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ops.cli", self.command],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def sigkill(self) -> None:
        assert self.proc is not None and self.alive, f"{self.command} is not running"
        self.ended = True
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        self.ended = True
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


@dataclass
class Runs:
    """What the probe tables and the job streams say about a batch of jobs."""

    runs: list[asyncpg.Record]
    effects: dict[uuid.UUID, asyncpg.Record]
    histories: dict[uuid.UUID, list[Any]]

    @property
    def died(self) -> list[asyncpg.Record]:
        """Runs that never recorded an outcome: their worker or database went away."""
        return [r for r in self.runs if r["outcome"] is None]

    def summary(self) -> str:
        outcomes: dict[str, int] = {}
        for r in self.runs:
            outcomes[str(r["outcome"])] = outcomes.get(str(r["outcome"]), 0) + 1
        started = sum(len(self.attempts(j)) for j in self.histories)
        return f"{len(self.histories)} jobs, {started} attempts started, runs by outcome {outcomes}"

    def attempts(self, job_id: uuid.UUID) -> list[int]:
        return [e.attempt for e in self.histories[job_id] if isinstance(e, job.JobStarted)]


class JobRig:
    """Relay, workers and projector as real processes on ``database`` and ``nats_url``."""

    def __init__(
        self, database: str, nats_server: Nats, home: Path, **env: str | float | int
    ) -> None:
        self.database = database
        self.nats = nats_server
        self.home = home
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BYTEOR_CLOUD_")} | {
            "BYTEOR_CLOUD_DATABASE_URL": database,
            "BYTEOR_CLOUD_NATS_URL": nats_server.url,
            "BYTEOR_CLOUD_HOME": str(home),
            "BYTEOR_CLOUD_LOG_LEVEL": "WARNING",
            "BYTEOR_CLOUD_LOG_FORMAT": "text",
            "BYTEOR_CLOUD_JOB_SETTINGS": json.dumps(PROBE_SETTINGS),
            "BYTEOR_CLOUD_WORKER_CONCURRENCY": "4",
            # Messages are never lost in these tests unless the test loses them.
            "BYTEOR_CLOUD_RECONCILE_GRACE_S": "120",
            "BYTEOR_CLOUD_RECONCILE_INTERVAL_S": "1",
        }
        self.env |= {f"BYTEOR_CLOUD_{k.upper()}": str(v) for k, v in env.items()}
        self.procs: list[Proc] = []
        self.pool: asyncpg.Pool | None = None
        self.store: PgEventStore | None = None

    def process(self, command: str) -> Proc:
        env = dict(self.env)
        if command == "worker":
            env["BYTEOR_CLOUD_WORKER_BIND_ADDR"] = f"127.0.0.1:{free_port()}"
        proc = Proc(command, env, self.home / f"{command}-{len(self.procs)}.log")
        proc.start()
        self.procs.append(proc)
        return proc

    async def open(self) -> None:
        self.pool = await create_pool(self.database, min_size=1, max_size=8)
        self.store = PgEventStore(self.pool)

    async def close(self) -> None:
        for proc in self.procs:
            proc.stop()
        if self.store is not None:
            await self.store.notifier.close()
        if self.pool is not None:
            await self.pool.close()

    def check_running(self) -> None:
        """Fail at once if a process exited that the test did not stop."""
        gone = [p for p in self.procs if not p.ended and p.proc and p.proc.poll() is not None]
        if gone:
            pytest.fail(f"{', '.join(p.command for p in gone)} exited\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(f"--- {p.log.name}\n{p.tail()}" for p in self.procs)

    async def enqueue(self, count: int, **options: Any) -> list[uuid.UUID]:
        """``count`` probes, each in its own transaction, 50 at a time."""
        assert self.store is not None
        store = self.store
        payload = probe_payload(**options)
        meta = Metadata(
            actor=Actor(kind="system", id="fault-test"), tenant_id=ORG, correlation_id=uuid.uuid4()
        )

        async def one() -> uuid.UUID:
            job_id, _ = await enqueue(
                store, meta, job_type=JOB_TYPE, payload=payload, max_attempts=MAX_ATTEMPTS
            )
            return job_id

        ids: list[uuid.UUID] = []
        while len(ids) < count:
            ids += await asyncio.gather(*(one() for _ in range(min(50, count - len(ids)))))
        return ids

    async def scalar(self, sql: str, *args: Any) -> Any:
        assert self.pool is not None
        return await self.pool.fetchval(sql, *args)

    async def finished(self, ids: list[uuid.UUID]) -> int:
        """How many of ``ids`` are completed, failed or dead-lettered, by their streams."""
        assert self.pool is not None
        rows = await self.pool.fetch(
            """
            SELECT DISTINCT ON (stream_id) event_type FROM events
            WHERE stream_id = ANY($1::text[]) ORDER BY stream_id, stream_version DESC
            """,
            [job.stream_id(i) for i in ids],
        )
        return sum(1 for r in rows if r["event_type"] in FINISHED)

    async def wait_finished(self, ids: list[uuid.UUID], within: float) -> None:
        deadline = time.monotonic() + within
        while (done := await self.finished(ids)) < len(ids):
            self.check_running()
            if time.monotonic() > deadline:
                dead = [p.command for p in self.procs if p.proc and p.proc.poll() is not None]
                pytest.fail(
                    f"{done}/{len(ids)} jobs finished after {within}s "
                    f"(exited: {dead})\n{self.logs()}"
                )
            await asyncio.sleep(0.2)

    async def wait_until(self, sql: str, at_least: int, within: float = 30.0) -> int:
        deadline = time.monotonic() + within
        while (value := int(await self.scalar(sql) or 0)) < at_least:
            self.check_running()
            if time.monotonic() > deadline:
                pytest.fail(f"{sql!r} = {value} < {at_least} after {within}s\n{self.logs()}")
            await asyncio.sleep(0.02)
        return value

    async def jobs_in_stream(self) -> int:
        """Messages in the JOBS stream (0 before the relay created it)."""
        nc = await nats.connect(self.nats.url)
        try:
            info = await nc.jetstream().stream_info(JOBS_STREAM)
            return int(info.state.messages)
        except NotFoundError:
            return 0
        finally:
            await nc.close()

    async def runs(self, ids: list[uuid.UUID]) -> Runs:
        assert self.pool is not None and self.store is not None
        runs = await self.pool.fetch("SELECT * FROM probe_runs ORDER BY run_id")
        effects = {r["job_id"]: r for r in await self.pool.fetch("SELECT * FROM probe_effects")}
        histories = {}
        for job_id in ids:
            recorded = await self.store.read_stream(job.stream_id(job_id))
            histories[job_id] = [CODEC.decode_recorded(r) for r in recorded]
        return Runs(runs=runs, effects=effects, histories=histories)

    async def check_exactly_once(self, ids: list[uuid.UUID]) -> Runs:
        """Every job completed once and has exactly one effect, written by one run.

        A run that found the effect already there is allowed only after the run
        that wrote it died before its outcome was recorded: the window between
        a handler's effect and ``job.completed`` that no at-least-once engine
        can close (decision 0004), which the handler covers by being idempotent.
        """
        seen = await self.runs(ids)
        by_id = {r["run_id"]: r for r in seen.runs}
        assert sorted(seen.effects) == sorted(ids), "an effect is missing or extra"
        keys = [(r["job_id"], r["generation"], r["attempt"]) for r in seen.runs]
        assert len(keys) == len(set(keys)), "one attempt ran its handler twice"
        assert {r["job_id"] for r in seen.runs} <= set(ids)
        for job_id in ids:
            history = seen.histories[job_id]
            types = [e.__class__.__name__ for e in history]
            assert types.count("JobCompleted") == 1, (job_id, types)
            assert isinstance(history[-1], job.JobCompleted), (job_id, types)
            assert types.count("JobFailed") == types.count("JobDeadLettered") == 0, types
            effect = seen.effects[job_id]
            writer = by_id[effect["run_id"]]
            assert writer["job_id"] == job_id
            assert (writer["generation"], writer["attempt"]) == (
                effect["generation"],
                effect["attempt"],
            )
            recorded = _outcomes(history)
            for run in seen.runs:
                if run["job_id"] != job_id or run["outcome"] != "effect_existed":
                    continue
                assert writer["outcome"] == "effect", "the effect's run finished otherwise"
                assert (writer["generation"], writer["attempt"]) not in recorded, (
                    f"job {job_id}: run {run['run_id']} found the effect of run "
                    f"{writer['run_id']}, whose attempt had an outcome: a duplicate run"
                )
        return seen


def _outcomes(history: list[Any]) -> set[tuple[int, int]]:
    """(generation, attempt) of every attempt whose outcome the job stream records."""
    generation = 0
    out: set[tuple[int, int]] = set()
    for event in history:
        if isinstance(event, job.JobRequeued | job.JobRepublished):
            generation = event.generation
        elif isinstance(
            event, job.JobCompleted | job.JobRetryScheduled | job.JobFailed | job.JobDeadLettered
        ):
            out.add((generation, event.attempt))
    return out


@pytest.fixture
def own_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nats]:
    """A NATS server of this test's own: it may be stopped, restarted or wiped."""
    port, monitor_port = free_ports(2)
    server = Nats(tmp_path_factory.mktemp("nats-fault"), port, monitor_port)
    server.start()
    try:
        yield server
    finally:
        server.stop(grace=5)


@pytest.fixture
async def rig(database: str, own_nats: Nats, tmp_path: Path) -> AsyncIterator[JobRig]:
    r = JobRig(database, own_nats, tmp_path / "home")
    await r.open()
    try:
        yield r
    finally:
        await r.close()
