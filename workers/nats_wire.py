"""Publishing on a nats-py connection for a fraction of ``Client.publish``'s CPU.

The relay publishes four messages per job (``job.queued`` to its job subject
and every job event to the integration stream) and the worker acks each
delivery. nats-py's ``publish`` spends most of its time on generality: header
dictionaries checked against a regular expression, a bytearray grown piece by
piece, awaited helper coroutines. Measured against a real nats-server on this
project's 2-core machine: about 10 µs of CPU per message with a
``Nats-Msg-Id`` header, against about 3 µs for the same bytes framed here
(``ops/bench/jobs`` shows what it is worth end to end).

``WirePublisher`` frames the HPUB (or PUB) command itself and hands it to the
connection's own pending buffer and flusher, exactly where nats-py's
``publish`` puts it, so ordering against every other command on the
connection is unchanged. Anything unusual takes nats-py's own path instead, so
its errors and its reconnect buffering stay what they are: a connection not
plainly connected (closed, reconnecting, draining), a payload over the
server's limit, and any subject, reply or message id containing whitespace,
which nats-py rejects or cleans up. The attributes used are nats-py's
(pinned in constraints.txt); if a version lacks one, every publish takes the
fallback and nothing breaks (``tests/integration/test_nats_wire.py``
compares the bytes both paths deliver).
"""

from __future__ import annotations

import re

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

_UNSAFE = re.compile(r"[ \t\r\n]")  # what nats-py refuses or rewrites
_INTERNALS = (
    "_pending",
    "_pending_data_size",
    "_max_pending_size",
    "_flush_queue",
    "_flush_pending",
    "_status",
    "stats",
)
_MSG_INTERNALS = hasattr(Msg, "_check_reply") and hasattr(Msg, "_ackd")
_ACK = b""  # JetStream takes an empty reply as +ACK (nats-py's Msg.ack sends the same)
_V1_TOKENS = 9  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>
_V1_DELIVERED = 4


def delivery_count(msg: Msg) -> int:
    """``msg.metadata.num_delivered``, without building the rest of the metadata.

    nats-py's ``metadata`` parses every field of the ack subject into
    dataclasses and a datetime: about 10 µs per delivery on this machine,
    for the one number a worker needs (about 1 µs this way). The subject is
    checked by nats-py's own rule, so anything that is not a JetStream
    delivery raises ``NotJSMessageError`` as ``metadata`` does.
    """
    tokens = Msg.Metadata._get_metadata_fields(msg.reply)
    if len(tokens) == _V1_TOKENS:
        return int(tokens[_V1_DELIVERED])
    return int(tokens[Msg.Ack.NumDelivered])


class WirePublisher:
    """``publish`` with an optional ``Nats-Msg-Id``, and JetStream ``ack``, on ``nc``."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self.lean = all(hasattr(nc, name) for name in _INTERNALS)

    async def publish(
        self, subject: str, body: bytes, *, reply: str = "", msg_id: str | None = None
    ) -> None:
        nc = self.nc
        if (
            not self.lean
            or nc._status != NATS.CONNECTED
            or len(body) > nc.max_payload
            or not subject
            or _UNSAFE.search(subject)
            or _UNSAFE.search(reply)
            or (msg_id is not None and (not msg_id or _UNSAFE.search(msg_id)))
        ):
            headers = {"Nats-Msg-Id": msg_id} if msg_id is not None else None
            await nc.publish(subject, body, reply=reply, headers=headers)
            return
        if msg_id is None:
            command = b"PUB %s %s %d\r\n%s\r\n" % (
                subject.encode(),
                reply.encode(),
                len(body),
                body,
            )
        else:
            header = b"NATS/1.0\r\nNats-Msg-Id: %s\r\n\r\n" % msg_id.encode()
            command = b"HPUB %s %s %d %d\r\n%s%s\r\n" % (
                subject.encode(),
                reply.encode(),
                len(header),
                len(header) + len(body),
                header,
                body,
            )
        await self._send(command, len(body))

    async def ack(self, msg: Msg) -> None:
        """Acknowledge a JetStream delivery, as ``msg.ack()`` does (same checks)."""
        if not _MSG_INTERNALS or getattr(msg, "_client", None) is not self.nc:
            await msg.ack()
            return
        msg._check_reply()
        await self.publish(msg.reply, _ACK)
        msg._ackd = True

    async def _send(self, command: bytes, payload_size: int) -> None:
        nc = self.nc
        nc.stats["out_msgs"] += 1
        nc.stats["out_bytes"] += payload_size
        nc._pending.append(command)
        nc._pending_data_size += len(command)
        if 0 < nc._max_pending_size < nc._pending_data_size:
            await nc._flush_pending(force_flush=True)
        if nc._flush_queue is not None and nc._flush_queue.empty():
            await nc._flush_pending()
