"""Agents benchmark: heartbeat load from many simulated agents (issue 6, DOMAIN.md §6).

    python -m ops.bench.agents [--agents 1000] [--duration 60] [--interval 1.0]
                               [--warmup 3] [--connections 64]

Starts its own PostgreSQL (the server's default durability) in a temporary
directory, migrates it, and runs the API as a real ``byteor-cloud api``
process (its CPU measured with psutil; the load generator does not share its
event loop). This process then creates a user, project and environment,
mints one enrollment token per agent and enrolls ``--agents`` agents through
the API (the enrollment rate limit raised for the bench; the default class
limit is left as configured: 600 a minute per agent, which one heartbeat a
second fits), and heartbeats every agent every ``--interval`` seconds
(ops/agent_sim.py: one asyncio loop; HTTP/1.1 keep-alive over at most
``--connections`` connections, ops/http_lanes.py, since httpx's CPU per
request made the load process the bottleneck; each agent at its own phase of
the interval).

The first ``--warmup`` seconds are left out; during the next ``--duration``
seconds it measures each heartbeat's latency (request sent → response read,
in the load process), the CPU of the API process, of PostgreSQL (postmaster
and backends) and of the load process as % of one core, and the events
appended (rows of ``events`` before and after; heartbeats must append none).
Target: p99 < 50 ms. The machine may be shared with other work, so figures
are as measured. The last line is one JSON object::

    {"bench": "agents", "agents": ..., "heartbeat_p99_ms": ..., "events_appended": ...}
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil

from commands.bootstrap import create_user
from ops import agent_sim
from ops.http_lanes import Lanes
from ops.services.base import free_port
from ops.services.postgres import Postgres
from schema.migrate import migrate_dsn
from schema.pg import create_pool

REPO = Path(__file__).resolve().parents[2]
TARGET_P99_MS = 50.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Stack:
    """PostgreSQL in a temp dir and the API as its own process."""

    def __init__(self, *, no_fsync: bool = False) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="byteor-bench-agents-"))
        fast = {"fsync": "off", "synchronous_commit": "off"} if no_fsync else None
        self.pg = Postgres(self.tmp / "pg", free_port(), settings=fast)
        self.port = free_port()
        self.api: subprocess.Popen[bytes] | None = None
        self.dsn = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log("starting PostgreSQL ...")
        self.pg.start()
        self.pg.create_database("bench")
        self.dsn = self.pg.dsn("bench")
        asyncio.run(migrate_dsn(self.dsn))
        env = {k: v for k, v in os.environ.items() if not k.startswith("BYTEOR_CLOUD_")} | {
            "BYTEOR_CLOUD_DATABASE_URL": self.dsn,
            "BYTEOR_CLOUD_HOME": str(self.tmp / "home"),
            "BYTEOR_CLOUD_API_BIND_ADDR": f"127.0.0.1:{self.port}",
            "BYTEOR_CLOUD_LOG_LEVEL": "WARNING",
            "BYTEOR_CLOUD_LOG_FORMAT": "text",
            # Setting up a thousand agents goes through the enrollment routes.
            "BYTEOR_CLOUD_RATE_LIMIT_ENROLLMENT_PER_MINUTE": "1000000",
        }
        log(f"starting the API on {self.url} ...")
        out = (self.tmp / "api.log").open("ab")
        self.api = subprocess.Popen(
            [sys.executable, "-m", "ops.cli", "api"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.api.poll() is not None:
                raise RuntimeError(f"the API exited; its log is {self.tmp / 'api.log'}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/healthz").status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError("the API did not start within 60 s")

    def postgres_processes(self) -> list[psutil.Process]:
        pid_file = self.pg.data / "postmaster.pid"
        try:
            postmaster = psutil.Process(int(pid_file.read_text().split()[0]))
            return [postmaster, *postmaster.children(recursive=True)]
        except (OSError, ValueError, psutil.Error):
            return []

    def stop(self) -> None:
        if self.api is not None and self.api.poll() is None:
            self.api.terminate()
            try:
                self.api.wait(15)
            except subprocess.TimeoutExpired:
                self.api.kill()
        self.pg.stop(fast=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


async def environment(stack: Stack) -> tuple[agent_sim.Target, str]:
    """A user (its PAT), a project and a ``dev`` environment to enroll into."""
    pool = await create_pool(stack.dsn, min_size=1, max_size=2)
    try:
        made = await create_user(
            pool, email="bench@example.com", org_name="Bench", now=datetime.now(UTC)
        )
    finally:
        await pool.close()
    auth = agent_sim.bearer(made.token)
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
        org = str(made.org_id)
        r = await client.post(f"/api/v1/orgs/{org}/projects", json={"name": "P"}, headers=auth)
        r.raise_for_status()
        project = r.json()["id"]
        r = await client.post(
            f"/api/v1/orgs/{org}/projects/{project}/environments",
            json={"name": "fleet", "posture": "dev"},
            headers=auth,
        )
        r.raise_for_status()
        return agent_sim.Target(stack.url, org, project, r.json()["id"]), made.token


async def load(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    target, token = await environment(stack)
    assert stack.api is not None
    api = psutil.Process(stack.api.pid)
    me = psutil.Process()
    async with agent_sim.client_for(stack.url, args.connections) as client:
        t0 = time.monotonic()
        agents = await agent_sim.enroll_all(client, target, [], args.agents, mint_with=token)
        enroll_s = time.monotonic() - t0
        log(f"enrolled {len(agents)} agents in {enroll_s:.1f} s")
        conn = await asyncpg.connect(stack.dsn)
        try:
            stats = agent_sim.Stats(recording=False)
            stop = asyncio.Event()
            lanes = Lanes(stack.url, args.connections)
            running = asyncio.create_task(
                agent_sim.heartbeat_all(
                    lanes,
                    agents,
                    interval=args.interval,
                    duration=args.warmup + args.duration + args.interval,
                    stop=stop,
                    stats=stats,
                )
            )
            await asyncio.sleep(args.warmup)
            events_before = await conn.fetchval("SELECT count(*) FROM events")
            pg = stack.postgres_processes()
            cpu0 = (cpu_seconds([api]), cpu_seconds(pg), cpu_seconds([me]), time.monotonic())
            stats.recording = True
            await asyncio.sleep(args.duration)
            stats.recording = False
            cpu1 = (cpu_seconds([api]), cpu_seconds(pg), cpu_seconds([me]), time.monotonic())
            events_after = await conn.fetchval("SELECT count(*) FROM events")
            stop.set()
            await running
            await lanes.close()
            rows = await conn.fetchval("SELECT count(*) FROM agent_heartbeats")
        finally:
            await conn.close()
    wall = cpu1[3] - cpu0[3]

    def percent(i: int) -> float:
        return round(100 * (cpu1[i] - cpu0[i]) / wall, 1)

    summary = stats.summary()
    return {
        "bench": "agents",
        "agents": len(agents),
        "duration_s": args.duration,
        "interval_s": args.interval,
        "heartbeat_p50_ms": summary["p50_ms"],
        "heartbeat_p99_ms": summary["p99_ms"],
        "heartbeat_max_ms": summary["max_ms"],
        "heartbeats_sent": summary["sent"],
        "heartbeat_errors": summary["errors"],
        "statuses": summary["statuses"],
        "heartbeats_per_s": round(summary["sent"] / wall, 1),
        "events_appended": events_after - events_before,
        "heartbeat_rows": rows,
        "api_cpu_percent": percent(0),
        "postgres_cpu_percent": percent(1),
        "load_cpu_percent": percent(2),
        "cpu_count": os.cpu_count(),
        "enroll_s": round(enroll_s, 2),
        "target_p99_ms": TARGET_P99_MS,
        "fsync": not args.no_fsync,
    }


def report(result: dict[str, Any]) -> None:
    rows = [
        ("agents, interval", f"{result['agents']}, {result['interval_s']} s"),
        ("heartbeats sent", f"{result['heartbeats_sent']} ({result['heartbeats_per_s']}/s)"),
        ("errors", f"{result['heartbeat_errors']} {result['statuses']}"),
        (
            "latency p50 / p99 / max",
            f"{result['heartbeat_p50_ms']} / "
            f"{result['heartbeat_p99_ms']} / {result['heartbeat_max_ms']} ms",
        ),
        (
            "CPU api / postgres / load",
            f"{result['api_cpu_percent']} / "
            f"{result['postgres_cpu_percent']} / {result['load_cpu_percent']} % of one core",
        ),
        ("events appended", str(result["events_appended"])),
    ]
    for name, value in rows:
        log(f"{name:<28} {value}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ops.bench.agents",
        description=(__doc__ or "").split("\n\n")[0],
    )
    parser.add_argument("--agents", type=int, default=1000, help="simulated agents (1000)")
    parser.add_argument(
        "--duration", type=float, default=60.0, help="measured seconds of heartbeats (60)"
    )
    parser.add_argument("--interval", type=float, default=1.0, help="heartbeat interval (1.0)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds left out first (3)")
    parser.add_argument(
        "--connections", type=int, default=64, help="HTTP connections of the load process (64)"
    )
    parser.add_argument(
        "--no-fsync",
        action="store_true",
        help="PostgreSQL with fsync and synchronous_commit off (to see the disk's share)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stack = Stack(no_fsync=args.no_fsync)
    try:
        stack.start()
        result = asyncio.run(load(stack, args))
    finally:
        stack.stop()
    report(result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
