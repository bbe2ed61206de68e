"""The agents' side of deployments (DOMAIN.md §6), agent keys (``bya_``) only.

    GET  /api/v1/agents/{agent}/deployments/current        what this agent should run
    GET  /api/v1/agents/{agent}/bundles/{deployment}        the deploy bundle (streamed)
    POST /api/v1/agents/{agent}/deployments/{id}/status     {state: activated|failed, …}
    GET  /api/v1/agents/{agent}/signing-keys                the organization's key set

A key for another agent than the path's answers 401 (it authenticates no one
there, as for heartbeats); a deployment that is not in the agent's environment
or does not target it answers 404, like one that does not exist.

The current deployment is the newest ``deploying`` one targeting the agent,
else its ``active`` one, read from ``deployment_view``; it carries the bundle's
digest, its download path and the per-bundle secrets key for
``secrets.json.enc`` (decision 0011: sealed in ``deployment.build_started``,
opened here for the authenticated agent of that environment). A bundle is
named by its deployment: one deploy bundle is built per deployment.

The activation timeout is applied lazily (no sweeper): a status report, or the
agent asking for its current deployment, after ``deploying_since + timeout``
records ``failed`` (``activation_timeout``) first. When the last targeted agent
activates, the same append supersedes the environment's previous active
deployment and completes the rollback the new one was restoring (``settle``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Final

import msgspec
from litestar import Response, get, post
from litestar.exceptions import NotAuthorizedException
from litestar.params import FromPath
from litestar.response import Stream

from commands.execution import CommandDeps, Outcome, deps_of, execute, load, stream_append
from commands.families import AGENT_ONLY, CREDENTIALS
from commands.identity import AnyRequest, pool_of
from commands.object_store import ObjectMissing, ObjectStore, ObjectStoreUnavailable
from commands.request_schemas import json_body
from commands.secret_keys import SecretCipher, SecretKeyError
from commands.signing_keys import key_set_bytes
from commands.store import ConcurrencyError
from domain import deployment as deployment_mod
from domain.codec import decode_command
from domain.envelope import Metadata
from domain.errors import DomainError, NotFound
from domain.principal import Principal

AGENT: Final = "/api/v1/agents/{agent_id:uuid}"
CURRENT: Final = AGENT + "/deployments/current"
STATUS: Final = AGENT + "/deployments/{deployment_id:uuid}/status"
BUNDLE: Final = AGENT + "/bundles/{deployment_id:uuid}"
KEYS: Final = AGENT + "/signing-keys"

_encode = msgspec.json.Encoder().encode


class BundlesUnavailable(DomainError):
    status = 503
    code = "bundles_unavailable"


class CurrentDeployment(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    status: str
    org_id: uuid.UUID
    project_id: uuid.UUID
    environment_id: uuid.UUID
    config_bundle_id: uuid.UUID
    version_id: uuid.UUID
    spec_hash: str
    approval_id: uuid.UUID | None
    bundle_digest: str
    kid: str | None
    download_url: str
    bundle_key: str  # base64url of the 32-byte AES-256-GCM key of secrets.json.enc
    activation_deadline: datetime | None
    reported: str | None  # this agent's report so far


class CurrentAnswer(msgspec.Struct, frozen=True, kw_only=True):
    agent_id: uuid.UUID
    deployment: CurrentDeployment | None


class StatusAnswer(msgspec.Struct, frozen=True, kw_only=True):
    agent_id: uuid.UUID
    deployment_id: uuid.UUID
    status: str
    reported: str | None
    activated: int
    targeted: int


def _agent(request: AnyRequest, agent_id: uuid.UUID) -> Principal:
    principal = request.user
    if principal.id != agent_id or principal.environment_id is None:
        raise NotAuthorizedException("this agent key is not valid for this agent")
    return principal


def _not_found() -> NotFound:
    return NotFound("deployment not found", code="deployment_not_found")


def _mine(
    state: deployment_mod.Deployment | None, principal: Principal
) -> deployment_mod.Deployment:
    if (
        state is None
        or state.environment_id != principal.environment_id
        or principal.id not in state.agent_ids
    ):
        raise _not_found()
    return state


def _key_context(deployment_id: uuid.UUID) -> str:
    # The context workers/bundle_secrets.seal_bundle_key seals the key with.
    return f"deploy_bundles/{deployment_id}/secrets_key"


def _cipher(request: AnyRequest) -> SecretCipher:
    cipher: SecretCipher | None = request.app.state.secret_cipher
    if cipher is None:
        raise BundlesUnavailable("bundle keys cannot be opened: no master key is configured")
    return cipher


async def _bundle_key(request: AnyRequest, state: deployment_mod.Deployment) -> str:
    sealed = state.secrets_key
    if sealed is None:
        raise BundlesUnavailable("this deployment's bundle has no recorded key")
    try:
        raw = await _cipher(request).decrypt(
            state.org_id, sealed.key_id, sealed.ciphertext, _key_context(state.id)
        )
    except SecretKeyError as exc:
        raise BundlesUnavailable(f"the bundle key cannot be opened: {type(exc).__name__}") from None
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


# --- routes ----------------------------------------------------------------------------


@get(
    CURRENT,
    summary="The deployment this agent should run: bundle digest, download URL and key",
    opt={CREDENTIALS: AGENT_ONLY},
)
async def current_deployment(request: AnyRequest, agent_id: FromPath[uuid.UUID]) -> Response[bytes]:
    principal = _agent(request, agent_id)
    deps = deps_of(request)
    rows = await pool_of(request).fetch(
        """
        SELECT id FROM deployment_view
        WHERE environment_id = $1 AND status IN ('deploying', 'active')
          AND state->'agent_ids' @> to_jsonb(ARRAY[$2::text])
        ORDER BY status = 'deploying' DESC, updated_at DESC LIMIT 5
        """,
        principal.environment_id,
        str(agent_id),
    )
    found: CurrentDeployment | None = None
    for row in rows:
        # The event store, not the view: the view may trail the last report by milliseconds.
        loaded = await load(deps, deployment_mod.stream_id(row["id"]), deployment_mod.fold)
        state = loaded.state
        if state is None or state.status not in ("deploying", "active"):
            continue
        now = deps.clock()
        if deployment_mod.expire(state, now):
            await _record_expiry(request, deps, state, loaded.version, now)
            continue
        if state.bundle_digest is None:
            continue
        mine = state.report_of(agent_id)
        found = CurrentDeployment(
            id=state.id,
            status=state.status,
            org_id=state.org_id,
            project_id=state.project_id,
            environment_id=state.environment_id,
            config_bundle_id=state.bundle_id,
            version_id=state.version_id,
            spec_hash=state.spec_hash,
            approval_id=state.approval_id,
            bundle_digest=state.bundle_digest,
            kid=state.kid,
            download_url=f"/api/v1/agents/{agent_id}/bundles/{state.id}",
            bundle_key=await _bundle_key(request, state),
            activation_deadline=deployment_mod.timeout_at(state),
            reported=None if mine is None else mine.state,
        )
        break
    answer = CurrentAnswer(agent_id=agent_id, deployment=found)
    return Response(
        content=_encode(answer),
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def _record_expiry(
    request: AnyRequest,
    deps: CommandDeps,
    state: deployment_mod.Deployment,
    version: int,
    now: datetime,
) -> None:
    appends = stream_append(
        deps,
        deployment_mod.stream_id(state.id),
        deployment_mod.STREAM_TYPE,
        version,
        deployment_mod.expire(state, now),
    )
    meta = Metadata(actor=request.user.actor, tenant_id=state.org_id, correlation_id=uuid.uuid4())
    # Someone else moved it (a report, another agent's expiry): theirs stands.
    with contextlib.suppress(ConcurrencyError):
        await deps.store.append(appends, meta)


@get(
    BUNDLE,
    summary="Download the deploy bundle of a deployment targeting this agent (streamed)",
    opt={CREDENTIALS: AGENT_ONLY},
    media_type="application/gzip",
)
async def download_bundle(
    request: AnyRequest, agent_id: FromPath[uuid.UUID], deployment_id: FromPath[uuid.UUID]
) -> Stream:
    principal = _agent(request, agent_id)
    deps = deps_of(request)
    loaded = await load(deps, deployment_mod.stream_id(deployment_id), deployment_mod.fold)
    state = _mine(loaded.state, principal)
    if state.bundle_key is None or state.bundle_digest is None:
        raise NotFound("this deployment's bundle is not built yet", code="bundle_not_built")
    objects = await _objects(request)
    chunks = objects.stream(state.bundle_key)
    try:
        first = await anext(chunks)
    except ObjectMissing:
        raise NotFound("the bundle is not in object storage", code="bundle_missing") from None
    except ObjectStoreUnavailable:
        raise BundlesUnavailable("object storage is unavailable; try again") from None

    async def body() -> AsyncIterator[bytes]:
        yield first
        async for chunk in chunks:
            yield chunk

    return Stream(
        body(),
        media_type="application/gzip",
        headers={
            "X-Bundle-Digest": state.bundle_digest,
            "Content-Disposition": f'attachment; filename="{deployment_id}.tar.gz"',
        },
    )


async def _objects(request: AnyRequest) -> ObjectStore:
    objects: ObjectStore | None = request.app.state.object_store
    if objects is None:
        raise BundlesUnavailable("no object storage is configured")
    lock: asyncio.Lock = request.app.state.object_store_lock
    async with lock:
        try:
            await objects.start()
        except ObjectStoreUnavailable:
            raise BundlesUnavailable("object storage is unavailable; try again") from None
    return objects


@post(
    STATUS,
    status_code=200,
    summary="Report activation or failure of a deployment (with the tuning applied)",
    opt={CREDENTIALS: AGENT_ONLY},
    operation_class=json_body(deployment_mod.StatusReport),
)
async def report_status(
    request: AnyRequest, agent_id: FromPath[uuid.UUID], deployment_id: FromPath[uuid.UUID]
) -> Response[bytes]:
    principal = _agent(request, agent_id)
    deps = deps_of(request)
    body = decode_command(deployment_mod.StatusReport, await request.body())

    async def decide(now: datetime) -> Outcome:
        loaded = await load(deps, deployment_mod.stream_id(deployment_id), deployment_mod.fold)
        state = _mine(loaded.state, principal)
        events = deployment_mod.expire(state, now)
        if not events and body.state == "activated":
            events = deployment_mod.report_activated(
                state,
                agent_id,
                now=now,
                applied_tuning=body.applied_tuning,
                replacing=await _active_in(request, state),
            )
        elif not events:
            events = deployment_mod.report_failed(
                state, agent_id, now=now, reason=body.reason, applied_tuning=body.applied_tuning
            )
        after = state
        for event in events:
            after = deployment_mod.evolve(after, event)
        appends = stream_append(
            deps, loaded.stream_id, deployment_mod.STREAM_TYPE, loaded.version, events
        )
        if after.status == "active" and state.status != "active":
            appends += await _settle_others(deps, after, now)
        mine = after.report_of(agent_id)
        rollout = deployment_mod.rollout(after)
        answer = StatusAnswer(
            agent_id=agent_id,
            deployment_id=after.id,
            status=after.status,
            reported=None if mine is None else mine.state,
            activated=len(rollout.activated),
            targeted=rollout.targeted,
        )
        return Outcome(
            appends=appends,
            tenant_id=after.org_id,
            status_code=200,
            body=answer,
            position=loaded.last_position,
        )

    return await execute(request, deps, decide)


async def _active_in(request: AnyRequest, state: deployment_mod.Deployment) -> uuid.UUID | None:
    found: uuid.UUID | None = await pool_of(request).fetchval(
        """
        SELECT id FROM deployment_view WHERE environment_id = $1 AND status = 'active' AND id <> $2
        ORDER BY updated_at DESC LIMIT 1
        """,
        state.environment_id,
        state.id,
    )
    return found


async def _settle_others(
    deps: CommandDeps, activated: deployment_mod.Deployment, now: datetime
) -> list[Any]:
    """Supersede the previous active deployment; finish the rollback this one restores."""
    others = {d for d in (activated.supersedes, activated.rollback_of) if d is not None}
    appends: list[Any] = []
    for other_id in sorted(others):
        other = await load(deps, deployment_mod.stream_id(other_id), deployment_mod.fold)
        if other.state is None:
            continue
        events = deployment_mod.settle(other.state, activated, now)
        appends += stream_append(
            deps, other.stream_id, deployment_mod.STREAM_TYPE, other.version, events
        )
    return appends


@get(
    KEYS,
    summary="The organization's signing key set, to verify bundles and credentials offline",
    opt={CREDENTIALS: AGENT_ONLY},
)
async def agent_signing_keys(request: AnyRequest, agent_id: FromPath[uuid.UUID]) -> Response[bytes]:
    principal = _agent(request, agent_id)
    assert principal.org_id is not None
    body = await key_set_bytes(pool_of(request), principal.org_id)
    return Response(content=body, media_type="application/json")


ROUTES = [current_deployment, download_bundle, report_status, agent_signing_keys]
