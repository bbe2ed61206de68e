"""Postgres is the source of truth, NATS only the transport: 500 probe jobs
whose messages vanish from JetStream still all complete, each effect once.

Real relay, projector and worker processes; the reconciler in the worker
(grace shortened to 2 s) republishes what the event store still calls queued.

    the JOBS stream purged under 500 published, not yet consumed jobs
    nats-server's data directory deleted under them (restarted empty)
    the data deleted while relay and worker run: they re-create the streams
    and consumers they find missing (workers/streams.py ``recreate``)
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid

import nats
import pytest

from domain import job
from tests.faults.conftest import JobRig
from workers.streams import JOBS_STREAM

pytestmark = pytest.mark.slow

COUNT = 500


async def _queued_and_published(rig: JobRig) -> list[uuid.UUID]:
    rig.env["BYTEOR_CLOUD_RECONCILE_GRACE_S"] = "2"
    rig.env["BYTEOR_CLOUD_RECONCILE_INTERVAL_S"] = "0.5"
    rig.env["BYTEOR_CLOUD_WORKER_CONCURRENCY"] = "16"
    relay = rig.process("relay")
    ids = await rig.enqueue(COUNT)
    for _ in range(600):
        if await rig.jobs_in_stream() >= COUNT:
            break
        await asyncio.sleep(0.05)
    assert await rig.jobs_in_stream() == COUNT
    relay.stop()  # caught up; a restarted relay has nothing left to send
    return ids


async def _completes_each_once(rig: JobRig, ids: list[uuid.UUID]) -> None:
    started = time.monotonic()
    rig.process("relay"), rig.process("projector"), rig.process("worker")
    await rig.wait_finished(ids, within=120)
    print(f"all {len(ids)} completed {time.monotonic() - started:.1f}s after the loss")
    seen = await rig.check_exactly_once(ids)
    assert not seen.died
    for job_id in ids:
        assert any(isinstance(e, job.JobRepublished) for e in seen.histories[job_id])
    print(seen.summary())


async def test_purging_the_job_stream_under_500_queued_jobs_loses_none(rig: JobRig) -> None:
    ids = await _queued_and_published(rig)
    nc = await nats.connect(rig.nats.url)
    try:
        await nc.jetstream().purge_stream(JOBS_STREAM)
    finally:
        await nc.close()
    assert await rig.jobs_in_stream() == 0
    await _completes_each_once(rig, ids)


async def test_wiping_nats_data_under_500_queued_jobs_loses_none(rig: JobRig) -> None:
    ids = await _queued_and_published(rig)
    rig.nats.stop()
    shutil.rmtree(rig.nats.store)
    rig.nats.start()
    assert await rig.jobs_in_stream() == 0  # no stream at all: the worker recreates it
    await _completes_each_once(rig, ids)


async def test_wiping_nats_data_under_running_processes_loses_none(rig: JobRig) -> None:
    """NATS comes back empty (no streams, no consumers) while relay and worker run."""
    rig.env["BYTEOR_CLOUD_RECONCILE_GRACE_S"] = "2"
    rig.env["BYTEOR_CLOUD_RECONCILE_INTERVAL_S"] = "0.5"
    rig.process("relay"), rig.process("projector"), rig.process("worker")
    ids = await rig.enqueue(300, sleep_ms=20)
    await rig.wait_until("SELECT count(*) FROM probe_effects", 30)
    rig.nats.stop()
    shutil.rmtree(rig.nats.store)
    rig.nats.start()
    ids += await rig.enqueue(50)
    await rig.wait_finished(ids, within=120)
    seen = await rig.check_exactly_once(ids)
    assert all(p.alive for p in rig.procs)
    print(seen.summary())
