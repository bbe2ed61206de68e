from __future__ import annotations

import pytest

from domain.backoff import Backoff, backoff_delay


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    assert [backoff_delay(n, base_s=1, cap_s=10) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert backoff_delay(3, base_s=0.2, factor=3, cap_s=100) == pytest.approx(1.8)
    assert backoff_delay(10_000, base_s=1, cap_s=60) == 60
    assert backoff_delay(10**9, base_s=3, factor=1, cap_s=60) == 3
    assert backoff_delay(5, base_s=0, cap_s=60) == 0
    assert Backoff(base_s=0.5, cap_s=1.5).schedule(4) == [0.5, 1.0, 1.5, 1.5]


@pytest.mark.parametrize(
    "kwargs", [{"attempt": 0}, {"base_s": -1.0}, {"factor": 0.5}, {"cap_s": -1.0}]
)
def test_backoff_rejects_nonsense(kwargs: dict[str, float]) -> None:
    args: dict[str, float] = {"attempt": 1, "base_s": 1.0, "factor": 2.0, "cap_s": 5.0, **kwargs}
    with pytest.raises(ValueError):
        backoff_delay(
            int(args["attempt"]), base_s=args["base_s"], factor=args["factor"], cap_s=args["cap_s"]
        )
