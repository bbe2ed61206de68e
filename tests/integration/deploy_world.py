"""What the signing key, deployment and approval tests (and the authz matrix) set up:
a cipher with a throwaway master key, members, config bundles, agents, and
deployment transitions that belong to the build job and the agents.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import httpx

from commands.object_store import ObjectStore
from commands.pgstore import PgEventStore
from commands.secret_keys import MasterKey, MasterKeyring, SecretCipher
from domain import config_bundle as bundle_mod
from domain import deployment as deployment_mod
from domain import organization as org_mod
from domain.codec import Event, default_codec
from domain.config_bundle import ConfigBundleCreated, content_hash
from domain.envelope import SYSTEM, Metadata, StreamAppend
from projections.feed import PgFeed
from projections.runner import wait_for_position
from tests.lifecycle import a_content

CODEC = default_codec()
SPEC_HASH = "sha256:" + "cd" * 32


def make_cipher(pool) -> SecretCipher:
    # A unique id: another test app's cipher must not take this key for its own.
    key = MasterKey(f"test-{uuid.uuid4().hex[:8]}", os.urandom(32))
    return SecretCipher(pool, MasterKeyring([key]))


async def append(pool, stream_id: str, stream_type: str, events: Sequence[Event], tenant) -> None:
    store = PgEventStore(pool)
    records = await store.read_stream(stream_id)
    version = records[-1].stream_version if records else 0
    await store.append(
        [
            StreamAppend(
                stream_id=stream_id,
                stream_type=stream_type,
                expected_version=version,
                events=tuple(CODEC.encode(e) for e in events),
            )
        ],
        Metadata(actor=SYSTEM, tenant_id=uuid.UUID(str(tenant)), correlation_id=uuid.uuid4()),
    )


async def add_members(pool, org_id: str, roles: dict[uuid.UUID, str]) -> None:
    """Append organization.member_added (there is no members route)."""
    store = PgEventStore(pool)
    stream = org_mod.stream_id(uuid.UUID(org_id))
    state = org_mod.fold(CODEC.decode_recorded(r) for r in await store.read_stream(stream))
    events: list[Event] = []
    for user_id, role in roles.items():
        for e in org_mod.add_member(state, user_id, role):  # type: ignore[arg-type]
            state = org_mod.evolve(state, e)
            events.append(e)
    await append(pool, stream, org_mod.STREAM_TYPE, events, org_id)


async def bundle(pool, ids: dict[str, str], capabilities: tuple[str, ...] = ("http_post",)) -> str:
    """A config bundle of the environment, appended as the bundle routes would."""
    bundle_id = uuid.uuid4()
    content = a_content(adapters=[])
    created = ConfigBundleCreated(
        bundle_id=bundle_id,
        org_id=uuid.UUID(ids["org_id"]),
        project_id=uuid.UUID(ids["project_id"]),
        environment_id=uuid.UUID(ids["env_id"]),
        version_id=uuid.uuid4(),
        spec_hash=SPEC_HASH,
        required_capabilities=tuple(sorted(capabilities)),
        content=content,
        content_hash=content_hash(content),
    )
    await append(
        pool, bundle_mod.stream_id(bundle_id), bundle_mod.STREAM_TYPE, [created], ids["org_id"]
    )
    return str(bundle_id)


def env_path(ids: dict[str, str]) -> str:
    return f"/api/v1/orgs/{ids['org_id']}/projects/{ids['project_id']}/environments/{ids['env_id']}"


async def tree(
    client: httpx.AsyncClient, auth, org_id: str, posture: str = "prod", cap: int | None = None
) -> dict[str, str]:
    r = await client.post(f"/api/v1/orgs/{org_id}/projects", json={"name": "P"}, headers=auth)
    assert r.status_code == 201, r.text
    project_id = r.json()["id"]
    body: dict = {"name": f"env {uuid.uuid4().hex[:6]}", "posture": posture}
    if cap is not None:
        body["settings"] = {"max_inflight_deployments": cap}
    r = await client.post(
        f"/api/v1/orgs/{org_id}/projects/{project_id}/environments", json=body, headers=auth
    )
    assert r.status_code == 201, r.text
    return {"org_id": org_id, "project_id": project_id, "env_id": r.json()["id"]}


async def agent(client: httpx.AsyncClient, auth, ids: dict[str, str]) -> dict:
    """A new agent of the environment: ``agent_id`` and its ``api_key``."""
    r = await client.post(f"{env_path(ids)}/enrollment-tokens", json={}, headers=auth)
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    r = await client.post(
        f"{env_path(ids)}/agents",
        json={"name": f"agent {uuid.uuid4().hex[:6]}"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


async def settled(pool, position: str | int | None = None) -> None:
    """Wait until the deployments read model has every event so far."""
    head = position or await pool.fetchval("SELECT max(position) FROM events")
    assert await wait_for_position(pool, PgFeed(pool), "deployments", int(head), 10.0)


async def advance(
    pool,
    deployment_id: str,
    decide: Callable[[deployment_mod.Deployment], Sequence[Event]],
    tenant: str,
) -> deployment_mod.Deployment:
    """Apply a transition the build job or the agents own, straight to the stream."""
    store = PgEventStore(pool)
    stream = deployment_mod.stream_id(uuid.UUID(deployment_id))
    state = deployment_mod.fold(CODEC.decode_recorded(r) for r in await store.read_stream(stream))
    assert state is not None
    events = list(decide(state))
    await append(pool, stream, deployment_mod.STREAM_TYPE, events, tenant)
    for e in events:
        state = deployment_mod.evolve(state, e)  # type: ignore[arg-type]
    return state


async def activate(
    pool, deployment_id: str, tenant: str, replacing: str | None = None
) -> deployment_mod.Deployment:
    """approved → building → deploying → active, every agent reporting."""
    now = datetime.now(UTC)
    await advance(
        pool, deployment_id, lambda d: deployment_mod.start_build(d, uuid.uuid4(), now), tenant
    )
    state = await advance(
        pool,
        deployment_id,
        lambda d: deployment_mod.complete_build(
            d, bundle_digest="sha256:" + "ee" * 32, bundle_key="bundles/x", kid="k", now=now
        ),
        tenant,
    )
    for agent_id in state.agent_ids:
        state = await advance(
            pool,
            deployment_id,
            lambda d, a=agent_id: deployment_mod.report_activated(
                d, a, now=now, replacing=None if replacing is None else uuid.UUID(replacing)
            ),
            tenant,
        )
    if replacing is not None:
        await advance(pool, replacing, lambda d: deployment_mod.settle(d, state, now), tenant)
    return state


def object_store(s3) -> ObjectStore:
    """An object store on the session's S3, in a bucket of its own."""
    return ObjectStore(
        endpoint_url=s3.endpoint,
        access_key=s3.access_key,
        secret_key=s3.secret_key,
        bucket="deploy-" + uuid.uuid4().hex[:12],
    )


async def deploying(client: httpx.AsyncClient, pool, auth, ids: dict[str, str]) -> str:
    """A deployment of the environment's live agents, ``deploying`` with a stored bundle
    and a sealed secrets key, as the build job would leave it (the bytes are not a
    real bundle: the agent routes serve them, they do not read them)."""
    app = client._transport.app  # type: ignore[attr-defined]
    cipher: SecretCipher = app.state.secret_cipher
    objects: ObjectStore = app.state.object_store
    env = {**ids, "bundle": await bundle(pool, ids)}
    r = await client.post(
        f"{env_path(env)}/deployments", json={"bundle_id": env["bundle"]}, headers=auth
    )
    assert r.status_code == 201, r.text
    deployment_id = str(r.json()["id"])
    org_id = uuid.UUID(ids["org_id"])
    await objects.start()
    stored = await objects.put_bundle(org_id, os.urandom(64))
    sealed = await cipher.encrypt(
        org_id, os.urandom(32), f"deploy_bundles/{deployment_id}/secrets_key"
    )
    now = datetime.now(UTC)
    await advance(
        pool,
        deployment_id,
        lambda d: deployment_mod.start_build(d, uuid.uuid4(), now, secrets_key=sealed),
        ids["org_id"],
    )
    await advance(
        pool,
        deployment_id,
        lambda d: deployment_mod.complete_build(
            d, bundle_digest=stored.digest, bundle_key=stored.key, kid="k", now=now
        ),
        ids["org_id"],
    )
    return deployment_id
