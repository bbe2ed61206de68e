"""Drafts end to end: HTTP → event store → relay → NATS JetStream → the real consume
loop running spec_ingest → draft.validated → projection → HTTP.

The relay, the worker (its handler as ops/processes.py builds it) and the
projector run in this event loop against the session's real Postgres and NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import httpx
import nats
import pytest
from nats.js import JetStreamContext

from commands.pgstore import PgEventStore
from domain.backoff import Backoff
from domain.spec import kv
from ops.processes import POOL_HANDLERS
from projections.feed import PgFeed
from projections.runner import ProjectionRunner
from tests.integration.test_drafts import INVALID, VALID, VALID_AGAIN, create, project_of
from workers.consumer import JobStore, JobWorker
from workers.relay import JetStreamPublisher, ensure_events_stream
from workers.streams import DEAD_LETTER_STREAM, JOBS_STREAM, JobTypeSettings, ensure

SETTINGS = JobTypeSettings(
    job_type="spec_ingest", max_attempts=3, ack_wait_s=5.0, backoff=Backoff(base_s=0.2)
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


@pytest.fixture
async def engine(pool, database, js) -> AsyncIterator[JobWorker]:
    """The relay and one spec_ingest consume loop, until the test ends."""
    stop = asyncio.Event()
    relay = ProjectionRunner(
        pool, PgFeed(pool, listen_dsn=database), [JetStreamPublisher(js)], lease_dsn=database
    )
    store = PgEventStore(pool)
    handler = POOL_HANDLERS["spec_ingest"](pool)
    worker = JobWorker(JobStore(store), js, SETTINGS, handler, fetch_timeout=0.5)
    tasks = [asyncio.create_task(relay.run(stop)), asyncio.create_task(worker.run(stop))]
    yield worker
    stop.set()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, 10)
    await relay.close()
    await store.notifier.close()
    await handler.store.notifier.close()  # type: ignore[attr-defined]


async def validated(client: httpx.AsyncClient, auth, draft: dict, within: float = 20.0) -> dict:
    """Poll the draft until its validation is no longer pending."""
    deadline = time.monotonic() + within
    while True:
        r = await client.get(draft["links"]["self"], headers=auth)
        got = r.json()
        current = r.status_code == 200 and got["revision"] >= draft["revision"]
        if current and got["validation"]["status"] != "pending":
            return dict(got)
        if time.monotonic() > deadline:
            pytest.fail(f"draft {draft['id']} still pending: {got}")
        await asyncio.sleep(0.05)


async def test_draft_to_version_through_the_job_engine(client, bootstrap, engine, pool) -> None:
    auth, org_id = await bootstrap.user("ada@example.com", "Org")
    project = await project_of(client, auth, org_id)

    # A valid draft: spec_ingest marks it valid; a version is cut; the same spec again
    # (another draft, another spelling) answers the same version.
    draft = (await create(client, auth, project, spec_kv=VALID)).json()
    got = await validated(client, auth, draft)
    spec_hash = kv.spec_hash(VALID.encode())
    assert (got["validation"]["status"], got["validation"]["spec_hash"]) == ("valid", spec_hash)
    r = await client.post(f"{draft['links']['self']}/versions", headers=auth)
    assert r.status_code == 201, r.text
    version = r.json()
    assert version["number"] == 1
    twin = (await create(client, auth, project, name="twin", spec_kv=VALID_AGAIN)).json()
    assert (await validated(client, auth, twin))["validation"]["status"] == "valid"
    r = await client.post(f"{twin['links']['self']}/versions", headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == version["id"]
    listed = await client.get(f"{project}/versions?spec_hash={spec_hash}", headers=auth)
    assert [v["id"] for v in listed.json()["items"]] == [version["id"]]

    # An invalid draft shows its diagnostics and cannot be versioned.
    bad = (await create(client, auth, project, name="bad", spec_kv=INVALID)).json()
    got = await validated(client, auth, bad)
    assert got["validation"]["status"] == "invalid"
    assert [d["code"] for d in got["validation"]["diagnostics"]] == ["shards_min"]
    r = await client.post(f"{bad['links']['self']}/versions", headers=auth)
    assert r.status_code == 409 and r.json()["code"] == "draft_not_valid"

    # Fixing it is a new revision, validated again by its own job.
    r = await client.put(
        bad["links"]["self"], json={"spec_kv": VALID_AGAIN}, headers={**auth, "If-Match": '"1"'}
    )
    assert r.status_code == 200, r.text
    got = await validated(client, auth, r.json())
    assert (got["revision"], got["validation"]["status"]) == (2, "valid")
    assert got["validation"]["revision"] == 2

    # Concurrent editors: both read revision 2, the first save wins, the second gets 412.
    first, second = await asyncio.gather(
        client.put(bad["links"]["self"], json={"name": "one"}, headers={**auth, "If-Match": '"2"'}),
        client.put(bad["links"]["self"], json={"name": "two"}, headers={**auth, "If-Match": '"2"'}),
    )
    assert sorted([first.status_code, second.status_code]) == [200, 412], (first.text, second.text)

    # Every job the drafts queued completed, once.
    jobs = await pool.fetch(
        "SELECT payload FROM events WHERE event_type = 'job.completed' ORDER BY position"
    )
    assert len(jobs) == 4
    assert engine.outcomes.get("completed") == 4
