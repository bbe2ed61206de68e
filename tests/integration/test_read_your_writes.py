"""Read-your-writes across projections: a scoped query route reads its own read
model and the tenancy read model, and each projection moves on its own."""

from __future__ import annotations

import asyncio

import httpx

from ops.app import create_app
from projections.drafts import DraftProjection
from projections.feed import PgFeed
from projections.runner import ProjectionRunner
from projections.tenancy import TenancyProjection


async def catch_up(pool, database: str, *projections) -> None:  # type: ignore[no-untyped-def]
    runner = ProjectionRunner(pool, PgFeed(pool), list(projections), lease_dsn=database)
    try:
        await runner.step()
    finally:
        await runner.close()


async def test_min_position_waits_for_the_tenancy_read_model_too(
    pool, database: str, bootstrap
) -> None:
    auth, org_id = await bootstrap.user("ada@example.com", "Org")
    await catch_up(pool, database, TenancyProjection(), DraftProjection())  # the membership
    app = create_app(pool, PgFeed(pool), projection_wait_s=0.3)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        r = await client.post(f"/api/v1/orgs/{org_id}/projects", json={"name": "P"}, headers=auth)
        assert r.status_code == 201, r.text
        project = r.json()["links"]["self"]
        r = await client.post(
            f"{project}/drafts",
            json={"name": "orders", "target": "SingleRing", "spec_kv": "pipeline.name=orders\n"},
            headers=auth,
        )
        assert r.status_code == 201, r.text
        draft, position = r.json()["links"]["self"], r.headers["X-ByteOr-Position"]

        # The drafts projection has the draft; the tenancy one does not have the
        # project yet. Not a 404 for a project the caller just created: behind.
        await catch_up(pool, database, DraftProjection())
        behind = await client.get(draft, params={"min_position": position}, headers=auth)
        assert behind.status_code == 503, behind.text
        assert behind.json()["code"] == "projection_behind"
        assert "organizations read model" in behind.json()["detail"]

    # Once it catches up, within the wait, the same read answers.
    patient = create_app(pool, PgFeed(pool), projection_wait_s=10.0)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=patient), base_url="http://testserver"
    ) as client:
        read = asyncio.ensure_future(
            client.get(draft, params={"min_position": position}, headers=auth)
        )
        await catch_up(pool, database, TenancyProjection())
        assert (await read).status_code == 200
