"""Deployments and approvals over HTTP on real Postgres (DOMAIN.md §5).

A prod environment needs an approval; the requester cannot approve it; another
operator's approval moves the deployment to ``approved`` in the same append and
issues a credential that verifies offline against the key set; the in-flight
cap; deny; revoke; rollback to ``rolling_back``. The build job and the agents'
reports are other components: their transitions are appended here directly.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from commands.bootstrap import create_user
from commands.config_bundles import BUNDLES
from commands.pgstore import PgEventStore
from domain.credential import Coverage, check_coverage, keys_from_key_set
from ops.app import create_app
from projections.feed import PgFeed
from tests.integration.deploy_world import (
    SPEC_HASH,
    activate,
    add_members,
    agent,
    bundle,
    env_path,
    make_cipher,
    settled,
    tree,
)
from tests.lifecycle import verify
from workers.consumer import JobContext
from workers.spec_ingest import SpecIngest

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def api(pool: asyncpg.Pool, projector) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(pool, PgFeed(pool), projection_wait_s=5.0, secret_cipher=make_cipher(pool))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


class Team:
    """Ada (org_admin) requests; Bob (operator) approves; Vic is a viewer."""

    def __init__(self, client: httpx.AsyncClient, pool) -> None:
        self.client = client
        self.pool = pool

    async def setup(self) -> None:
        now = datetime.now(UTC)
        ada = await create_user(self.pool, email="ada@example.com", org_name="Org", now=now)
        bob = await create_user(self.pool, email="bob@example.com", org_name="Bob's", now=now)
        vic = await create_user(self.pool, email="vic@example.com", org_name="Vic's", now=now)
        self.org = str(ada.org_id)
        self.ada = {"Authorization": f"Bearer {ada.token}"}
        self.bob = {"Authorization": f"Bearer {bob.token}"}
        self.vic = {"Authorization": f"Bearer {vic.token}"}
        self.ada_id, self.bob_id = str(ada.user_id), str(bob.user_id)
        await add_members(self.pool, self.org, {bob.user_id: "operator", vic.user_id: "viewer"})
        r = await self.client.post(
            f"/api/v1/orgs/{self.org}/signing-keys", json={"name": "k"}, headers=self.ada
        )
        assert r.status_code == 201, r.text

    async def env(self, posture: str = "prod", cap: int | None = None, agents: int = 2):
        ids = await tree(self.client, self.ada, self.org, posture, cap)
        made = [await agent(self.client, self.ada, ids) for _ in range(agents)]
        return ids, made

    async def deploy(self, ids, bundle_id: str, auth=None) -> httpx.Response:
        return await self.client.post(
            f"{env_path(ids)}/deployments", json={"bundle_id": bundle_id}, headers=auth or self.ada
        )

    async def decide(self, ids, approval_id: str, action: str, auth, body=None):
        return await self.client.post(
            f"{env_path(ids)}/approvals/{approval_id}/{action}", json=body, headers=auth
        )

    async def get(self, ids, what: str, auth=None, position=None) -> dict:
        query = f"?min_position={position}" if position else ""
        r = await self.client.get(f"{env_path(ids)}/{what}{query}", headers=auth or self.vic)
        assert r.status_code == 200, r.text
        return dict(r.json())


@pytest.fixture
async def team(api, pool) -> Team:
    t = Team(api, pool)
    await t.setup()
    return t


async def test_prod_needs_another_operator_and_the_credential_verifies_offline(
    team: Team, pool
) -> None:
    ids, agents = await team.env("prod")
    bundle_id = await bundle(pool, ids)

    r = await team.deploy(ids, bundle_id)
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["status"] == "pending_approval" and made["approval_status"] == "pending"
    assert sorted(made["agent_ids"]) == sorted(a["agent_id"] for a in agents)
    assert made["requested_tuning"]["profile"] == "low-latency"
    approval_id = made["approval_id"]

    # The requester cannot approve (separation of duties); a viewer cannot at all.
    r = await team.decide(ids, approval_id, "approve", team.ada)
    assert r.status_code == 403 and r.json()["code"] == "approval_by_requester", r.text
    r = await team.decide(ids, approval_id, "approve", team.vic)
    assert r.status_code == 403 and r.json()["code"] == "permission_denied", r.text

    r = await team.decide(ids, approval_id, "approve", team.bob, {"reason": "looks good"})
    assert r.status_code == 200, r.text
    approved = r.json()
    assert approved["status"] == "approved" and approved["decided_by"] == team.bob_id
    credential = approved["credential"]
    position = r.headers["X-ByteOr-Position"]

    shown = await team.get(ids, f"deployments/{made['id']}", position=position)
    assert shown["status"] == "approved" and shown["approval_status"] == "approved"
    assert [h["status"] for h in shown["history"]] == ["pending_approval", "approved"]
    assert (await team.get(ids, f"approvals/{approval_id}"))["credential"] == credential

    # An agent verifies it offline with the key set and nothing else.
    key_set = await team.client.get(
        f"/api/v1/orgs/{team.org}/signing-keys/key-set",
        headers={"Authorization": f"Bearer {agents[0]['api_key']}"},
    )
    claims = check_coverage(
        credential,
        keys=keys_from_key_set(key_set.content),
        verify=verify,
        required=Coverage(
            org_id=uuid.UUID(ids["org_id"]),
            project_id=uuid.UUID(ids["project_id"]),
            environment_id=uuid.UUID(ids["env_id"]),
            environment_posture="prod",
            spec_hash=SPEC_HASH,
            capabilities=("http_post",),
        ),
        now=datetime.now(UTC),
    )
    assert claims.approval_id == approval_id and claims.issued_by == team.bob_id

    # Decided once: approving again is a conflict.
    r = await team.decide(ids, approval_id, "approve", team.bob)
    assert r.status_code == 409 and r.json()["code"] == "approval_illegal_transition"

    events = await pool.fetch(
        "SELECT event_type, actor_id FROM events WHERE stream_type IN ('deployment', 'approval')"
        " ORDER BY position"
    )
    assert [(e["event_type"], e["actor_id"]) for e in events] == [
        ("deployment.requested", team.ada_id),
        ("approval.requested", team.ada_id),
        ("approval.approved", team.bob_id),
        ("deployment.approved", team.bob_id),
    ]


async def test_dev_needs_no_approval(team: Team, pool) -> None:
    ids, _ = await team.env("dev")
    r = await team.deploy(ids, await bundle(pool, ids))
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "approved" and r.json()["approval_id"] is None


async def test_cap_reached_is_409(team: Team, pool) -> None:
    ids, _ = await team.env("prod", cap=1)
    bundle_id = await bundle(pool, ids)
    r = await team.deploy(ids, bundle_id)
    assert r.status_code == 201, r.text
    await settled(pool, r.headers["X-ByteOr-Position"])
    r = await team.deploy(ids, bundle_id)
    assert r.status_code == 409 and r.json()["code"] == "deployment_cap_reached", r.text


async def test_deny_and_revoke(team: Team, pool) -> None:
    ids, _ = await team.env("prod")
    bundle_id = await bundle(pool, ids)
    first = (await team.deploy(ids, bundle_id)).json()
    second = (await team.deploy(ids, bundle_id)).json()

    r = await team.decide(ids, first["approval_id"], "deny", team.ada, {"reason": "mine"})
    assert r.status_code == 403 and r.json()["code"] == "approval_by_requester"
    r = await team.decide(ids, first["approval_id"], "deny", team.bob, {"reason": "not today"})
    assert r.status_code == 200 and r.json()["status"] == "denied", r.text
    # The requester may withdraw their own request.
    r = await team.decide(ids, second["approval_id"], "revoke", team.ada)
    assert r.status_code == 200 and r.json()["status"] == "revoked", r.text

    await settled(pool, r.headers["X-ByteOr-Position"])
    page = await team.get(ids, "deployments?status=denied")
    assert {d["id"] for d in page["items"]} == {first["id"], second["id"]}
    assert {d["approval_status"] for d in page["items"]} == {"denied", "revoked"}
    approvals = await team.get(ids, "approvals")
    assert len(approvals["items"]) == 2


async def test_unknown_bundle_and_agents_of_another_environment(team: Team, pool) -> None:
    ids, _ = await team.env("dev")
    other, other_agents = await team.env("dev")
    r = await team.deploy(ids, str(uuid.uuid4()))
    assert r.status_code == 404 and r.json()["code"] == "bundle_not_found"
    # Another environment's bundle is not found here either.
    r = await team.deploy(ids, await bundle(pool, other))
    assert r.status_code == 404
    r = await team.client.post(
        f"{env_path(ids)}/deployments",
        json={"bundle_id": await bundle(pool, ids), "agent_ids": [other_agents[0]["agent_id"]]},
        headers=team.ada,
    )
    assert r.status_code == 422 and r.json()["errors"][0]["path"] == "/agent_ids/0", r.text


async def test_rollback_restores_the_previous_bundle(team: Team, pool) -> None:
    ids, _ = await team.env("dev")
    old_bundle, new_bundle = await bundle(pool, ids), await bundle(pool, ids)
    old = (await team.deploy(ids, old_bundle)).json()
    await activate(pool, old["id"], team.org)
    new = (await team.deploy(ids, new_bundle)).json()
    await activate(pool, new["id"], team.org, replacing=old["id"])

    r = await team.client.post(
        f"{env_path(ids)}/deployments/{new['id']}/rollback", headers=team.bob
    )
    assert r.status_code == 201, r.text
    restoring = r.json()
    assert restoring["bundle_id"] == old_bundle and restoring["rollback_of"] == new["id"]
    assert restoring["status"] == "approved"  # dev: no approval needed

    await settled(pool, r.headers["X-ByteOr-Position"])
    rolled = await team.get(ids, f"deployments/{new['id']}")
    assert rolled["status"] == "rolling_back" and rolled["rollback_id"] == restoring["id"]
    # Rolling back again while it is rolling back is a conflict.
    r = await team.client.post(
        f"{env_path(ids)}/deployments/{new['id']}/rollback", headers=team.bob
    )
    assert r.status_code == 409 and r.json()["code"] == "deployment_illegal_transition"
    # The first deployment superseded nothing: nothing to restore.
    await settled(pool)
    r = await team.client.post(
        f"{env_path(ids)}/deployments/{old['id']}/rollback", headers=team.bob
    )
    assert r.status_code == 409, r.text


async def test_no_signing_key_is_a_conflict_and_nothing_is_appended(api, pool) -> None:
    now = datetime.now(UTC)
    ada = await create_user(pool, email="ada@example.com", org_name="Org", now=now)
    bob = await create_user(pool, email="bob@example.com", org_name="Bob's", now=now)
    await add_members(pool, str(ada.org_id), {bob.user_id: "operator"})
    auth = {"Authorization": f"Bearer {ada.token}"}
    ids = await tree(api, auth, str(ada.org_id), "prod")
    await agent(api, auth, ids)
    made = await api.post(
        f"{env_path(ids)}/deployments", json={"bundle_id": await bundle(pool, ids)}, headers=auth
    )
    before = await pool.fetchval("SELECT count(*) FROM events")
    r = await api.post(
        f"{env_path(ids)}/approvals/{made.json()['approval_id']}/approve",
        headers={"Authorization": f"Bearer {bob.token}"},
    )
    assert r.status_code == 409 and r.json()["code"] == "signing_key_missing", r.text
    assert await pool.fetchval("SELECT count(*) FROM events") == before


async def test_a_lapsed_request_is_expired_and_frees_its_slot(pool, projector) -> None:
    """Expiry is lazy: a request made 25 h ago reads ``expired``, cannot be decided,
    and does not hold a slot of the in-flight cap, before any sweeper runs."""
    shift = {"by": timedelta(hours=-25)}
    app = create_app(
        pool,
        PgFeed(pool),
        projection_wait_s=5.0,
        secret_cipher=make_cipher(pool),
        clock=lambda: datetime.now(UTC) + shift["by"],
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        team = Team(client, pool)
        await team.setup()
        ids, _ = await team.env("prod", cap=1)
        bundle_id = await bundle(pool, ids)
        lapsed = (await team.deploy(ids, bundle_id)).json()
        await settled(pool)
        shift["by"] = timedelta(0)

        r = await team.decide(ids, lapsed["approval_id"], "approve", team.bob)
        assert r.status_code == 409 and "expired" in r.json()["detail"], r.text
        assert (await team.get(ids, f"approvals/{lapsed['approval_id']}"))["status"] == "expired"
        shown = await team.get(ids, f"deployments/{lapsed['id']}")
        assert shown["approval_status"] == "expired"
        r = await team.deploy(ids, bundle_id)
        assert r.status_code == 201, r.text


def fill(template: str, ids: dict[str, str]) -> str:
    return re.sub(r"\{(\w+):uuid\}", lambda m: ids[m.group(1)], template)


async def test_a_bundle_made_through_its_route_deploys_and_is_locked(team: Team, pool) -> None:
    """The whole write path: draft → version → config bundle (its own route) → deployment;
    the bundle is in use from then on."""
    ids, _ = await team.env("staging")
    project = f"/api/v1/orgs/{ids['org_id']}/projects/{ids['project_id']}"
    spec_kv = (
        "pipeline.name=m\npipeline.target=SingleRing\nsingle_ring.ordering=strict\n"
        "single_ring.shards=1\nsingle_ring.stages.0.key=x\n"
    )
    r = await team.client.post(
        f"{project}/drafts",
        json={"name": "d", "target": "SingleRing", "spec_kv": spec_kv},
        headers=team.ada,
    )
    assert r.status_code == 201, r.text
    draft_id = r.json()["id"]
    ctx = JobContext(
        job_id=uuid.uuid4(),
        job_type="spec_ingest",
        payload={"draft_id": draft_id, "revision": 1},
        attempt=1,
        max_attempts=1,
        generation=0,
        tenant_id=None,
    )
    assert (await SpecIngest(PgEventStore(pool))(ctx) or {})["outcome"] == "valid"
    version = await team.client.post(f"{project}/drafts/{draft_id}/versions", headers=team.ada)
    assert version.status_code == 201, version.text
    made = await team.client.post(
        fill(BUNDLES, ids),
        json={"version_id": version.json()["id"], "tuning": {"profile": "default"}},
        headers=team.ada,
    )
    assert made.status_code == 201, made.text
    bundle_id = made.json()["id"]

    r = await team.deploy(ids, bundle_id)
    assert r.status_code == 201, r.text
    # staging, no side-effecting capability: no approval needed.
    assert r.json()["status"] == "approved"
    assert r.json()["spec_hash"] == version.json()["spec_hash"]
    r = await team.client.delete(fill(BUNDLES, ids) + f"/{bundle_id}", headers=team.ada)
    assert r.status_code == 409 and r.json()["code"] == "bundle_in_use", r.text


async def test_a_denied_rollback_is_abandoned(team: Team, pool) -> None:
    """prod: a rollback needs an approval too; denied, the deployment is active again."""
    ids, _ = await team.env("prod")
    old_bundle, new_bundle = await bundle(pool, ids), await bundle(pool, ids)
    old = (await team.deploy(ids, old_bundle)).json()
    r = await team.decide(ids, old["approval_id"], "approve", team.bob)
    assert r.status_code == 200, r.text
    await activate(pool, old["id"], team.org)
    new = (await team.deploy(ids, new_bundle)).json()
    assert (await team.decide(ids, new["approval_id"], "approve", team.bob)).status_code == 200
    await activate(pool, new["id"], team.org, replacing=old["id"])

    r = await team.client.post(
        f"{env_path(ids)}/deployments/{new['id']}/rollback", headers=team.ada
    )
    assert r.status_code == 201, r.text
    restoring = r.json()
    assert restoring["status"] == "pending_approval" and restoring["bundle_id"] == old_bundle
    r = await team.decide(ids, restoring["approval_id"], "deny", team.bob)
    assert r.status_code == 200, r.text

    await settled(pool, r.headers["X-ByteOr-Position"])
    assert (await team.get(ids, f"deployments/{restoring['id']}"))["status"] == "denied"
    back = await team.get(ids, f"deployments/{new['id']}")
    assert back["status"] == "active" and back["rollback_id"] is None
    assert [h["status"] for h in back["history"]][-2:] == ["rolling_back", "active"]
