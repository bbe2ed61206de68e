"""Agent heartbeats and the status derived from them (DOMAIN.md §6).

A heartbeat is high-volume telemetry, not a decision: it is kept as one
latest-state row per agent (plus a counter), never as an event, so a thousand
agents reporting every second add nothing to the event store or the audit log.

Status is derived when read, from the time of the last heartbeat and the
reader's clock:

    revoked   the agent was revoked (whatever it reported before)
    online    last heartbeat at most ``ONLINE_WITHIN`` ago (3 intervals)
    stale     at most ``STALE_WITHIN`` ago
    offline   longer ago, or never
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated, Final, Literal

import msgspec

from domain.agent import RuntimeVersion
from domain.codec import register_pattern_hint
from domain.deployment.events import AppliedTuning

Status = Literal["online", "stale", "offline", "revoked"]
Health = Literal["healthy", "degraded", "unhealthy"]

# What the server asks for; agents may report more often (the bench does, at 1 s).
INTERVAL_S: Final = 30
ONLINE_WITHIN: Final = timedelta(seconds=3 * INTERVAL_S)
STALE_WITHIN: Final = timedelta(minutes=5)

# Far above a real report (a few hundred bytes), far below the API's 4 MiB.
MAX_BODY_BYTES: Final = 64 * 1024

_END = r"(?![\s\S])"
DIGEST_PATTERN: Final = rf"^sha256:[0-9a-f]{{64}}{_END}"
METRIC_KEY_PATTERN: Final = rf"^[a-z][a-z0-9_.]{{0,63}}{_END}"
register_pattern_hint(DIGEST_PATTERN, "a digest such as sha256:<64 lowercase hex digits>")
register_pattern_hint(METRIC_KEY_PATTERN, "keys are lowercase, 1..64 characters")

Digest = Annotated[str, msgspec.Meta(pattern=DIGEST_PATTERN)]
MetricKey = Annotated[str, msgspec.Meta(pattern=METRIC_KEY_PATTERN)]
Counter = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The body of ``POST /api/v1/agents/{agent}/heartbeat``.

    ``deployment_id`` and ``bundle_digest`` name what the agent runs now (none
    before its first activation); ``counters`` are monotonic totals of the
    runtime (messages, drops, restarts …) and ``observations`` point-in-time
    readings (lag, queue depth …).
    """

    runtime_version: RuntimeVersion
    deployment_id: uuid.UUID | None = None
    bundle_digest: Digest | None = None
    health: Health = "healthy"
    applied_tuning: Annotated[list[AppliedTuning], msgspec.Meta(max_length=64)] = []
    counters: Annotated[dict[MetricKey, Counter], msgspec.Meta(max_length=64)] = {}
    observations: Annotated[dict[MetricKey, float], msgspec.Meta(max_length=64)] = {}


class HeartbeatAck(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to a heartbeat.

    ``desired_deployment`` is the deployment the agent should be running; it
    stays null until deployments are delivered to agents, which fill it in.
    """

    agent_id: uuid.UUID
    received_at: datetime
    interval_s: int = INTERVAL_S
    desired_deployment: uuid.UUID | None = None


def derive_status(*, revoked: bool, last_seen_at: datetime | None, now: datetime) -> Status:
    if revoked:
        return "revoked"
    if last_seen_at is None:
        return "offline"
    age = now - last_seen_at
    if age <= ONLINE_WITHIN:
        return "online"
    if age <= STALE_WITHIN:
        return "stale"
    return "offline"
