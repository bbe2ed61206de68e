"""Demo data for a running stack (``byteor-cloud demo``, ``make demo``).

With ``make run`` up, this walks the whole governed path once so a newcomer
has something real to look at, through the public API only:

1. a user and organization (``admin create-user``'s bootstrap), with a
   personal access token printed once;
2. a project, a ``dev`` environment and the organization's signing key;
3. a draft of a small SingleRing spec, validated by the worker's
   ``spec_ingest`` job, and a version cut from it;
4. a config bundle with one adapter whose password is an inline secret
   (encrypted with the organization's data key before any event);
5. ``--agents`` simulated agents enrolled with minted enrollment tokens;
6. a deployment of the bundle to them: the worker builds and signs the
   bundle, and the agents download it, verify it offline and activate it
   while they heartbeat (``ops/agent_sim.py``) for ``--duration`` seconds.

Progress goes to stderr; the last line is a JSON summary with the ids, the
token and the deployment's final status. ``dev`` needs no approval; a
``prod`` environment would wait for a second operator (see the README).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from ops.agent_sim import (
    SimAgent,
    Target,
    client_for,
    enroll_all,
    heartbeat_all,
    sync_all,
)
from ops.http_lanes import Lanes

SPEC_KV = """pipeline.name=orders
pipeline.target=SingleRing
single_ring.ordering=per_key
single_ring.shard_key=customer_id
single_ring.shards=8
single_ring.stages.0.key=dataguard_check
single_ring.stages.1.depends_on.0=0
single_ring.stages.1.key=http_post:https://hooks.example.com/orders
"""


class DemoError(Exception):
    """A step of the demo got an answer it cannot go on with."""


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def _call(
    client: httpx.AsyncClient, method: str, path: str, token: str, body: Any = None
) -> dict[str, Any]:
    r = await client.request(method, path, json=body, headers={"Authorization": f"Bearer {token}"})
    if r.status_code >= 300:
        raise DemoError(f"{method} {path} answered {r.status_code}: {r.text[:400]}")
    answer: dict[str, Any] = r.json()
    return answer


async def _until(
    client: httpx.AsyncClient, path: str, token: str, done: Any, what: str, within_s: float
) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    body: dict[str, Any] | None = None
    while True:
        r = await client.get(path, headers={"Authorization": f"Bearer {token}"})
        # 404: the read model has not caught up with the write yet.
        if r.status_code not in (200, 404):
            raise DemoError(f"GET {path} answered {r.status_code}: {r.text[:400]}")
        if r.status_code == 200:
            body = r.json()
            if done(body):
                return body
        if time.monotonic() > deadline:
            raise DemoError(f"{what}: not reached within {within_s:.0f} s (last: {body})")
        await asyncio.sleep(0.2)


async def run_demo(
    api: str, token: str, org_id: str, *, agents: int, duration: float
) -> dict[str, Any]:
    """Steps 2-6 of the module docstring as ``token``'s holder (an org_admin)."""
    async with client_for(api, 16) as client:
        org = f"/api/v1/orgs/{org_id}"
        project = await _call(client, "POST", f"{org}/projects", token, {"name": "demo"})
        project_path = f"{org}/projects/{project['id']}"
        env = await _call(
            client,
            "POST",
            f"{project_path}/environments",
            token,
            {"name": "dev", "posture": "dev"},
        )
        env_path = f"{project_path}/environments/{env['id']}"
        await _call(client, "POST", f"{org}/signing-keys", token, {"name": "demo"})
        _say(f"project {project['id']}, environment {env['id']} (dev), signing key made")

        draft = await _call(
            client,
            "POST",
            f"{project_path}/drafts",
            token,
            {"name": "orders", "target": "SingleRing", "spec_kv": SPEC_KV},
        )
        draft = await _until(
            client,
            f"{project_path}/drafts/{draft['id']}",
            token,
            lambda d: d["validation"]["status"] != "pending",
            "draft validation (is the worker running?)",
            60,
        )
        if draft["validation"]["status"] != "valid":
            raise DemoError(f"the demo draft is not valid: {draft['validation']}")
        version = await _call(
            client, "POST", f"{project_path}/drafts/{draft['id']}/versions", token
        )
        _say(f"draft {draft['id']} valid; version {version['id']} ({version['spec_hash']})")

        bundle = await _call(
            client,
            "POST",
            f"{env_path}/bundles",
            token,
            {
                "version_id": version["id"],
                "tuning": {"profile": "default"},
                "adapters": [
                    {
                        "name": "orders-db",
                        "family": "postgres",
                        "endpoint": "postgresql://orders-db.example:5432/orders",
                        "secretRefs": {
                            "password": {"kind": "inline", "value": secrets.token_urlsafe(18)}
                        },
                    }
                ],
                "parameters": {"region": "local"},
            },
        )
        _say(f"config bundle {bundle['id']} (inline secret sealed)")

        target = Target(api, org_id, project["id"], env["id"])
        sims = await enroll_all(client, target, [], agents, mint_with=token)
        _say(f"{len(sims)} agents enrolled")
        deployment = await _call(
            client, "POST", f"{env_path}/deployments", token, {"bundle_id": bundle["id"]}
        )
        _say(f"deployment {deployment['id']}: {deployment['status']}")
        final = await _roll_out(
            client, api, sims, token, f"{env_path}/deployments", deployment, duration
        )
    return {
        "org_id": org_id,
        "project_id": project["id"],
        "environment_id": env["id"],
        "version_id": version["id"],
        "bundle_id": bundle["id"],
        "deployment_id": deployment["id"],
        "deployment_status": final["status"],
        "agents": [s.agent_id for s in sims],
    }


async def _roll_out(
    client: httpx.AsyncClient,
    api: str,
    sims: list[SimAgent],
    token: str,
    deployments: str,
    deployment: dict[str, Any],
    duration: float,
) -> dict[str, Any]:
    """Heartbeat and sync the agents for ``duration`` s, or until the deployment settles."""
    stop = asyncio.Event()
    tally: dict[str, int] = {}
    lanes = Lanes(api, 8)
    beating = asyncio.create_task(
        heartbeat_all(lanes, sims, interval=1.0, duration=duration, stop=stop, progress_every=None)
    )
    syncing = asyncio.create_task(sync_all(client, sims, every=0.5, stop=stop, tally=tally))
    try:
        final = await _until(
            client,
            f"{deployments}/{deployment['id']}",
            token,
            lambda d: d["status"] in ("active", "failed") or stop.is_set(),
            "the deployment becoming active",
            max(duration, 1.0),
        )
        _say(f"deployment {deployment['id']}: {final['status']} ({tally})")
        return final
    finally:
        stop.set()
        await syncing
        await beating
        await lanes.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--email", default="demo@byteor.local", help="the demo user's email")
    parser.add_argument("--org", default="Demo", help="the demo organization's name")
    parser.add_argument("--agents", type=int, default=3, help="simulated agents (default 3)")
    parser.add_argument(
        "--duration",
        type=float,
        default=60.0,
        help="longest wait, in seconds, for the deployment to become active (default 60)",
    )


async def demo(database_url: str, db_role: str | None, api: str, args: argparse.Namespace) -> int:
    """Step 1 (the bootstrap, on the database like ``admin create-user``), then the rest."""
    from commands.bootstrap import create_user
    from ops.processes import require_migrated
    from schema.pg import create_pool

    if args.agents < 1 or args.duration <= 0:
        raise DemoError("--agents and --duration must be positive")
    await require_migrated(database_url)
    pool = await create_pool(database_url, role=db_role, min_size=1, max_size=2)
    try:
        made = await create_user(pool, email=args.email, org_name=args.org, now=datetime.now(UTC))
    finally:
        await pool.close()
    _say(f"user {made.user_id}, organization {made.org_id} ({args.org})")
    summary = await run_demo(
        api, made.token, str(made.org_id), agents=args.agents, duration=args.duration
    )
    # The token is shown once, like admin create-user shows it.
    print(json.dumps({**summary, "user_id": str(made.user_id), "token": made.token}))
    return 0 if summary["deployment_status"] == "active" else 1


__all__ = ["DemoError", "add_arguments", "demo", "run_demo"]
