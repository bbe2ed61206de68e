"""A reference agent, simulated N times in one process (``byteor-cloud agent simulate``).

What each simulated agent does, in phases:

1. enroll   with an enrollment token of its own (a token is single use):
            given with ``--enrollment-token`` (repeatable) or
            ``--enrollment-tokens-file`` (one per line), and the rest minted
            first with ``--token`` (a personal access token, session or
            organization API key holding ManageEnvironment on the environment);
2. heartbeat every ``--interval`` seconds until ``--duration`` has passed
            (or Ctrl-C), each agent at its own phase of the interval so the
            load is spread evenly rather than arriving in bursts.

3. sync     every ``--sync-every`` seconds (0: never), alongside the
            heartbeats: fetch the key set and the current deployment, and for
            a new one download the bundle, verify the signature, every digest
            and the approval credential offline, and report ``activated`` (or
            ``failed`` with the rejection code) — ``ops/agent_flow.py``. An
            activated deployment is named in the agent's later heartbeats; the
            summary counts the outcomes under ``deployments``.

One asyncio loop serves every agent. Enrollment and the other low-volume calls
go through one ``httpx.AsyncClient``; a 429 is retried after its
``Retry-After`` (enrollment is throttled per environment). Heartbeats, the
high-volume call, go over ``ops.http_lanes``: HTTP/1.1 keep-alive on at most
``--connections`` connections, at a small fraction of httpx's CPU per request
(that module says why). Runtime keys live in memory only and are never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ops.agent_flow import Agent, AgentFlowError, SyncResult
from ops.http_lanes import LaneError, Lanes

RUNTIME_VERSION = "1.0.0-sim"
MAX_RETRIES = 30


class SimError(Exception):
    """A failure that stops the simulation (bad arguments, enrollment refused)."""


@dataclass(frozen=True)
class Target:
    api: str
    org: str
    project: str
    env: str

    @property
    def environment_path(self) -> str:
        return f"/api/v1/orgs/{self.org}/projects/{self.project}/environments/{self.env}"


@dataclass
class Stats:
    """Heartbeats sent by every agent, and what came back."""

    sent: int = 0
    errors: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    recording: bool = True  # cleared to leave warm-up or cool-down out of the figures

    def record(self, status: int | None, elapsed_ms: float) -> None:
        if not self.recording:
            return
        self.sent += 1
        if status is None or not 200 <= status < 300:
            self.errors += 1
        if status is not None:
            self.statuses[status] += 1
        self.latencies_ms.append(elapsed_ms)

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_ms)
        return {
            "sent": self.sent,
            "errors": self.errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "p50_ms": _round(percentile(ordered, 50)),
            "p99_ms": _round(percentile(ordered, 99)),
            "max_ms": _round(ordered[-1] if ordered else None),
        }


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted values; None for none."""
    if not ordered:
        return None
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return float(ordered[rank - 1])


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _send(
    client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str], body: Any
) -> httpx.Response:
    """One request, retried after ``Retry-After`` while it answers 429."""
    for _ in range(MAX_RETRIES):
        response = await client.request(method, path, json=body, headers=headers)
        if response.status_code != 429:
            return response
        await asyncio.sleep(float(response.headers.get("Retry-After", "1")) + random.random())
    return response


async def mint_enrollment_tokens(
    client: httpx.AsyncClient, target: Target, token: str, count: int, concurrency: int = 8
) -> list[str]:
    path = f"{target.environment_path}/enrollment-tokens"
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> str:
        async with gate:
            r = await _send(client, "POST", path, bearer(token), {"name": f"simulated {i}"})
        if r.status_code != 201:
            raise SimError(f"minting an enrollment token answered {r.status_code}: {r.text[:300]}")
        minted: str = r.json()["token"]
        return minted

    return list(await asyncio.gather(*(one(i) for i in range(count))))


@dataclass
class SimAgent:
    """One simulated agent: its id and runtime key once enrolled."""

    index: int
    agent_id: str = ""
    api_key: str = ""
    deployment_id: str = ""  # the deployment it runs, once it activated one

    async def enroll(self, client: httpx.AsyncClient, target: Target, token: str) -> None:
        body = {"hostname": f"sim-{self.index}.local", "runtime_version": RUNTIME_VERSION}
        r = await _send(client, "POST", f"{target.environment_path}/agents", bearer(token), body)
        if r.status_code != 201:
            raise SimError(f"enrollment {self.index} answered {r.status_code}: {r.text[:300]}")
        enrolled = r.json()
        self.agent_id, self.api_key = enrolled["agent_id"], enrolled["api_key"]

    def report(self, beats: int) -> bytes:
        body: dict[str, Any] = {
            "runtime_version": RUNTIME_VERSION,
            "health": "healthy",
            "counters": {"heartbeats_sent": beats},
        }
        if self.deployment_id:
            body["deployment_id"] = self.deployment_id
        return json.dumps(body).encode()

    async def sync(self, client: httpx.AsyncClient) -> SyncResult:
        """Look for a deployment once: pull, verify offline, report (ops/agent_flow.py)."""
        result = await Agent(client, self.agent_id, self.api_key).sync()
        if result.outcome == "activated" and result.deployment_id is not None:
            self.deployment_id = str(result.deployment_id)
        return result

    async def beat(self, lanes: Lanes, stats: Stats, beats: int) -> None:
        """One heartbeat; its latency counts from when it was due and queued."""
        headers = {"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"}
        raw = lanes.request_bytes(
            "POST", f"/api/v1/agents/{self.agent_id}/heartbeat", headers, self.report(beats)
        )
        t0 = time.perf_counter()
        try:
            status: int | None = (await lanes.send(raw)).status
        except LaneError:
            status = None
        stats.record(status, (time.perf_counter() - t0) * 1000)


def client_for(api: str, connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=api, limits=limits, timeout=httpx.Timeout(30.0))


async def enroll_all(
    client: httpx.AsyncClient,
    target: Target,
    tokens: Sequence[str],
    count: int,
    *,
    mint_with: str | None,
    concurrency: int = 16,
) -> list[SimAgent]:
    tokens = list(tokens[:count])
    if len(tokens) < count:
        if mint_with is None:
            raise SimError(
                f"{count} agents need {count} enrollment tokens (each is single use); "
                f"{len(tokens)} given and no --token to mint the rest"
            )
        tokens += await mint_enrollment_tokens(client, target, mint_with, count - len(tokens))
    agents = [SimAgent(i) for i in range(count)]
    gate = asyncio.Semaphore(concurrency)

    async def one(agent: SimAgent, token: str) -> None:
        async with gate:
            await agent.enroll(client, target, token)

    await asyncio.gather(*(one(a, t) for a, t in zip(agents, tokens, strict=True)))
    return agents


async def heartbeat_all(
    lanes: Lanes,
    agents: Sequence[SimAgent],
    *,
    interval: float,
    duration: float,
    stop: asyncio.Event,
    progress_every: float | None = 5.0,
    stats: Stats | None = None,
) -> Stats:
    """Every agent heartbeats every ``interval`` for ``duration`` seconds.

    Agent i is due at start + (k + i/N)·interval: the load is spread evenly over
    each interval. One scheduler walks that timetable (a sleeping task per agent
    costs more CPU than the requests) and a beat that is due is queued at once,
    however late the previous answers are, so slow answers do not slow the rate.
    Progress lines go to stderr.
    """
    stats = stats if stats is not None else Stats()
    reporter = None
    if progress_every:
        reporter = asyncio.create_task(_progress(stats, progress_every))
    in_flight: set[asyncio.Task[None]] = set()
    count = max(1, len(agents))
    start = time.monotonic()
    until = start + duration
    try:
        for tick in range(math.ceil(duration / interval)):
            for i, agent in enumerate(agents):
                due = start + (tick + i / count) * interval
                if due >= until or stop.is_set():
                    break
                delay = due - time.monotonic()
                if delay > 0.001:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(agent.beat(lanes, stats, tick + 1))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
        if in_flight:
            await asyncio.gather(*in_flight)
    finally:
        if reporter is not None:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
    return stats


async def sync_all(
    client: httpx.AsyncClient,
    agents: Sequence[SimAgent],
    *,
    every: float,
    stop: asyncio.Event,
    tally: dict[str, int],
    concurrency: int = 16,
) -> None:
    """Every ``every`` seconds each agent looks for its current deployment and, when
    there is a new one, downloads, verifies and activates it (or reports why not).
    ``tally`` counts the outcomes: activated, failed (verification), errors."""
    gate = asyncio.Semaphore(concurrency)

    async def one(agent: SimAgent) -> None:
        async with gate:
            try:
                result = await agent.sync(client)
            except (AgentFlowError, httpx.HTTPError) as exc:
                tally["errors"] = tally.get("errors", 0) + 1
                print(f"agent {agent.index}: {exc}", file=sys.stderr)
                return
        if result.outcome in ("activated", "failed"):
            tally[result.outcome] = tally.get(result.outcome, 0) + 1
            print(
                f"agent {agent.index}: {result.outcome} deployment {result.deployment_id}"
                + (f" ({result.rejection})" if result.rejection else "")
                + f"; deployment now {result.status}",
                file=sys.stderr,
                flush=True,
            )

    while not stop.is_set():
        await asyncio.gather(*(one(a) for a in agents))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


async def _progress(stats: Stats, every: float) -> None:
    started = time.monotonic()
    while True:
        await asyncio.sleep(every)
        recent = sorted(stats.latencies_ms[-5000:])
        print(
            f"[{time.monotonic() - started:6.1f} s] sent {stats.sent} errors {stats.errors} "
            f"p50 {percentile(recent, 50) or 0:.1f} ms p99 {percentile(recent, 99) or 0:.1f} ms",
            file=sys.stderr,
            flush=True,
        )


# --- the command ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, required=True, help="how many agents")
    parser.add_argument(
        "--api", required=True, help="the API's base URL, e.g. http://127.0.0.1:8080"
    )
    parser.add_argument("--org", required=True, help="organization id")
    parser.add_argument("--project", required=True, help="project id")
    parser.add_argument("--env", required=True, help="environment id the agents enroll in")
    parser.add_argument(
        "--enrollment-token",
        action="append",
        default=[],
        metavar="bye_…",
        help="an enrollment token (single use: one per agent; repeat the option)",
    )
    parser.add_argument(
        "--enrollment-tokens-file",
        type=Path,
        help="a file of enrollment tokens, one per line",
    )
    parser.add_argument(
        "--token",
        help="a PAT, session or org API key with ManageEnvironment, to mint the enrollment "
        "tokens not given (default: the BYTEOR_CLOUD_TOKEN environment variable)",
    )
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between heartbeats (default 1.0)"
    )
    parser.add_argument(
        "--duration", type=float, default=60.0, help="seconds of heartbeats (default 60)"
    )
    parser.add_argument(
        "--connections", type=int, default=64, help="HTTP connections at most (default 64)"
    )
    parser.add_argument(
        "--sync-every",
        type=float,
        default=5.0,
        help="seconds between looks for a new deployment (pull, verify offline, activate); "
        "0 to only heartbeat (default 5)",
    )


def _tokens(args: argparse.Namespace) -> list[str]:
    tokens = list(args.enrollment_token)
    if args.enrollment_tokens_file is not None:
        text = args.enrollment_tokens_file.read_text()
        tokens += [line.strip() for line in text.splitlines() if line.strip()]
    return tokens


async def simulate(args: argparse.Namespace, mint_with: str | None) -> dict[str, Any]:
    if args.count < 1 or args.interval <= 0 or args.duration <= 0 or args.connections < 1:
        raise SimError("--count, --interval, --duration and --connections must be positive")
    target = Target(args.api, args.org, args.project, args.env)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.sync_every < 0:
        raise SimError("--sync-every must be 0 (off) or positive")
    tally: dict[str, int] = {}
    async with client_for(args.api, args.connections) as client:
        t0 = time.monotonic()
        agents = await enroll_all(client, target, _tokens(args), args.count, mint_with=mint_with)
        enrolled_s = time.monotonic() - t0
        print(f"enrolled {len(agents)} agents in {enrolled_s:.1f} s", file=sys.stderr)
        syncing = None
        if args.sync_every > 0:
            syncing = asyncio.create_task(
                sync_all(client, agents, every=args.sync_every, stop=stop, tally=tally)
            )
        lanes = Lanes(args.api, args.connections)
        try:
            stats = await heartbeat_all(
                lanes, agents, interval=args.interval, duration=args.duration, stop=stop
            )
        finally:
            stop.set()
            if syncing is not None:
                await syncing
            await lanes.close()
    return {
        "agents": len(agents),
        "enroll_s": round(enrolled_s, 3),
        **stats.summary(),
        "deployments": tally,
    }


def run_cli(args: argparse.Namespace, mint_with: str | None) -> int:
    """``byteor-cloud agent simulate``: prints one JSON summary line last."""
    try:
        summary = asyncio.run(simulate(args, mint_with))
    except (SimError, httpx.HTTPError, OSError) as exc:
        print(f"byteor-cloud agent simulate: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0 if summary["errors"] == 0 else 1
