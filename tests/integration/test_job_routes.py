"""Operators' job routes over HTTP: list and get (with attempt history) from the
job index, retry of a dead-lettered job, and the ``byteor-cloud jobs`` CLI.

Jobs are made by appending their events with the domain decisions (what the
consume loop records), under the organization as the envelope's tenant; the
job index projection runs here next to the tenancy projector.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from commands.bootstrap import create_user
from commands.pgstore import PgEventStore
from domain import job as job_mod
from domain.codec import default_codec
from domain.envelope import Actor, Metadata, StreamAppend
from projections.feed import PgFeed
from projections.jobs import NAME as JOB_INDEX
from projections.jobs import JobIndexProjection
from projections.runner import ProjectionRunner, wait_for_position

CODEC = default_codec()
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def job_projector(pool: asyncpg.Pool, database: str) -> AsyncIterator[ProjectionRunner]:
    runner = ProjectionRunner(
        pool, PgFeed(pool, listen_dsn=database), [JobIndexProjection()], lease_dsn=database
    )
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    yield runner
    stop.set()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    await runner.close()


class Jobs:
    """Jobs driven through their lifecycle by appending the domain's decisions."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.store = PgEventStore(pool)
        self.position = 0

    async def _append(self, job_id: uuid.UUID, events: Any, version: int, org: uuid.UUID) -> None:
        append = StreamAppend(
            stream_id=job_mod.stream_id(job_id),
            stream_type=job_mod.STREAM_TYPE,
            expected_version=version,
            events=tuple(CODEC.encode(e) for e in events),
        )
        meta = Metadata(
            actor=Actor(kind="system", id="worker"), tenant_id=org, correlation_id=uuid.uuid4()
        )
        result = await self.store.append([append], meta)
        self.position = max(self.position, result.last_position or 0)

    async def run(self, org: uuid.UUID, job_type: str, steps: list[str], max_attempts: int = 2):
        """Queue a job, then apply ``steps``: start, complete, transient, permanent."""
        job_id = uuid.uuid4()
        events = job_mod.queue(None, job_id=job_id, job_type=job_type, max_attempts=max_attempts)
        await self._append(job_id, events, 0, org)
        state = job_mod.fold(events)
        assert state is not None
        for step in steps:
            if step == "start":
                new = job_mod.start(state, state.attempt + 1)
            elif step == "complete":
                new = job_mod.complete(state, state.attempt)
            elif step == "transient":
                new = job_mod.fail_transient(state, state.attempt, "Timeout", "slow", 0.1)
            else:
                new = job_mod.fail_permanent(state, state.attempt, "BadInput", "no such thing")
            await self._append(job_id, new, state.version, org)
            for e in new:
                state = job_mod.evolve(state, e)
        return job_id, state


async def _user(pool: asyncpg.Pool, email: str, org: str) -> tuple[dict[str, str], Any]:
    made = await create_user(pool, email=email, org_name=org, now=datetime.now(UTC))
    return {"Authorization": f"Bearer {made.token}"}, made


async def test_list_get_retry_and_isolation(
    client: httpx.AsyncClient, pool: asyncpg.Pool, job_projector
) -> None:
    auth, me = await _user(pool, "ops@example.com", "Ops Org")
    other_auth, other = await _user(pool, "else@example.com", "Other Org")
    org = me.org_id
    base = f"/api/v1/orgs/{org}/jobs"
    jobs = Jobs(pool)
    done, _ = await jobs.run(org, "report", ["start", "complete"])
    dead, _ = await jobs.run(org, "report", ["start", "transient", "start", "transient"])
    failed, _ = await jobs.run(org, "export", ["start", "permanent"])
    theirs, _ = await jobs.run(other.org_id, "report", ["start", "complete"])
    at = jobs.position

    r = await client.get(base, params={"min_position": at}, headers=auth)
    assert r.status_code == 200, r.text
    listed = r.json()
    assert [j["id"] for j in listed["items"]] == [str(done), str(dead), str(failed)]
    assert [j["state"] for j in listed["items"]] == ["completed", "dead_letter", "failed"]
    assert listed["next_cursor"] is None

    r = await client.get(base, params={"state": "dead_letter"}, headers=auth)
    assert [j["id"] for j in r.json()["items"]] == [str(dead)]
    r = await client.get(base, params={"type": "export"}, headers=auth)
    assert [j["id"] for j in r.json()["items"]] == [str(failed)]
    r = await client.get(base, params={"limit": 2}, headers=auth)
    page = r.json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    r = await client.get(base, params={"limit": 2, "cursor": page["next_cursor"]}, headers=auth)
    assert [j["id"] for j in r.json()["items"]] == [str(failed)]
    r = await client.get(base, params={"state": "sleeping"}, headers=auth)
    assert r.status_code == 422 and r.json()["code"] == "invalid_job_state"

    r = await client.get(f"{base}/{dead}", headers=auth)
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["type"], got["state"], got["generation"]) == ("report", "dead_letter", 0)
    assert [(a["attempt"], a["outcome"], a["error_class"]) for a in got["attempts"]] == [
        (1, "retry", "Timeout"),
        (2, "dead_letter", "Timeout"),
    ]
    assert all(a["started_at"] and a["finished_at"] for a in got["attempts"])

    # Retry: job.requeued with the caller as the actor, a new generation.
    r = await client.post(f"{base}/{dead}/retry", headers=auth)
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["generation"]) == ("queued", 1)
    history = await PgEventStore(pool).read_stream(job_mod.stream_id(dead))
    last = history[-1]
    assert last.event_type == "job.requeued"
    assert (last.actor_kind, last.actor_id) == ("user", str(me.user_id))
    assert last.tenant_id == org
    requeued = CODEC.decode_recorded(last)
    assert isinstance(requeued, job_mod.JobRequeued) and requeued.job_type == "report"
    position = r.headers["X-ByteOr-Position"]
    r = await client.get(f"{base}/{dead}", params={"min_position": position}, headers=auth)
    assert (r.json()["state"], r.json()["generation"]) == ("queued", 1)
    assert len(r.json()["attempts"]) == 2

    # A failed job can be retried too; a completed one cannot.
    r = await client.post(f"{base}/{failed}/retry", headers=auth)
    assert r.status_code == 200, r.text
    r = await client.post(f"{base}/{done}/retry", headers=auth)
    assert r.status_code == 409
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "job_illegal_transition"

    # Another tenant: its org's routes are 404, and so is its job under my org.
    assert (await client.get(base, headers=other_auth)).status_code == 404
    assert (await client.get(f"{base}/{dead}", headers=other_auth)).status_code == 404
    assert (await client.post(f"{base}/{done}/retry", headers=other_auth)).status_code == 404
    assert (await client.get(f"{base}/{theirs}", headers=auth)).status_code == 404
    assert (await client.post(f"{base}/{theirs}/retry", headers=auth)).status_code == 404
    assert (await client.get(f"{base}/{uuid.uuid4()}", headers=auth)).status_code == 404

    # Metrics: jobs by type and state, from the job index.
    body = (await client.get("/metrics")).text
    assert 'byteor_jobs{job_type="report",state="completed"} 2.0' in body


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *args],
        check=False,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_cli_help() -> None:
    for args in (["jobs"], ["jobs", "list"], ["jobs", "show"], ["jobs", "retry"]):
        done = await asyncio.to_thread(_cli, *args, "--help")
        assert done.returncode == 0, done.stderr
        assert "usage: byteor-cloud jobs" in done.stdout


async def test_cli_list_show_retry(
    pool: asyncpg.Pool, database: str, job_projector, tmp_path: Path
) -> None:
    _, me = await _user(pool, "cli@example.com", "CLI Org")
    jobs = Jobs(pool)
    dead, _ = await jobs.run(me.org_id, "nightly", ["start", "transient", "start", "transient"])
    done, _ = await jobs.run(me.org_id, "nightly", ["start", "complete"])
    assert await wait_for_position(pool, PgFeed(pool), JOB_INDEX, jobs.position, 10.0)
    env = {"BYTEOR_CLOUD_DATABASE_URL": database, "BYTEOR_CLOUD_HOME": str(tmp_path)}

    listed = await asyncio.to_thread(_cli, "jobs", "list", "--org", str(me.org_id), env=env)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:3] == ["JOB", "TYPE", "STATE"]
    assert {(ln.split()[0], ln.split()[2]) for ln in lines[1:]} == {
        (str(dead), "dead_letter"),
        (str(done), "completed"),
    }
    only = await asyncio.to_thread(
        _cli, "jobs", "list", "--state", "dead_letter", "--org", str(me.org_id), env=env
    )
    assert str(dead) in only.stdout and str(done) not in only.stdout

    shown = await asyncio.to_thread(_cli, "jobs", "show", str(dead), env=env)
    assert shown.returncode == 0, shown.stderr
    assert "dead_letter" in shown.stdout and "Timeout: slow" in shown.stdout

    retried = await asyncio.to_thread(_cli, "jobs", "retry", str(dead), env=env)
    assert retried.returncode == 0, retried.stderr
    assert "generation 1" in retried.stdout
    last = (await PgEventStore(pool).read_stream(job_mod.stream_id(dead)))[-1]
    assert last.event_type == "job.requeued" and last.actor_id.startswith("cli:")
    assert last.tenant_id == me.org_id

    refused = await asyncio.to_thread(_cli, "jobs", "retry", str(done), env=env)
    assert refused.returncode == 2 and "job_illegal_transition" in refused.stderr
