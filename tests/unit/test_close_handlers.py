"""The worker closes job handlers that hold clients when it stops."""

from __future__ import annotations

import logging

from ops.processes import _close_handlers


class Closable:
    def __init__(self, fail: bool = False) -> None:
        self.closed = 0
        self.fail = fail

    async def __call__(self, ctx: object) -> None:
        return None

    async def aclose(self) -> None:
        self.closed += 1
        if self.fail:
            raise OSError("connection reset")


async def plain(ctx: object) -> None:
    return None


async def test_every_closable_handler_is_closed_even_after_one_fails(caplog) -> None:
    caplog.set_level(logging.WARNING)
    first, broken, last = Closable(), Closable(fail=True), Closable()
    await _close_handlers([first, plain, broken, last])
    assert (first.closed, broken.closed, last.closed) == (1, 1, 1)
    assert "closing a job handler failed: OSError" in caplog.text
