"""LeanPool hands connections to waiters fairly, also when a waiter is cancelled."""

from __future__ import annotations

import asyncio

from schema.pg import LeanPool


class FakeConn:
    def __init__(self) -> None:
        self.closed = False

    def is_closed(self) -> bool:
        return self.closed

    def is_in_transaction(self) -> bool:
        return False

    def terminate(self) -> None:
        self.closed = True


async def test_a_cancelled_waiter_passes_its_wake_up_on() -> None:
    pool = LeanPool("postgresql://unused", size=1)
    conn = FakeConn()
    pool._opened = 1  # one connection, held by us
    first = asyncio.create_task(pool._take())
    second = asyncio.create_task(pool._take())
    await asyncio.sleep(0)
    pool._give_back(conn, healthy=True)  # type: ignore[arg-type]  # wakes `first`
    first.cancel()  # ...which is cancelled before it runs
    got = await asyncio.wait_for(second, 1)
    assert got is conn
    assert first.cancelled()


async def test_an_unhealthy_connection_is_terminated_and_its_slot_freed() -> None:
    pool = LeanPool("postgresql://unused", size=1)
    conn = FakeConn()
    pool._opened = 1
    pool._give_back(conn, healthy=False)  # type: ignore[arg-type]
    assert conn.closed
    assert pool._opened == 0
    assert pool._idle == []
