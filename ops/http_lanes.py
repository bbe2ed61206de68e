"""A lean HTTP/1.1 keep-alive client for load generation: N connections ("lanes").

httpx costs several milliseconds of CPU per request when one process sends a
thousand a second (measured in ops/bench/agents.py: the load process saturated
one core at under 200 heartbeats a second while the API idled), so the load
generator, not the API, set the latency. A lane is one connection and one
coroutine sending the requests of a shared FIFO queue one after another; a
request's latency includes its wait for a free lane.

Only what the agent protocol's small JSON calls need: requests with a body,
responses with ``Content-Length`` (the API always sends one for them), a
connection re-opened after an error or ``Connection: close``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import NamedTuple
from urllib.parse import urlsplit


class LaneError(Exception):
    """A request that got no complete response."""


class Reply(NamedTuple):
    status: int
    body: bytes


_Job = tuple[bytes, "asyncio.Future[Reply]"]


class Lanes:
    def __init__(self, base_url: str, connections: int, *, timeout: float = 30.0) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or url.hostname is None:
            raise ValueError(f"not an http(s) URL: {base_url}")
        self.host = url.hostname
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.tls = ssl.create_default_context() if url.scheme == "https" else None
        self.authority = url.netloc.encode()
        self.timeout = timeout
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._workers = [asyncio.create_task(self._lane()) for _ in range(connections)]

    def request_bytes(self, method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: " + self.authority]
        lines += [f"{k}: {v}".encode() for k, v in headers.items()]
        lines.append(b"Content-Length: " + str(len(body)).encode())
        return b"\r\n".join(lines) + b"\r\n\r\n" + body

    async def send(self, raw: bytes) -> Reply:
        """Send a request built by ``request_bytes`` on the next free lane."""
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((raw, future))
        return await future

    async def close(self) -> None:
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    async def _lane(self) -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while True:
            raw, future = await self._queue.get()
            try:
                if writer is None or reader is None:
                    reader, writer = await asyncio.open_connection(
                        self.host, self.port, ssl=self.tls
                    )
                writer.write(raw)
                reply, keep = await asyncio.wait_for(_read_reply(reader), self.timeout)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                if writer is not None:
                    writer.close()
                reader = writer = None
                if not future.done():
                    future.set_exception(LaneError(f"{type(exc).__name__}: {exc}"))
                continue
            if not future.done():
                future.set_result(reply)
            if not keep:
                writer.close()
                reader = writer = None


async def _read_reply(reader: asyncio.StreamReader) -> tuple[Reply, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    version, status, *_ = lines[0].split(b" ", 2)
    length: int | None = None
    keep = version == b"HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            keep = value.strip().lower() != b"close"
        elif name == b"transfer-encoding":
            raise ValueError("chunked responses are not supported")
    if length is None:
        raise ValueError("a response without Content-Length")
    body = await reader.readexactly(length) if length else b""
    return Reply(int(status), body), keep
