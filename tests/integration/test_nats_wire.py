"""WirePublisher against a real nats-server: the same messages as nats-py's publish."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import (
    BadSubjectError,
    ConnectionClosedError,
    MsgAlreadyAckdError,
    NotJSMessageError,
)
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

from workers.nats_wire import WirePublisher, delivery_count


@pytest.fixture
async def nc(nats_server) -> AsyncIterator[NATS]:
    conn = await nats.connect(nats_server.url)
    try:
        yield conn
    finally:
        await conn.close()


async def _collect(nc: NATS, subject: str, count: int) -> tuple[list[Msg], asyncio.Event]:
    got: list[Msg] = []
    done = asyncio.Event()

    async def cb(msg: Msg) -> None:
        got.append(msg)
        if len(got) == count:
            done.set()

    await nc.subscribe(subject, cb=cb)
    await nc.flush()
    return got, done


async def _one_delivery(js: JetStreamContext) -> tuple[str, JetStreamContext.PullSubscription]:
    """A fresh stream holding one message, and a pull subscription on its consumer ``c``."""
    name = f"WIRE_{uuid.uuid4().hex[:8]}"
    subject = f"wire.one.{name}"
    await js.add_stream(StreamConfig(name=name, subjects=[subject], storage=StorageType.MEMORY))
    await js.add_consumer(
        name, ConsumerConfig(durable_name="c", ack_policy=AckPolicy.EXPLICIT, ack_wait=30)
    )
    await js.publish(subject, b"job")
    return name, await js.pull_subscribe_bind(durable="c", stream=name)


def _json(msg: Msg) -> dict[str, object]:
    return dict(json.loads(msg.data))


def _seen(msg: Msg) -> tuple[str, str, bytes, dict[str, str] | None]:
    return msg.subject, msg.reply, msg.data, msg.headers


async def test_the_pinned_nats_py_takes_the_lean_path(nc: NATS) -> None:
    # If an upgrade renames what WirePublisher uses, it falls back to nats-py's
    # publish: still correct, but the saving is gone. This says so.
    assert WirePublisher(nc).lean


async def test_messages_arrive_as_nats_py_sends_them(nc: NATS) -> None:
    wire = WirePublisher(nc)
    prefix = f"wire.{uuid.uuid4().hex}"
    got, done = await _collect(nc, f"{prefix}.>", 6)
    msg_id = str(uuid.uuid4())
    body = b'{"event":"x","n":1}'
    # Each pair: nats-py first, then the same through WirePublisher.
    await nc.publish(f"{prefix}.a", body, reply="r.1", headers={"Nats-Msg-Id": msg_id})
    await wire.publish(f"{prefix}.a", body, reply="r.1", msg_id=msg_id)
    await nc.publish(f"{prefix}.b", b"")
    await wire.publish(f"{prefix}.b", b"")
    await nc.publish(f"{prefix}.c", body, reply="r.2")
    await wire.publish(f"{prefix}.c", body, reply="r.2")
    await asyncio.wait_for(done.wait(), 5)
    seen = [_seen(m) for m in got]
    assert seen[0] == seen[1] == (f"{prefix}.a", "r.1", body, {"Nats-Msg-Id": msg_id})
    assert seen[2] == seen[3] == (f"{prefix}.b", "", b"", None)
    assert seen[4] == seen[5] == (f"{prefix}.c", "r.2", body, None)
    assert nc.stats["out_msgs"] >= 6


async def test_order_is_kept_when_both_paths_interleave(nc: NATS) -> None:
    wire = WirePublisher(nc)
    subject = f"wire.{uuid.uuid4().hex}"
    got, done = await _collect(nc, subject, 400)
    for n in range(400):
        if n % 3:
            await wire.publish(subject, str(n).encode(), msg_id=f"id-{n}")
        else:
            await nc.publish(subject, str(n).encode())
    await asyncio.wait_for(done.wait(), 5)
    assert [int(m.data) for m in got] == list(range(400))


async def test_jetstream_reads_the_message_id_and_acks_on_the_reply(nc: NATS) -> None:
    js = nc.jetstream()
    name = f"WIRE_{uuid.uuid4().hex[:8]}"
    subject = f"wire.js.{name}"
    await js.add_stream(StreamConfig(name=name, subjects=[subject], storage=StorageType.MEMORY))
    wire = WirePublisher(nc)
    acks, done = await _collect(nc, f"_ACKS.{name}.*", 3)
    for n, msg_id in enumerate(["a", "a", "b"]):  # the second "a" is a duplicate
        await wire.publish(subject, b"x", reply=f"_ACKS.{name}.{n}", msg_id=msg_id)
    await asyncio.wait_for(done.wait(), 5)
    answers = sorted((a["seq"], a.get("duplicate", False)) for a in map(_json, acks))
    assert answers == [(1, False), (1, True), (2, False)]
    info = await js.stream_info(name)
    assert info.state.messages == 2
    await js.delete_stream(name)


async def test_ack_settles_a_delivery_once(nc: NATS) -> None:
    js = nc.jetstream()
    name, sub = await _one_delivery(js)
    (msg,) = await sub.fetch(1, timeout=5)
    wire = WirePublisher(nc)
    await wire.ack(msg)
    with pytest.raises(MsgAlreadyAckdError):
        await wire.ack(msg)
    await nc.flush()
    info = await js.consumer_info(name, "c")
    assert info.num_ack_pending == 0
    assert info.ack_floor.stream_seq == 1
    await js.delete_stream(name)


async def test_unusual_input_gets_nats_py_errors(nc: NATS) -> None:
    wire = WirePublisher(nc)
    with pytest.raises(BadSubjectError):
        await wire.publish("bad subject", b"x")
    with pytest.raises(BadSubjectError):
        await wire.publish("ok", b"x", reply="bad\r\nPUB injected 1")
    with pytest.raises(BadSubjectError):
        await wire.publish("", b"x", msg_id="m")


async def test_a_closed_connection_refuses_like_nats_py(nats_server) -> None:
    conn = await nats.connect(nats_server.url)
    await conn.close()
    with pytest.raises(ConnectionClosedError):
        await WirePublisher(conn).publish("wire.closed", b"x", msg_id="m")


@pytest.mark.parametrize(
    "reply",
    [
        "$JS.ACK.JOBS.jobs-probe.3.1201.1187.1764870000123456789.42",
        "$JS.ACK._.ACCHASH.JOBS.jobs-probe.7.1201.1187.1764870000123456789.0.rnd",
        "$JS.ACK.hub.ACCHASH.JOBS.jobs-probe.12.5.5.1764870000123456789.3",
    ],
)
def test_delivery_count_reads_what_nats_py_reads(reply: str) -> None:
    msg = Msg(_client=None, subject="jobs.probe", reply=reply)  # type: ignore[arg-type]
    assert delivery_count(msg) == msg.metadata.num_delivered


@pytest.mark.parametrize("reply", ["", "_INBOX.abc.1", "$JS.ACK.too.few.tokens"])
def test_delivery_count_refuses_what_is_not_a_delivery(reply: str) -> None:
    with pytest.raises(NotJSMessageError):
        delivery_count(Msg(_client=None, subject="x", reply=reply))  # type: ignore[arg-type]


async def test_delivery_count_of_real_redeliveries(nc: NATS) -> None:
    js = nc.jetstream()
    name, sub = await _one_delivery(js)
    for expected in (1, 2, 3):
        (msg,) = await sub.fetch(1, timeout=5)
        assert delivery_count(msg) == msg.metadata.num_delivered == expected
        await msg.nak()
    await js.delete_stream(name)
