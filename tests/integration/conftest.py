from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest

from commands.bootstrap import create_user
from ops.app import create_app
from projections.config_bundles import ConfigBundleProjection
from projections.deployments import DeploymentProjection
from projections.drafts import DraftProjection
from projections.feed import PgFeed
from projections.runner import ProjectionRunner
from projections.tenancy import TenancyProjection


@pytest.fixture
async def projector(pool: asyncpg.Pool, database: str) -> AsyncIterator[ProjectionRunner]:
    runner = ProjectionRunner(
        pool,
        PgFeed(pool, listen_dsn=database),
        [TenancyProjection(), DraftProjection(), ConfigBundleProjection(), DeploymentProjection()],
        lease_dsn=database,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    yield runner
    stop.set()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    await runner.close()


@pytest.fixture
async def client(pool: asyncpg.Pool, database: str, projector) -> AsyncIterator[httpx.AsyncClient]:
    # httpx's ASGI transport runs the app in this test's event loop, where the
    # pool lives (Litestar's AsyncTestClient runs it in a portal thread).
    feed = PgFeed(pool)
    app = create_app(pool, feed, projection_wait_s=5.0)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


class Bootstrap:
    def __init__(self, pool: asyncpg.Pool, *, projected: bool = False) -> None:
        self.pool = pool
        self.projected = projected

    async def user(self, email: str, org: str) -> tuple[dict[str, str], str]:
        made = await create_user(self.pool, email=email, org_name=org, now=datetime.now(UTC))
        if self.projected:
            await self._until_projected(made.org_id, made.user_id)
        return {"Authorization": f"Bearer {made.token}"}, str(made.org_id)

    async def _until_projected(self, org_id: uuid.UUID, user_id: uuid.UUID) -> None:
        """Wait for the projector to show the membership, as a client would with
        ``?min_position=``: a test's first request must not race the read model
        (another tenant's org not yet projected is a plain 404, not a denial)."""
        deadline = time.monotonic() + 5.0
        query = "SELECT 1 FROM org_member_view WHERE org_id = $1 AND user_id = $2"
        while await self.pool.fetchval(query, org_id, user_id) is None:
            if time.monotonic() > deadline:
                raise AssertionError("the projector did not show the new membership within 5 s")
            await asyncio.sleep(0.005)


@pytest.fixture
def bootstrap(pool: asyncpg.Pool, request: pytest.FixtureRequest) -> Bootstrap:
    # With a projector running (the API client fixture starts one), wait for it.
    return Bootstrap(pool, projected="projector" in request.fixturenames)


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory: pytest.TempPathFactory):
    """A real OpenID provider on loopback (tests/oidc_provider.py): ``.issuer``,
    ``.client_id``, ``.client_secret``, ``.redirect_uri``."""
    from tests.oidc_provider import OidcProvider

    provider = OidcProvider(tmp_path_factory.mktemp("oidc"))
    provider.start()
    try:
        yield provider
    finally:
        provider.stop()
