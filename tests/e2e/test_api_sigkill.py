"""SIGKILL the API in the middle of a burst of commands: every acknowledged
command is in the store, and no command is half-applied."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest

from commands.bootstrap import create_user
from schema.pg import create_pool

pytestmark = pytest.mark.slow


async def bootstrap_token(database: str) -> str:
    pool = await create_pool(database, min_size=1, max_size=2)
    try:
        made = await create_user(
            pool, email="ops@example.com", org_name="Ops", now=datetime.now(UTC)
        )
    finally:
        await pool.close()
    return made.token


async def test_sigkill_during_a_burst_loses_no_acknowledged_command(api_process, database) -> None:
    token = await bootstrap_token(database)
    api_process.start()
    acked: dict[str, int] = {}  # org id -> position, for every 201 the client saw
    failures = 0
    killed = asyncio.Event()
    enough = asyncio.Event()

    async def writer(client: httpx.AsyncClient, w: int) -> None:
        nonlocal failures
        n = 0
        while not killed.is_set() or n < 3:
            n += 1
            try:
                r = await client.post(
                    "/api/v1/orgs",
                    json={"name": f"burst-{w}-{n}"},
                    headers={"Idempotency-Key": str(uuid.uuid4())},
                )
            except httpx.TransportError:
                failures += 1
                if killed.is_set():
                    return
                continue
            assert r.status_code == 201, r.text
            acked[r.json()["id"]] = int(r.headers["X-ByteOr-Position"])
            if len(acked) >= 50:
                enough.set()

    async with httpx.AsyncClient(
        base_url=api_process.url, headers={"Authorization": f"Bearer {token}"}, timeout=5
    ) as client:
        tasks = [asyncio.create_task(writer(client, w)) for w in range(16)]
        await asyncio.wait_for(enough.wait(), 60)
        os.kill(api_process.proc.pid, signal.SIGKILL)
        killed.set()
        await asyncio.gather(*tasks)

    assert len(acked) >= 50
    conn = await asyncpg.connect(database)
    try:
        rows = await conn.fetch(
            """
            SELECT stream_id, count(*) AS n, array_agg(event_type ORDER BY stream_version) AS types,
                   max(position) AS last
            FROM events WHERE stream_type = 'organization' GROUP BY stream_id
            """
        )
    finally:
        await conn.close()
    streams = {r["stream_id"].removeprefix("organization-"): r for r in rows}
    for org_id, position in acked.items():
        assert org_id in streams, f"acknowledged org {org_id} is missing"
        assert streams[org_id]["last"] == position
    for row in rows:
        # Created and creator membership always land together, or not at all.
        assert list(row["types"]) == ["organization.created", "organization.member_added"], row
