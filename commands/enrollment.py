"""Enrollment tokens and enrollment over HTTP (DOMAIN.md §2, §6, §11).

    POST   …/environments/{env}/enrollment-tokens        ManageEnvironment
           {expires_in_s? (alias ttl_seconds), name?, labels?} → 201, the bye_ token once
    GET    …/environments/{env}/enrollment-tokens        ManageEnvironment; state of each
           (active, used, expired, revoked), never the token
    DELETE …/environments/{env}/enrollment-tokens/{id}   ManageEnvironment: revoke (204)
    POST   …/environments/{env}/agents                   the bye_ token of this environment
           ONLY: {name?, hostname?, labels?, runtime_version?, capabilities?}
           → 201 {agent_id, api_key (bya_, once), …}

Enrollment is single use: the token's row is consumed by one guarded UPDATE
(commands/agent_credentials.consume_enrollment_token) in the transaction that
appends ``enrollment_token.used`` and ``agent.enrolled`` and writes the agent
and its key, so of any number of concurrent enrollments with one token exactly
one commits; the others, like any used, expired or revoked token, answer 401
and leave nothing behind. A token of another environment also answers 401:
it does not authenticate anyone here.

Enrollment is rate limited per environment (the ``enrollment`` class of
commands/ratelimit.py), as are the token routes (by their path).
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
    ENROLLMENT_PREFIX,
    consume_enrollment_token,
    live_agent_named,
    store_agent,
    store_agent_key,
    store_enrollment_token,
)
from commands.agents import AGENTS, Links, agent_link, live_environment, load_environment
from commands.credentials import mint_token
from commands.execution import deps_of, load, stream_append
from commands.families import CREDENTIALS, ENROLLMENT_ONLY
from commands.identity import AnyRequest, Written, commit, pool_of, refuse_idempotency_key
from commands.tenancy import ENVIRONMENT
from domain import agent as agent_mod
from domain import enrollment as enrollment_mod
from domain.access import Permission
from domain.codec import decode_command
from domain.errors import AlreadyExists, FieldError, NotFound
from domain.paging import Page, after, check_limit, page_of
from schema.pg import Connection

TOKENS = ENVIRONMENT + "/enrollment-tokens"

Limit = Annotated[int | None, QueryParameter(description="Page size, 1..200 (default 50)")]
Cursor = Annotated[str | None, QueryParameter(description="next_cursor of the previous page")]


class EnrollmentTokenCreated(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    token: str  # shown once
    prefix: str
    org_id: uuid.UUID
    project_id: uuid.UUID
    environment_id: uuid.UUID
    name: str | None
    labels: dict[str, str]
    expires_at: datetime
    created_at: datetime
    links: Links


class EnrollmentTokenView(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    prefix: str
    org_id: uuid.UUID
    project_id: uuid.UUID
    environment_id: uuid.UUID
    name: str | None
    labels: dict[str, str]
    state: enrollment_mod.Shown
    expires_at: datetime
    created_at: datetime
    created_by: str
    used_at: datetime | None
    used_by_agent_id: uuid.UUID | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    links: Links


class AgentEnrolledView(msgspec.Struct, frozen=True, kw_only=True):
    agent_id: uuid.UUID
    api_key: str  # shown once
    key_id: uuid.UUID
    key_prefix: str
    name: str
    org_id: uuid.UUID
    project_id: uuid.UUID
    environment_id: uuid.UUID
    labels: dict[str, str]
    created_at: datetime
    links: Links


def _token_link(org_id: uuid.UUID, project_id: uuid.UUID, env_id: uuid.UUID, id_: uuid.UUID) -> str:
    return (
        f"/api/v1/orgs/{org_id}/projects/{project_id}/environments/{env_id}/enrollment-tokens/{id_}"
    )


@post(TOKENS, status_code=201, summary="Issue a single-use enrollment token (shown once)")
async def create_enrollment_token(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    env_id: FromPath[uuid.UUID],
) -> Response[bytes]:
    refuse_idempotency_key(request)
    cmd = decode_command(enrollment_mod.IssueEnrollmentToken, await request.body())
    deps = deps_of(request)
    principal = request.user
    issued = mint_token(ENROLLMENT_PREFIX)

    async def build(conn: Connection, now: datetime) -> Written:
        env = await load_environment(
            deps, principal, org_id, project_id, env_id, Permission.MANAGE_ENVIRONMENT
        )
        events = enrollment_mod.issue(env, cmd, token_id=issued.id, prefix=issued.prefix, now=now)
        token = enrollment_mod.fold(events)
        assert token is not None
        await store_enrollment_token(
            conn,
            issued,
            org_id=org_id,
            project_id=project_id,
            environment_id=env_id,
            name=token.name,
            labels=token.labels,
            created_by=f"{principal.actor.kind}:{principal.actor.id}",
            created_at=now,
            expires_at=token.expires_at,
        )
        return Written(
            appends=stream_append(
                deps, enrollment_mod.stream_id(issued.id), enrollment_mod.STREAM_TYPE, 0, events
            ),
            tenant_id=org_id,
            status_code=201,
            body=EnrollmentTokenCreated(
                id=issued.id,
                token=issued.token,
                prefix=issued.prefix,
                org_id=org_id,
                project_id=project_id,
                environment_id=env_id,
                name=token.name,
                labels=token.labels,
                expires_at=token.expires_at,
                created_at=now,
                links=Links(self=_token_link(org_id, project_id, env_id, issued.id)),
            ),
        )

    return await commit(request, build)


def _shown(row: Any, now: datetime) -> enrollment_mod.Shown:
    if row["revoked_at"] is not None:
        return "revoked"
    if row["used_at"] is not None:
        return "used"
    return "expired" if row["expires_at"] <= now else "active"


@get(TOKENS, summary="An environment's enrollment tokens and their state; never the token")
async def list_enrollment_tokens(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    env_id: FromPath[uuid.UUID],
    limit: Limit = None,
    cursor: Cursor = None,
) -> Page[EnrollmentTokenView]:
    deps = deps_of(request)
    await load_environment(
        deps, request.user, org_id, project_id, env_id, Permission.MANAGE_ENVIRONMENT
    )
    size = check_limit(limit)
    after_at, after_id = after(cursor)
    now = deps.clock()
    rows = await pool_of(request).fetch(
        """
        SELECT id, org_id, project_id, environment_id, name, labels, prefix, created_by,
               created_at, expires_at, revoked_at, used_at, agent_id, last_used_at
        FROM enrollment_tokens
        WHERE environment_id = $1
          AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3))
        ORDER BY created_at, id LIMIT $4
        """,
        env_id,
        after_at,
        after_id,
        size + 1,
    )

    def view(row: Any) -> EnrollmentTokenView:
        return EnrollmentTokenView(
            id=row["id"],
            prefix=row["prefix"],
            org_id=row["org_id"],
            project_id=row["project_id"],
            environment_id=row["environment_id"],
            name=row["name"],
            labels=msgspec.json.decode(row["labels"], type=dict[str, str]),
            state=_shown(row, now),
            expires_at=row["expires_at"],
            created_at=row["created_at"],
            created_by=row["created_by"],
            used_at=row["used_at"],
            used_by_agent_id=row["agent_id"],
            revoked_at=row["revoked_at"],
            last_used_at=row["last_used_at"],
            links=Links(self=_token_link(org_id, project_id, env_id, row["id"])),
        )

    return page_of(rows, size, view)


@delete(TOKENS + "/{token_id:uuid}", status_code=204, summary="Revoke an enrollment token")
async def revoke_enrollment_token(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    env_id: FromPath[uuid.UUID],
    token_id: FromPath[uuid.UUID],
) -> Response[None]:
    deps = deps_of(request)
    principal = request.user

    async def build(conn: Connection, now: datetime) -> Written:
        await load_environment(
            deps, principal, org_id, project_id, env_id, Permission.MANAGE_ENVIRONMENT
        )
        # The row lock orders this against an enrollment consuming the same token.
        row = await conn.fetchrow(
            "SELECT id FROM enrollment_tokens WHERE id = $1 AND environment_id = $2 FOR UPDATE",
            token_id,
            env_id,
        )
        if row is None:
            raise NotFound("enrollment token not found", code="enrollment_token_not_found")
        loaded = await load(deps, enrollment_mod.stream_id(token_id), enrollment_mod.fold)
        events = enrollment_mod.revoke(loaded.state, environment_id=env_id)
        if events:
            await conn.execute(
                "UPDATE enrollment_tokens SET revoked_at = $2 WHERE id = $1", token_id, now
            )
        return Written(
            appends=stream_append(
                deps, loaded.stream_id, enrollment_mod.STREAM_TYPE, loaded.version, events
            ),
            tenant_id=org_id,
            status_code=204,
            body=None,
        )

    return await commit(request, build)


_REFUSED = "the enrollment token is not valid"


@post(
    AGENTS,
    status_code=201,
    summary="Enroll an agent with an enrollment token; its runtime key is shown once",
    opt={CREDENTIALS: ENROLLMENT_ONLY, "rate_limit": "enrollment"},
)
async def enroll_agent(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    env_id: FromPath[uuid.UUID],
) -> Response[bytes]:
    principal = request.user
    if (principal.org_id, principal.project_id, principal.environment_id) != (
        org_id,
        project_id,
        env_id,
    ):
        raise NotAuthorizedException(_REFUSED)
    refuse_idempotency_key(request)
    cmd = decode_command(agent_mod.EnrollAgent, await request.body())
    deps = deps_of(request)
    token_id = principal.credential_id
    agent_id = deps.new_id()
    key = mint_token(AGENT_KEY_PREFIX)

    async def build(conn: Connection, now: datetime) -> Written:
        # Read first, then take the single-use gate: once the token's row is
        # locked this transaction needs no other connection, so requests queued
        # on the lock can never starve the holder of a pool connection. A state
        # read before the gate cannot be stale where it matters: every change to
        # the token's stream is made under that row lock and sets used_at or
        # revoked_at, which the gate re-checks (and the stream version would
        # catch anything else).
        env = await live_environment(deps, org_id, project_id, env_id)
        token = await load(deps, enrollment_mod.stream_id(token_id), enrollment_mod.fold)
        token_labels = await consume_enrollment_token(
            conn, token_id, environment_id=env_id, agent_id=agent_id, now=now
        )
        if token_labels is None:
            raise NotAuthorizedException(_REFUSED)
        used = enrollment_mod.use(token.state, environment_id=env_id, agent_id=agent_id, now=now)
        taken = await live_agent_named(conn, env_id, agent_mod.derived_name(cmd))
        name = agent_mod.agent_name(cmd, agent_id=agent_id, taken=taken)
        if taken and cmd.name is not None:
            raise _name_taken(name)
        enrolled = agent_mod.enroll(
            env,
            cmd,
            agent_id=agent_id,
            name=name,
            enrollment_token_id=token_id,
            token_labels=token_labels,
            key_id=key.id,
            key_prefix=key.prefix,
        )
        agent = agent_mod.fold(enrolled)
        assert agent is not None
        stored = await store_agent(
            conn,
            agent_id=agent_id,
            org_id=org_id,
            project_id=project_id,
            environment_id=env_id,
            name=agent.name,
            hostname=agent.hostname,
            labels=agent.labels,
            runtime_version=agent.runtime_version,
            capabilities=agent.capabilities,
            enrollment_token_id=token_id,
            created_at=now,
        )
        if not stored:
            raise _name_taken(name)
        await store_agent_key(conn, key, agent_id=agent_id, created_at=now)
        return Written(
            appends=[
                *stream_append(
                    deps, token.stream_id, enrollment_mod.STREAM_TYPE, token.version, used
                ),
                *stream_append(
                    deps, agent_mod.stream_id(agent_id), agent_mod.STREAM_TYPE, 0, enrolled
                ),
            ],
            tenant_id=org_id,
            status_code=201,
            body=AgentEnrolledView(
                agent_id=agent_id,
                api_key=key.token,
                key_id=key.id,
                key_prefix=key.prefix,
                name=agent.name,
                org_id=org_id,
                project_id=project_id,
                environment_id=env_id,
                labels=agent.labels,
                created_at=now,
                links=Links(self=agent_link(org_id, project_id, env_id, agent_id)),
            ),
        )

    return await commit(request, build)


def _name_taken(name: str) -> AlreadyExists:
    return AlreadyExists(
        f"an agent named {name!r} is already enrolled in this environment",
        code="agent_name_taken",
        errors=(FieldError("/name", "taken by another agent of this environment"),),
    )


ROUTES = [create_enrollment_token, list_enrollment_tokens, revoke_enrollment_token, enroll_agent]
