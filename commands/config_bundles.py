"""Write routes for an environment's config bundles (OperateEnvironment, DOMAIN.md §3).

``POST …/environments/{env}/bundles`` validates the body with every rule
of domain/config_bundle.py (422 ``bundle_invalid`` listing each finding with
its code and JSON pointer), resolves the version it pins (404
``version_not_found`` unless it is a version of this project), encrypts each
inline secret with the organization's data key (commands/secret_keys.py) and
only then builds the events: an event never holds an inline value, only
``InlineRef(key_id, ciphertext)``. Responses show an inline reference as
``{"kind": "inline", "key_id": …}``.

``PUT …/{id}`` replaces the content whole (the version stays), so inline
values are sent again: a stored value cannot be read back to be reused.
``PUT`` and ``DELETE`` honour ``If-Match`` (the revision ETag) and answer 409
``bundle_in_use`` once a deployment has used the bundle.

Without a configured master key (no ``SecretCipher``) a bundle with an inline
secret is refused with 503 ``secrets_unavailable``; one without is accepted.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec
from litestar import Request, Response, delete, post, put
from litestar.datastructures import State
from litestar.params import FromPath

from commands.config_bundle_views import bundle_view
from commands.execution import (
    CommandDeps,
    Loaded,
    Outcome,
    check_if_match,
    deps_of,
    etag_of,
    execute,
    load,
    stream_append,
)
from commands.request_schemas import json_body
from commands.secret_keys import SecretCipher, SecretKeyError
from commands.tenancy import ENVIRONMENT, authorize, load_org
from domain import config_bundle as bundle_mod
from domain import environment as env_mod
from domain import project as project_mod
from domain import version as version_mod
from domain.access import Permission
from domain.adapters import Endpoint, Family, InlineRef, Plaintext, VaultRef
from domain.codec import decode_command
from domain.errors import DomainError, FieldError, NotFound
from domain.organization import Organization
from domain.principal import Principal
from domain.tuning import Tuning

AnyRequest = Request[Principal, Any, State]
BUNDLES = ENVIRONMENT + "/bundles"
BUNDLE = BUNDLES + "/{bundle_id:uuid}"


class SecretsUnavailable(DomainError):
    status = 503
    code = "secrets_unavailable"


# --- request bodies as documented (the routes decode the domain's wire structs) ----


class _InlineSecret(msgspec.Struct, kw_only=True, tag="inline", tag_field="kind"):
    """Encrypted before it is stored; never shown again."""

    value: str


class _AdapterBody(msgspec.Struct, kw_only=True, rename={"secret_refs": "secretRefs"}):
    name: str
    family: Family
    endpoint: Endpoint
    secret_refs: dict[str, _InlineSecret | VaultRef] = {}


class _BundleBody(msgspec.Struct, kw_only=True):
    version_id: uuid.UUID
    tuning: Tuning
    adapters: list[_AdapterBody] = []
    parameters: dict[str, str | int | bool] = {}


class _BundleUpdateBody(msgspec.Struct, kw_only=True):
    """The whole content again; inline secrets included."""

    tuning: Tuning
    adapters: list[_AdapterBody] = []
    parameters: dict[str, str | int | bool] = {}


# --- loading and sealing -------------------------------------------------------------


class _Scope(msgspec.Struct, frozen=True, kw_only=True):
    org: Organization
    project: project_mod.Project
    environment: env_mod.Environment


async def _scope(
    deps: CommandDeps,
    request: AnyRequest,
    org_id: uuid.UUID,
    project_id: uuid.UUID,
    env_id: uuid.UUID,
) -> _Scope:
    """Authorize (OperateEnvironment), then the environment, its project and org."""
    org = await load_org(deps, org_id)
    authorize(request.user, org.state, Permission.OPERATE_ENVIRONMENT)
    project = await load(deps, project_mod.stream_id(project_id), project_mod.fold)
    env = await load(deps, env_mod.stream_id(env_id), env_mod.fold)
    environment = env_mod.require_environment(org.state, project.state, env.state)
    assert org.state is not None and project.state is not None
    return _Scope(org=org.state, project=project.state, environment=environment)


async def _load_bundle(
    deps: CommandDeps, scope: _Scope, bundle_id: uuid.UUID
) -> Loaded[bundle_mod.ConfigBundle]:
    loaded = await load(deps, bundle_mod.stream_id(bundle_id), bundle_mod.fold)
    bundle_mod.require_bundle(scope.org, scope.project, scope.environment, loaded.state)
    return loaded


async def _version_ref(deps: CommandDeps, version_id: uuid.UUID) -> bundle_mod.VersionRef | None:
    version = (await load(deps, version_mod.stream_id(version_id), version_mod.fold)).state
    if version is None:
        return None
    return bundle_mod.VersionRef(
        id=version.id,
        project_id=version.project_id,
        spec_hash=version.spec_hash,
        required_capabilities=version.required_capabilities,
    )


def _no_inline(plaintext: bytes, where: str) -> InlineRef:
    raise AssertionError("sealed a bundle without inline secrets through a cipher")


async def _seal(
    request: AnyRequest, org_id: uuid.UUID, unsealed: bundle_mod.UnsealedBundle
) -> bundle_mod.BundleContent:
    """The storable content: inline values encrypted under the org's current data key."""
    inline = any(
        isinstance(ref, Plaintext) for a in unsealed.adapters for ref in a.secret_refs.values()
    )
    if not inline:
        return bundle_mod.seal(unsealed, _no_inline)
    cipher: SecretCipher | None = request.app.state.secret_cipher
    if cipher is None:
        raise SecretsUnavailable(
            "inline secrets cannot be stored: no master key is configured "
            "(BYTEOR_CLOUD_MASTER_KEYS); use a vault reference or configure one",
        )
    try:
        encrypt = await cipher.sealer(org_id)
    except SecretKeyError as exc:
        # The message names key ids and the organization, never key material.
        raise SecretsUnavailable(f"inline secrets cannot be encrypted now: {exc}") from None
    return bundle_mod.seal(unsealed, encrypt)


# --- routes --------------------------------------------------------------------------


@post(
    BUNDLES,
    status_code=201,
    summary="Create a config bundle: a version of this project, tuning, adapters, parameters",
    operation_class=json_body(_BundleBody),
)
async def create_config_bundle(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    env_id: FromPath[uuid.UUID],
) -> Response[bytes]:
    deps = deps_of(request)
    cmd = decode_command(bundle_mod.CreateBundle, await request.body())
    bundle_id = deps.new_id()

    async def decide(now: datetime) -> Outcome:
        scope = await _scope(deps, request, org_id, project_id, env_id)
        unsealed = bundle_mod.validate_bundle(cmd.tuning, cmd.adapters, cmd.parameters)
        version = await _version_ref(deps, cmd.version_id)
        if version is None or version.project_id != project_id:
            # Checked before sealing (create_bundle checks it again): nothing is
            # encrypted for a request that fails.
            raise NotFound(
                "version not found",
                code="version_not_found",
                errors=(FieldError("/version_id", "no such version in this project"),),
                context={"project_id": str(project_id)},
            )
        content = await _seal(request, org_id, unsealed)
        events = bundle_mod.create_bundle(
            scope.org, scope.project, scope.environment, version, content, bundle_id=bundle_id
        )
        state = bundle_mod.fold(events)
        assert state is not None
        return Outcome(
            appends=stream_append(
                deps, bundle_mod.stream_id(bundle_id), bundle_mod.STREAM_TYPE, 0, events
            ),
            tenant_id=org_id,
            status_code=201,
            body=bundle_view(state, now, now),
            etag=etag_of(state.version),
        )

    return await execute(request, deps, decide)


@put(
    BUNDLE,
    summary="Replace a config bundle's content (If-Match: revision; 409 once deployed)",
    operation_class=json_body(_BundleUpdateBody),
)
async def update_config_bundle(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    env_id: FromPath[uuid.UUID],
    bundle_id: FromPath[uuid.UUID],
) -> Response[bytes]:
    deps = deps_of(request)
    raw = await request.body()

    async def decide(now: datetime) -> Outcome:
        scope = await _scope(deps, request, org_id, project_id, env_id)
        loaded = await _load_bundle(deps, scope, bundle_id)
        assert loaded.state is not None
        check_if_match(request, loaded.version)
        if loaded.state.locked:
            raise bundle_mod.BundleInUse(loaded.state, "update")
        # Decoded once the bundle is known: a missing one is 404 whatever the body.
        cmd = decode_command(bundle_mod.UpdateBundle, raw)
        unsealed = bundle_mod.validate_bundle(cmd.tuning, cmd.adapters, cmd.parameters)
        content = await _seal(request, org_id, unsealed)
        events = bundle_mod.update_bundle(
            scope.org, scope.project, scope.environment, loaded.state, content
        )
        state = loaded.state
        for event in events:
            state = bundle_mod.evolve(state, event)
        return Outcome(
            appends=stream_append(
                deps, loaded.stream_id, bundle_mod.STREAM_TYPE, loaded.version, events
            ),
            tenant_id=org_id,
            status_code=200,
            body=bundle_view(
                state, loaded.created_at or now, now if events else (loaded.updated_at or now)
            ),
            etag=etag_of(state.version),
            position=loaded.last_position,
        )

    return await execute(request, deps, decide)


@delete(BUNDLE, status_code=204, summary="Delete a config bundle (If-Match; 409 once deployed)")
async def delete_config_bundle(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    project_id: FromPath[uuid.UUID],
    env_id: FromPath[uuid.UUID],
    bundle_id: FromPath[uuid.UUID],
) -> Response[None]:
    deps = deps_of(request)

    async def decide(now: datetime) -> Outcome:
        scope = await _scope(deps, request, org_id, project_id, env_id)
        loaded = await _load_bundle(deps, scope, bundle_id)
        assert loaded.state is not None
        check_if_match(request, loaded.version)
        events = bundle_mod.delete_bundle(scope.org, scope.project, scope.environment, loaded.state)
        return Outcome(
            appends=stream_append(
                deps, loaded.stream_id, bundle_mod.STREAM_TYPE, loaded.version, events
            ),
            tenant_id=org_id,
            status_code=204,
            body=None,
        )

    return await execute(request, deps, decide)


ROUTES = [create_config_bundle, update_config_bundle, delete_config_bundle]
