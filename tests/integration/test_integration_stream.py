"""An integration consumer of ``events.>`` that stops and resumes from the last
stream sequence it processed sees every event once, in order per stream.

The consumer keeps its own checkpoint (the JetStream sequence of the last
message it handled), as an external system would, and starts a fresh
consumer at ``checkpoint + 1`` after each restart. Between its runs more
events are appended and the relay is restarted from a rewound checkpoint, so
the stream also holds a batch the relay published twice (dropped by
``Nats-Msg-Id``).
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import msgspec
import nats
import pytest
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from commands.pgstore import PgEventStore
from domain.envelope import Actor, Metadata, NewEvent, StreamAppend
from tests.integration.test_relay import run_relay_until_caught_up
from workers.relay import EVENTS_STREAM

ORG = uuid.UUID("55555555-5555-4555-8555-555555555555")
STREAMS = 4


class Consumer:
    """Reads ``events.>`` from its checkpoint; ``stop_after`` simulates a crash."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.checkpoint = 0  # the last stream sequence handled
        self.seen: list[dict[str, Any]] = []

    async def run(self, stop_after: int | None = None) -> int:
        """Handle messages until the stream is drained or ``stop_after`` were handled."""
        nc = await nats.connect(self.url)
        handled = 0
        try:
            js = nc.jetstream()
            sub = await js.pull_subscribe(
                "events.>",
                durable=None,
                stream=EVENTS_STREAM,
                config=ConsumerConfig(
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                    opt_start_seq=self.checkpoint + 1,
                    ack_policy=AckPolicy.NONE,
                    inactive_threshold=5.0,
                ),
            )
            while stop_after is None or handled < stop_after:
                try:
                    msgs = await sub.fetch(7, timeout=0.5)
                except NatsTimeout:
                    break
                for msg in msgs:
                    self.seen.append(msgspec.json.decode(msg.data))
                    self.checkpoint = msg.metadata.sequence.stream
                    handled += 1
                    if stop_after is not None and handled >= stop_after:
                        break  # the rest of this fetch is lost with the "crash"
        finally:
            await nc.close()  # no unsubscribe: the consumer just goes away
        return handled


async def append_round(store: PgEventStore, start: int, per_stream: int) -> int:
    """``per_stream`` events on each stream, from version ``start``, interleaved."""
    meta = Metadata(actor=Actor(kind="system", id="t"), tenant_id=ORG, correlation_id=uuid.uuid4())
    for v in range(per_stream):
        for s in range(STREAMS):
            version = start + v
            await store.append(
                [
                    StreamAppend(
                        stream_id=f"gadget-{s}",
                        stream_type="gadget",
                        expected_version=version,
                        events=(
                            NewEvent(event_type="gadget.ticked", payload=b'{"v":%d}' % version),
                        ),
                    )
                ],
                meta,
            )
    return per_stream * STREAMS


@pytest.fixture
async def events_url(nats_server) -> str:
    nc = await nats.connect(nats_server.url)
    with contextlib.suppress(Exception):
        await nc.jetstream().delete_stream(EVENTS_STREAM)
    await nc.close()
    return str(nats_server.url)


async def test_a_resuming_consumer_sees_every_event_once_in_order_per_stream(
    pool, database, events_url
) -> None:
    store = PgEventStore(pool)
    consumer = Consumer(events_url)
    try:
        total = await append_round(store, 0, per_stream=10)
        await run_relay_until_caught_up(pool, database, events_url)
        assert await consumer.run(stop_after=13) == 13

        total += await append_round(store, 10, per_stream=10)
        await run_relay_until_caught_up(pool, database, events_url)
        assert await consumer.run(stop_after=9) == 9

        # The relay republishes everything from a rewound checkpoint, and more
        # events arrive; the consumer resumes twice more and drains the stream.
        await pool.execute(
            "UPDATE projection_checkpoints SET transaction_id = '0', position = 0"
            " WHERE name = 'relay'"
        )
        total += await append_round(store, 20, per_stream=5)
        await run_relay_until_caught_up(pool, database, events_url)
        assert await consumer.run(stop_after=1) == 1
        await consumer.run()
    finally:
        await store.notifier.close()

    ids = [e["event_id"] for e in consumer.seen]
    assert len(ids) == total == 100
    assert len(set(ids)) == total
    by_stream: dict[str, list[int]] = {}
    for event in consumer.seen:
        by_stream.setdefault(event["stream_id"], []).append(event["stream_version"])
    assert sorted(by_stream) == [f"gadget-{s}" for s in range(STREAMS)]
    assert all(versions == list(range(1, 26)) for versions in by_stream.values())
    # The feed order (position) is the publish order, so it holds across streams too.
    positions = [e["position"] for e in consumer.seen]
    assert positions == sorted(positions)
