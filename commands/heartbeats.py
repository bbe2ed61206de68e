"""Agent heartbeats over HTTP (DOMAIN.md §6).

    POST /api/v1/agents/{agent}/heartbeat    the agent itself, with its bya_ key only

The report replaces the agent's row in ``agent_heartbeats`` (one UPSERT, on
top of the authentication statement that also takes the rate-limit permit);
no event is appended (domain/heartbeat.py says why). At the default interval
an agent sends 2 heartbeats a minute, and 60 at one a second: both far inside
its ``default`` rate-limit class (600 a minute, keyed per agent).

The UPSERT only writes for an agent that is still live, so a heartbeat that
raced its agent's revocation past authentication writes nothing and answers
401 like a revoked key; an agent whose environment was deleted answers 404.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from litestar import Response, post
from litestar.exceptions import NotAuthorizedException
from litestar.params import FromPath

from commands.execution import deps_of
from commands.families import AGENT_ONLY, CREDENTIALS
from commands.identity import AnyRequest, pool_of
from commands.request_schemas import json_body
from domain import heartbeat as heartbeat_mod
from domain.codec import decode_command
from domain.errors import NotFound

HEARTBEAT = "/api/v1/agents/{agent_id:uuid}/heartbeat"

# Inserts nothing for a revoked agent; ``gone`` tells a deleted environment
# (the environment view is a projection: one just deleted may still pass).
# The statement's own transaction commits without waiting for its WAL flush
# (set_config(..., true) lasts until that commit): a crash may lose the last
# fraction of a second of reports, each replaced by the agent's next one
# anyway, and a flush per heartbeat was most of its latency tail.
_UPSERT = """
WITH agent AS (
    SELECT a.id,
           EXISTS (SELECT 1 FROM environment_view e
                   WHERE e.id = a.environment_id AND e.deleted_at IS NOT NULL) AS gone
    FROM agents a WHERE a.id = $1 AND a.revoked_at IS NULL
), written AS (
    INSERT INTO agent_heartbeats AS h
        (agent_id, received_at, runtime_version, deployment_id, bundle_digest, health,
         applied_tuning, counters, observations)
    SELECT id, $2, $3, $4, $5, $6, $7, $8, $9 FROM agent WHERE NOT gone
    ON CONFLICT (agent_id) DO UPDATE SET
        received_at = excluded.received_at,
        runtime_version = excluded.runtime_version,
        deployment_id = excluded.deployment_id,
        bundle_digest = excluded.bundle_digest,
        health = excluded.health,
        applied_tuning = excluded.applied_tuning,
        counters = excluded.counters,
        observations = excluded.observations,
        heartbeats = h.heartbeats + 1
    RETURNING 1
)
SELECT (SELECT gone FROM agent) AS gone, EXISTS (SELECT 1 FROM written) AS written,
       set_config('synchronous_commit', 'off', true) AS synchronous_commit
"""

_encode = msgspec.json.Encoder().encode


@post(
    HEARTBEAT,
    status_code=200,
    summary="Report an agent's state (latest-state row, not an event); answers the interval",
    opt={CREDENTIALS: AGENT_ONLY},
    request_max_body_size=heartbeat_mod.MAX_BODY_BYTES,
    operation_class=json_body(heartbeat_mod.Heartbeat),
)
async def heartbeat(request: AnyRequest, agent_id: FromPath[uuid.UUID]) -> Response[bytes]:
    principal = request.user
    if principal.id != agent_id:
        raise NotAuthorizedException("this agent key is not valid for this agent")
    report = decode_command(heartbeat_mod.Heartbeat, await request.body())
    now = deps_of(request).clock()
    row: Any = await pool_of(request).fetchrow(
        _UPSERT,
        agent_id,
        now,
        report.runtime_version,
        report.deployment_id,
        report.bundle_digest,
        report.health,
        _encode(report.applied_tuning),
        _encode(report.counters),
        _encode(report.observations),
    )
    if row["gone"] is None:
        raise NotAuthorizedException("the bearer token is not valid")
    if row["gone"]:
        raise NotFound("agent not found", code="agent_not_found")
    ack = heartbeat_mod.HeartbeatAck(agent_id=agent_id, received_at=now)
    return Response(content=_encode(ack), media_type="application/json", status_code=200)


ROUTES = [heartbeat]
