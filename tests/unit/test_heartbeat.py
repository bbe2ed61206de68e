"""The derived agent status at its boundaries (DOMAIN.md §6)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.heartbeat import derive_status

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("age", "status"),
    [
        (timedelta(0), "online"),
        (timedelta(seconds=90), "online"),
        (timedelta(seconds=90, microseconds=1), "stale"),
        (timedelta(minutes=5), "stale"),
        (timedelta(minutes=5, microseconds=1), "offline"),
        (timedelta(days=3), "offline"),
    ],
)
def test_status_by_age_of_the_last_heartbeat(age: timedelta, status: str) -> None:
    assert derive_status(revoked=False, last_seen_at=NOW - age, now=NOW) == status


def test_never_seen_is_offline_and_revoked_wins() -> None:
    assert derive_status(revoked=False, last_seen_at=None, now=NOW) == "offline"
    assert derive_status(revoked=True, last_seen_at=NOW, now=NOW) == "revoked"
    assert derive_status(revoked=True, last_seen_at=None, now=NOW) == "revoked"
