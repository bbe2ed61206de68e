"""workers/streams.py against a real JetStream: applying the settings is
idempotent, what the server reads back is what the data says, and the
dead-letter stream captures MAX_DELIVERIES advisories with nobody listening."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import msgspec
import nats
import pytest
from nats.js import JetStreamContext

from domain.backoff import Backoff
from workers.streams import (
    DEAD_LETTER_CONSUMER,
    DEAD_LETTER_STREAM,
    DEFAULT_JOB_TYPES,
    JOBS_STREAM,
    JobTypeSettings,
    ensure,
)

PROBE = JobTypeSettings(
    job_type="sample",
    max_attempts=4,
    ack_wait_s=2.0,
    backoff=Backoff(base_s=1.0, factor=2.0, cap_s=3.0),
    max_ack_pending=5,
)


@pytest.fixture
async def js(nats_server) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_server.url)
    jsc = nc.jetstream()
    for name in (JOBS_STREAM, DEAD_LETTER_STREAM):
        with contextlib.suppress(Exception):
            await jsc.delete_stream(name)
    yield jsc
    await nc.close()


async def test_applying_the_settings_twice_is_fine_and_reads_back_the_same(js) -> None:
    await ensure(js, [*DEFAULT_JOB_TYPES, PROBE])
    await ensure(js, [*DEFAULT_JOB_TYPES, PROBE])
    jobs = await js.stream_info(JOBS_STREAM)
    assert jobs.config.subjects == ["jobs.>"]
    assert jobs.config.storage == "file"
    assert jobs.config.duplicate_window == 120.0
    for s in (*DEFAULT_JOB_TYPES, PROBE):
        info = await js.consumer_info(JOBS_STREAM, f"jobs_{s.job_type}")
        config = info.config
        assert config.durable_name == f"jobs_{s.job_type}"
        assert config.filter_subject == f"jobs.{s.job_type}"
        assert config.ack_policy == "explicit"
        assert config.ack_wait == s.ack_wait_s
        assert config.max_deliver == s.max_attempts
        assert config.max_ack_pending == s.max_ack_pending
        assert config.backoff == [
            max(s.ack_wait_s, d) for d in s.backoff.schedule(s.max_attempts - 1)
        ]
    assert PROBE.consumer_config().backoff == [2.0, 2.0, 3.0]
    dead = await js.stream_info(DEAD_LETTER_STREAM)
    assert dead.config.subjects == ["$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>"]
    assert dead.config.storage == "file"
    assert (await js.consumer_info(DEAD_LETTER_STREAM, DEAD_LETTER_CONSUMER)).config.max_deliver


async def test_changed_settings_update_the_live_consumer(js) -> None:
    await ensure(js, [PROBE])
    changed = msgspec.structs.replace(PROBE, max_attempts=6, ack_wait_s=3.0, max_ack_pending=9)
    await ensure(js, [changed])
    config = (await js.consumer_info(JOBS_STREAM, "jobs_sample")).config
    assert (config.max_deliver, config.ack_wait, config.max_ack_pending) == (6, 3.0, 9)
    assert config.backoff == [3.0] * 5


async def test_a_message_out_of_deliveries_leaves_an_advisory_in_the_dead_letter_stream(
    js,
) -> None:
    one_retry = JobTypeSettings(job_type="sample", max_attempts=2, ack_wait_s=2.0)
    await ensure(js, [one_retry])
    ack = await js.publish("jobs.sample", b'{"job_id":"x","job_type":"sample"}')
    sub = await js.pull_subscribe_bind(durable="jobs_sample", stream=JOBS_STREAM)
    for attempt in (1, 2):
        (msg,) = await sub.fetch(1, timeout=5)
        assert msg.metadata.num_delivered == attempt
        await msg.nak()
    # The server sends the advisory when it would deliver again: a pull must be waiting.
    with pytest.raises(nats.errors.TimeoutError):
        await sub.fetch(1, timeout=1)
    advisories = await js.pull_subscribe_bind(
        durable=DEAD_LETTER_CONSUMER, stream=DEAD_LETTER_STREAM
    )
    (advisory,) = await advisories.fetch(1, timeout=10)
    body = msgspec.json.decode(advisory.data)
    assert advisory.subject == (
        f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{JOBS_STREAM}.jobs_sample"
    )
    assert (body["stream"], body["consumer"], body["stream_seq"]) == (
        JOBS_STREAM,
        "jobs_sample",
        ack.seq,
    )
    assert body["deliveries"] == 2
    await advisory.ack()
