"""Agents of an environment over HTTP (DOMAIN.md §2, §6).

    GET    …/environments/{env}/agents                       ViewEnvironment; no secrets
    GET    …/environments/{env}/agents/{agent}               ViewEnvironment; ETag
    POST   …/environments/{env}/agents/{agent}/keys/rotate   the agent itself (its current
                                                             bya_ key) or ManageEnvironment
    DELETE …/environments/{env}/agents/{agent}               ManageEnvironment: revoke the
                                                             agent and its key (If-Match)

Enrollment (``POST …/environments/{env}/agents``) is in commands/enrollment.py.

Rotation issues a new ``bya_`` key (shown once) and revokes the old one in the
same transaction: there is no grace period, the old key answers 401 from the
moment the new one exists. An agent rotating its own key is expected to store
the new key before it drops the old connection; if the response is lost, an
operator rotates again. An agent key for another agent, or for this agent under
another environment's path, answers 401 (DOMAIN.md §6).

The list reads the ``agents`` table, written in the transaction of each
agent event like the other credential tables, so it is current on return.
``status`` is DOMAIN.md §6's derived status (domain/heartbeat.py), from the
agent's last heartbeat (``agent_heartbeats``, commands/heartbeats.py) and the
application's clock; ``runtime_version`` is the one last reported, else the
one given at enrollment, and ``heartbeat`` the rest of the last report.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Response, delete, get, post
from litestar.exceptions import NotAuthorizedException
from litestar.params import FromPath, QueryParameter

from commands.agent_credentials import (
    AGENT_KEY_PREFIX,
    lock_agent,
    mark_agent,
    revoke_agent_keys,
    store_agent_key,
)
from commands.credentials import mint_token
from commands.execution import (
    CommandDeps,
    Loaded,
    check_if_match,
    deps_of,
    etag_of,
    load,
    stream_append,
)
from commands.families import AGENT_OR_HUMAN, CREDENTIALS
from commands.identity import AnyRequest, Written, commit, pool_of, refuse_idempotency_key
from commands.tenancy import ENVIRONMENT, authorize, load_org
from domain import agent as agent_mod
from domain import environment as env_mod
from domain import heartbeat as heartbeat_mod
from domain import organization as org_mod
from domain import project as project_mod
from domain.access import Permission
from domain.errors import NotFound
from domain.paging import Page, after, check_limit, page_of
from domain.principal import Principal
from schema.pg import Connection

AGENTS = ENVIRONMENT + "/agents"
AGENT = AGENTS + "/{agent_id:uuid}"

Limit = Annotated[int | None, QueryParameter(description="Page size, 1..200 (default 50)")]
Cursor = Annotated[str | None, QueryParameter(description="next_cursor of the previous page")]


class Links(msgspec.Struct, frozen=True, kw_only=True):
    self: str


class ReportedState(msgspec.Struct, frozen=True, kw_only=True):
    """The agent's last heartbeat, as it reported it."""

    received_at: datetime
    runtime_version: str
    deployment_id: uuid.UUID | None
    bundle_digest: str | None
    health: str
    applied_tuning: list[dict[str, Any]]
    counters: dict[str, int]
    observations: dict[str, float]
    heartbeats: int


class AgentView(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    org_id: uuid.UUID
    project_id: uuid.UUID
    environment_id: uuid.UUID
    name: str
    hostname: str | None
    labels: dict[str, str]
    runtime_version: str | None
    capabilities: list[str]
    status: heartbeat_mod.Status
    last_seen_at: datetime | None
    heartbeat: ReportedState | None
    key_prefix: str | None  # the live key's visible prefix; never the key
    enrollment_token_id: uuid.UUID
    revision: int
    created_at: datetime
    updated_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    links: Links


class AgentKeyIssued(msgspec.Struct, frozen=True, kw_only=True):
    agent_id: uuid.UUID
    key_id: uuid.UUID
    api_key: str  # shown once
    key_prefix: str
    created_at: datetime
    links: Links


def agent_link(org_id: uuid.UUID, project_id: uuid.UUID, env_id: uuid.UUID, id_: uuid.UUID) -> str:
    return f"/api/v1/orgs/{org_id}/projects/{project_id}/environments/{env_id}/agents/{id_}"


async def load_environment(
    deps: CommandDeps,
    principal: Principal,
    org_id: uuid.UUID,
    project_id: uuid.UUID,
    env_id: uuid.UUID,
    permission: Permission,
) -> env_mod.Environment:
    """The live environment, after ``permission`` was checked (404 for other tenants)."""
    org = await load_org(deps, org_id)
    authorize(principal, org.state, permission)
    return await live_environment(deps, org, project_id, env_id)


async def live_environment(
    deps: CommandDeps,
    org: Loaded[org_mod.Organization] | uuid.UUID,
    project_id: uuid.UUID,
    env_id: uuid.UUID,
) -> env_mod.Environment:
    """The environment if it and its parents are live (NotFound otherwise), for
    callers whose credential is bound to it (enrollment tokens, agent keys)."""
    if isinstance(org, uuid.UUID):
        org = await load_org(deps, org)
    project = await load(deps, project_mod.stream_id(project_id), project_mod.fold)
    env = await load(deps, env_mod.stream_id(env_id), env_mod.fold)
    return env_mod.require_environment(org.state, project.state, env.state)


_SELECT = """
    SELECT a.id, a.org_id, a.project_id, a.environment_id, a.name, a.hostname, a.labels,
           a.runtime_version, a.capabilities, a.enrollment_token_id, a.revision,
           a.created_at, a.updated_at, a.revoked_at,
           (SELECT k.prefix FROM agent_keys k
             WHERE k.agent_id = a.id AND k.revoked_at IS NULL) AS key_prefix,
           (SELECT max(k.last_used_at) FROM agent_keys k WHERE k.agent_id = a.id) AS last_used_at,
           h.received_at AS hb_received_at, h.runtime_version AS hb_runtime_version,
           h.deployment_id AS hb_deployment_id, h.bundle_digest AS hb_bundle_digest,
           h.health AS hb_health, h.applied_tuning AS hb_applied_tuning,
           h.counters AS hb_counters, h.observations AS hb_observations,
           h.heartbeats AS hb_heartbeats
    FROM agents a LEFT JOIN agent_heartbeats h ON h.agent_id = a.id
"""


def _reported(row: Any) -> ReportedState | None:
    if row["hb_received_at"] is None:
        return None
    return ReportedState(
        received_at=row["hb_received_at"],
        runtime_version=row["hb_runtime_version"],
        deployment_id=row["hb_deployment_id"],
        bundle_digest=row["hb_bundle_digest"],
        health=row["hb_health"],
        applied_tuning=msgspec.json.decode(row["hb_applied_tuning"], type=list[dict[str, Any]]),
        counters=msgspec.json.decode(row["hb_counters"], type=dict[str, int]),
        observations=msgspec.json.decode(row["hb_observations"], type=dict[str, float]),
        heartbeats=row["hb_heartbeats"],
    )


def _view(row: Any, now: datetime) -> AgentView:
    reported = _reported(row)
    last_seen_at = reported.received_at if reported is not None else None
    return AgentView(
        id=row["id"],
        org_id=row["org_id"],
        project_id=row["project_id"],
        environment_id=row["environment_id"],
        name=row["name"],
        hostname=row["hostname"],
        labels=msgspec.json.decode(row["labels"], type=dict[str, str]),
        runtime_version=reported.runtime_version if reported else row["runtime_version"],
        capabilities=list(row["capabilities"]),
        status=heartbeat_mod.derive_status(
            revoked=row["revoked_at"] is not None, last_seen_at=last_seen_at, now=now
        ),
        last_seen_at=last_seen_at,
        heartbeat=reported,
        key_prefix=row["key_prefix"],
        enrollment_token_id=row["enrollment_token_id"],
        revision=row["revision"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
        links=Links(
            self=agent_link(row["org_id"], row["project_id"], row["environment_id"], row["id"])
        ),
    )


@get(AGENTS, summary="The agents of an environment, revoked ones included; never a key")
async def list_agents(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    env_id: FromPath[uuid.UUID],
    limit: Limit = None,
    cursor: Cursor = None,
) -> Page[AgentView]:
    deps = deps_of(request)
    await load_environment(
        deps, request.user, org_id, project_id, env_id, Permission.VIEW_ENVIRONMENT
    )
    size = check_limit(limit)
    after_at, after_id = after(cursor)
    rows = await pool_of(request).fetch(
        _SELECT
        + """
        WHERE a.environment_id = $1
          AND ($2::timestamptz IS NULL OR (a.created_at, a.id) > ($2, $3))
        ORDER BY a.created_at, a.id LIMIT $4
        """,
        env_id,
        after_at,
        after_id,
        size + 1,
    )
    now = deps.clock()
    return page_of(rows, size, lambda row: _view(row, now))


@get(AGENT, summary="One agent of an environment; never its key")
async def get_agent(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    env_id: FromPath[uuid.UUID],
    agent_id: FromPath[uuid.UUID],
) -> Response[bytes]:
    deps = deps_of(request)
    await load_environment(
        deps, request.user, org_id, project_id, env_id, Permission.VIEW_ENVIRONMENT
    )
    row = await pool_of(request).fetchrow(
        _SELECT + " WHERE a.id = $1 AND a.environment_id = $2", agent_id, env_id
    )
    if row is None:
        raise NotFound("agent not found", code="agent_not_found")
    view = _view(row, deps.clock())
    return Response(
        content=msgspec.json.encode(view),
        media_type="application/json",
        headers={"ETag": etag_of(view.revision)},
    )


def _own_agent(
    principal: Principal,
    org_id: uuid.UUID,
    project_id: uuid.UUID,
    env_id: uuid.UUID,
    agent_id: uuid.UUID,
) -> None:
    """An agent key acts for its own agent, under its own path, only (else 401)."""
    if (principal.id, principal.org_id, principal.project_id, principal.environment_id) != (
        agent_id,
        org_id,
        project_id,
        env_id,
    ):
        raise NotAuthorizedException("this agent key is not valid for this agent")


@post(
    AGENT + "/keys/rotate",
    status_code=200,
    summary="Issue a new runtime key for an agent (shown once); the old key stops at once",
    opt={CREDENTIALS: AGENT_OR_HUMAN},
)
async def rotate_agent_key(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    env_id: FromPath[uuid.UUID],
    agent_id: FromPath[uuid.UUID],
) -> Response[bytes]:
    principal = request.user
    if principal.kind == "agent":
        _own_agent(principal, org_id, project_id, env_id, agent_id)
    refuse_idempotency_key(request)
    await request.body()  # takes no body, but an oversized one is still a 413
    deps = deps_of(request)
    issued = mint_token(AGENT_KEY_PREFIX)

    async def build(conn: Connection, now: datetime) -> Written:
        if principal.kind == "agent":
            # An agent of a deleted environment is gone with it.
            await live_environment(deps, org_id, project_id, env_id)
        else:
            await load_environment(
                deps, principal, org_id, project_id, env_id, Permission.MANAGE_ENVIRONMENT
            )
        if not await lock_agent(conn, agent_id, env_id):
            raise NotFound("agent not found", code="agent_not_found")
        loaded = await load(deps, agent_mod.stream_id(agent_id), agent_mod.fold)
        events = agent_mod.rotate_key(
            loaded.state, environment_id=env_id, key_id=issued.id, key_prefix=issued.prefix
        )
        await revoke_agent_keys(conn, agent_id, now)
        await store_agent_key(conn, issued, agent_id=agent_id, created_at=now)
        await mark_agent(conn, agent_id, revision=loaded.version + len(events), now=now)
        return Written(
            appends=stream_append(
                deps, loaded.stream_id, agent_mod.STREAM_TYPE, loaded.version, events
            ),
            tenant_id=org_id,
            status_code=200,
            body=AgentKeyIssued(
                agent_id=agent_id,
                key_id=issued.id,
                api_key=issued.token,
                key_prefix=issued.prefix,
                created_at=now,
                links=Links(self=agent_link(org_id, project_id, env_id, agent_id)),
            ),
        )

    return await commit(request, build)


@delete(AGENT, status_code=204, summary="Revoke an agent and its runtime key (If-Match)")
async def revoke_agent(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    env_id: FromPath[uuid.UUID],
    agent_id: FromPath[uuid.UUID],
) -> Response[None]:
    deps = deps_of(request)
    principal = request.user

    async def build(conn: Connection, now: datetime) -> Written:
        await load_environment(
            deps, principal, org_id, project_id, env_id, Permission.MANAGE_ENVIRONMENT
        )
        if not await lock_agent(conn, agent_id, env_id):
            raise NotFound("agent not found", code="agent_not_found")
        loaded = await load(deps, agent_mod.stream_id(agent_id), agent_mod.fold)
        check_if_match(request, loaded.version)
        events = agent_mod.revoke(loaded.state, environment_id=env_id)
        if events:
            await revoke_agent_keys(conn, agent_id, now)
            await mark_agent(
                conn, agent_id, revision=loaded.version + len(events), now=now, revoked=True
            )
        return Written(
            appends=stream_append(
                deps, loaded.stream_id, agent_mod.STREAM_TYPE, loaded.version, events
            ),
            tenant_id=org_id,
            status_code=204,
            body=None,
        )

    return await commit(request, build)


ROUTES = [list_agents, get_agent, rotate_agent_key, revoke_agent]
