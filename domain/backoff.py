"""Retry delays: exponential with a cap, configured per job type.

``delay(n)`` is the wait after failed attempt ``n`` (1-based) before attempt
``n + 1``: ``min(cap_s, base_s * factor ** (n - 1))``. The consume loop naks
with it and records it as ``job.retry_scheduled.next_delay_s``.
"""

from __future__ import annotations

import msgspec


class Backoff(msgspec.Struct, frozen=True, kw_only=True):
    """Exponential backoff with a cap: ``min(cap_s, base_s * factor ** (attempt - 1))``."""

    base_s: float = 1.0
    factor: float = 2.0
    cap_s: float = 300.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based) before the next."""
        return backoff_delay(attempt, base_s=self.base_s, factor=self.factor, cap_s=self.cap_s)

    def schedule(self, failures: int) -> list[float]:
        """The delays after failures 1..``failures``."""
        return [self.delay(n) for n in range(1, failures + 1)]


def backoff_delay(attempt: int, *, base_s: float, factor: float = 2.0, cap_s: float) -> float:
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, not {attempt}")
    if base_s < 0 or factor < 1 or cap_s < 0:
        raise ValueError("base_s and cap_s must be >= 0 and factor >= 1")
    if factor == 1 or base_s == 0:
        return min(base_s, cap_s)
    # Stop multiplying once past the cap: factor ** attempt overflows for big attempts.
    delay = base_s
    for _ in range(attempt - 1):
        if delay >= cap_s:
            break
        delay *= factor
    return min(delay, cap_s)
