"""The relay publishes every event to `events.<org>.<stream_type>.<event_type>`,
in feed order, once, and a restarted relay does not publish duplicates."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import msgspec
import nats
import pytest

from commands.pgstore import PgEventStore
from domain.envelope import Actor, Metadata, NewEvent, StreamAppend
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
