"""The relay publishes every event to `events.<org>.<stream_type>.<event_type>`,
in feed order, once, and a restarted relay does not publish duplicates."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime

import msgspec
import nats
import pytest
from nats.js.api import DiscardPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, NoStreamResponseError

from commands.pgstore import PgEventStore
from domain.envelope import Actor, Metadata, NewEvent, RecordedEvent, StreamAppend
from projections.feed import PgFeed
from projections.runner import ProjectionRunner
from workers.relay import EVENTS_STREAM, JetStreamPublisher, connect_jetstream

ORG = uuid.UUID("11111111-1111-4111-8111-111111111111")


async def append_many(pool, streams: int, per_stream: int) -> None:
    store = PgEventStore(pool)
    meta = Metadata(actor=Actor(kind="system", id="t"), tenant_id=ORG, correlation_id=uuid.uuid4())
    for s in range(streams):
        for v in range(per_stream):
            await store.append(
                [
                    StreamAppend(
                        stream_id=f"thing-{s}",
                        stream_type="thing",
                        expected_version=v,
                        events=(NewEvent(event_type="thing.happened", payload=b'{"v":%d}' % v),),
                    )
                ],
                meta,
            )


async def run_relay_until_caught_up(pool, database, url: str) -> None:
    nc, js = await connect_jetstream(url)
    runner = ProjectionRunner(
        pool, PgFeed(pool, listen_dsn=database), [JetStreamPublisher(js)], lease_dsn=database
    )
    try:
        while await runner.step():
            pass
    finally:
        await runner.close()
        await nc.drain()


async def read_all(url: str, stream_name: str) -> list[tuple[str, dict]]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream_name)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(stream_name, seq)
            out.append((msg.subject, msgspec.json.decode(msg.data)))
        return out
    finally:
        await nc.close()


@pytest.fixture
async def fresh_events_stream(nats_server):
    nc = await nats.connect(nats_server.url)
    with contextlib.suppress(Exception):
        await nc.jetstream().delete_stream(EVENTS_STREAM)
    await nc.close()
    yield nats_server.url


async def test_relay_publishes_every_event_once_in_stream_order(
    pool, database, fresh_events_stream
) -> None:
    url = fresh_events_stream
    await append_many(pool, streams=5, per_stream=6)
    await run_relay_until_caught_up(pool, database, url)
    # A second relay run from a rewound checkpoint republishes; JetStream must
    # drop the duplicates by Nats-Msg-Id.
    await pool.execute(
        "UPDATE projection_checkpoints SET transaction_id = '0', position = 0 WHERE name = 'relay'"
    )
    await run_relay_until_caught_up(pool, database, url)
    published = await read_all(url, EVENTS_STREAM)
    assert len(published) == 30
    assert len({p["event_id"] for _, p in published}) == 30
    for subject, payload in published:
        assert subject == f"events.{ORG}.thing.thing.happened"
        assert payload["org_id"] == str(ORG)
        assert set(payload) >= {"event_id", "position", "stream_id", "stream_version", "data"}
    by_stream: dict[str, list[int]] = {}
    for _, payload in published:
        by_stream.setdefault(payload["stream_id"], []).append(payload["stream_version"])
    assert all(versions == list(range(1, 7)) for versions in by_stream.values())


async def test_relay_waits_for_nats_and_loses_nothing(pool, database, nats_server) -> None:
    """Events appended while the relay cannot publish go out once NATS is back."""
    await append_many(pool, streams=2, per_stream=3)
    nats_server.stop()
    try:
        with pytest.raises(Exception):  # noqa: B017 - any connection error will do
            await asyncio.wait_for(connect_jetstream(nats_server.url), 3)
        checkpoint = await pool.fetchval(
            "SELECT position FROM projection_checkpoints WHERE name = 'relay'"
        )
        assert checkpoint in (None, 0)
    finally:
        nats_server.start()
    nc = await nats.connect(nats_server.url)
    with contextlib.suppress(Exception):
        await nc.jetstream().delete_stream(EVENTS_STREAM)
    await nc.close()
    await run_relay_until_caught_up(pool, database, nats_server.url)
    assert len(await read_all(nats_server.url, EVENTS_STREAM)) == 6


def recorded(n: int) -> RecordedEvent:
    return RecordedEvent(
        position=n,
        transaction_id=n,
        event_id=uuid.uuid4(),
        stream_id=f"thing-{n}",
        stream_type="thing",
        stream_version=1,
        event_type="thing.happened",
        schema_version=1,
        payload=b"{}",
        tenant_id=ORG,
        actor_kind="system",
        actor_id="t",
        correlation_id=uuid.uuid4(),
        causation_id=None,
        command_id=None,
        recorded_us=int(datetime.now(UTC).timestamp() * 1_000_000),
    )


async def test_the_publisher_waits_for_every_ack_and_fails_a_batch_jetstream_refused(
    fresh_events_stream,
) -> None:
    nc, js = await connect_jetstream(fresh_events_stream)
    publisher = JetStreamPublisher(js, ack_timeout_s=2.0)
    try:
        for n in range(1, 51):
            await publisher.apply(None, recorded(n))  # type: ignore[arg-type]
        await publisher.flush()  # returns once all 50 are stored
        assert (await js.stream_info(EVENTS_STREAM)).state.messages == 50
        await publisher.flush()  # nothing pending: at once

        # A stream that takes no more: every ack of the batch is an error.
        await js.update_stream(
            StreamConfig(
                name=EVENTS_STREAM,
                subjects=["events.>"],
                storage=StorageType.FILE,
                duplicate_window=120.0,
                max_msgs=50,
                discard=DiscardPolicy.NEW,
            )
        )
        await publisher.apply(None, recorded(51))  # type: ignore[arg-type]
        with pytest.raises(APIError):
            await publisher.flush()

        # No stream at all: the publish has no responder; the batch fails as
        # LOST and the publisher puts the streams back for the retry.
        await js.delete_stream(EVENTS_STREAM)
        await publisher.apply(None, recorded(52))  # type: ignore[arg-type]
        with pytest.raises(NoStreamResponseError):
            await publisher.flush()
        await publisher.apply(None, recorded(52))  # type: ignore[arg-type]
        await publisher.flush()
        assert (await js.stream_info(EVENTS_STREAM)).state.messages == 1
    finally:
        await nc.drain()
