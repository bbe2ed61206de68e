"""Issue 4's fault tests, with real processes: a batch of probe jobs is queued,
something breaks mid-way, and after recovery every job is completed once, none
is lost, and no effect happened twice (``JobRig.check_exactly_once``).

    worker SIGKILLed mid-job, a new worker started
    relay SIGKILLed mid-publish, restarted
    nats-server stopped and restarted on the same data directory
    PostgreSQL stopped and restarted under running processes
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.js.errors import NotFoundError

from ops.services.base import free_port
from ops.services.postgres import Postgres
from schema.migrate import migrate_dsn
from tests.conftest import FAST_POSTGRES
from tests.faults.conftest import JobRig
from workers.relay import EVENTS_STREAM
from workers.streams import JOBS_STREAM

pytestmark = pytest.mark.slow

RUNS = "SELECT count(*) FROM probe_runs"
EFFECTS = "SELECT count(*) FROM probe_effects"


async def test_a_worker_killed_mid_job_loses_nothing_and_repeats_no_effect(rig: JobRig) -> None:
    relay, first = rig.process("relay"), rig.process("worker")
    ids = await rig.enqueue(40, sleep_ms=400)
    # Kill once a few jobs are done and four are mid-sleep in the worker.
    await rig.wait_until(EFFECTS, 6)
    await rig.wait_until("SELECT count(*) FROM probe_runs WHERE outcome IS NULL", 2)
    first.sigkill()
    rig.process("worker")
    await rig.wait_finished(ids, within=90)

    seen = await rig.check_exactly_once(ids)
    assert seen.died, "the kill landed between jobs; nothing was mid-job"
    for run in seen.died:  # each killed attempt ran again as the next delivery
        assert run["attempt"] + 1 in seen.attempts(run["job_id"])
    assert relay.alive
    print(f"worker kill: {seen.summary()}")


async def test_a_relay_killed_mid_publish_publishes_each_job_once(rig: JobRig) -> None:
    rig.process("worker")
    ids = await rig.enqueue(1500)
    relay = rig.process("relay")
    # Kill as soon as the first job messages are in JetStream (the relay sends
    # batches of up to 500 events, each with its job message).
    nc = await nats.connect(rig.nats.url)
    try:
        js = nc.jetstream()
        published = 0
        for _ in range(20_000):
            with contextlib.suppress(NotFoundError):
                published = (await js.stream_info(JOBS_STREAM)).state.messages
            if published:
                break
            await asyncio.sleep(0.001)
        relay.sigkill()
        published = (await js.stream_info(JOBS_STREAM)).state.messages
    finally:
        await nc.close()
    assert 0 < published < len(ids), f"the kill did not land mid-publish ({published})"
    rig.process("relay")
    await rig.wait_finished(ids, within=90)

    seen = await rig.check_exactly_once(ids)
    print(f"relay kill at {published} published: {seen.summary()}")
    # The restarted relay republished its unconfirmed batch; JetStream dropped
    # the copies by Nats-Msg-Id, on the job subjects and the integration stream.
    assert await rig.jobs_in_stream() == len(ids)
    events = await rig.scalar("SELECT count(*) FROM events")
    for _ in range(200):
        if await _messages(rig, EVENTS_STREAM) >= events:
            break
        await asyncio.sleep(0.1)
    assert await _messages(rig, EVENTS_STREAM) == events


async def test_nats_stopped_and_restarted_loses_no_job(rig: JobRig) -> None:
    rig.process("relay"), rig.process("worker")
    ids = await rig.enqueue(80, sleep_ms=100)
    await rig.wait_until(EFFECTS, 15)
    rig.nats.stop()
    # Queued while NATS is down: they wait in the event store for the relay.
    ids += await rig.enqueue(20)
    await asyncio.sleep(1.0)
    rig.nats.start()
    await rig.wait_finished(ids, within=90)

    seen = await rig.check_exactly_once(ids)
    assert all(p.alive for p in rig.procs)
    print(f"nats restart: {seen.summary()}")


@pytest.fixture
def own_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    server = Postgres(tmp_path_factory.mktemp("pg-fault"), free_port(), settings=FAST_POSTGRES)
    server.start()
    try:
        yield server
    finally:
        server.stop(fast=True)


@pytest.fixture
async def pg_rig(own_pg: Postgres, own_nats, tmp_path: Path) -> AsyncIterator[JobRig]:
    own_pg.create_database("faults")
    dsn = own_pg.dsn("faults")
    await migrate_dsn(dsn)
    r = JobRig(dsn, own_nats, tmp_path / "home")
    await r.open()
    try:
        yield r
    finally:
        await r.close()


async def test_postgres_restarted_under_running_processes_loses_no_job(
    pg_rig: JobRig, own_pg: Postgres
) -> None:
    rig = pg_rig
    rig.process("relay"), rig.process("worker")
    ids = await rig.enqueue(60, sleep_ms=150)
    await rig.wait_until(EFFECTS, 10)
    assert rig.pool is not None
    # Our own pool's sessions die with the server; it reconnects on demand.
    own_pg.stop(fast=True)
    await asyncio.sleep(1.5)
    own_pg.start()
    await rig.pool.expire_connections()
    await rig.wait_finished(ids, within=120)

    seen = await rig.check_exactly_once(ids)
    assert all(p.alive for p in rig.procs), rig.logs()
    print(f"postgres restart: {seen.summary()}\n{rig.logs()}")


async def _messages(rig: JobRig, stream: str) -> int:
    nc = await nats.connect(rig.nats.url)
    try:
        with contextlib.suppress(Exception):
            return int((await nc.jetstream().stream_info(stream)).state.messages)
        return 0
    finally:
        await nc.close()
