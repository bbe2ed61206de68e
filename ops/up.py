"""``byteor-cloud up``: the whole system in the foreground, for ``make run``.

Starts the embedded services that no external URL replaces, applies
migrations, then runs api, projector, relay and worker as child processes.
Ctrl-C (or SIGTERM) stops the children, then the services this command
started; a child that dies on its own stops the rest, so nothing is left
half-running.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from typing import Any

from ops.config import Settings

PROCESSES = ("api", "projector", "relay", "worker")


class _Stop(Exception):
    pass


def _raise_stop(*_: Any) -> None:
    raise _Stop


def _child_env(rt: Any) -> dict[str, str]:
    env = dict(os.environ)
    for key, value in {
        "BYTEOR_CLOUD_DATABASE_URL": rt.database_url,
        "BYTEOR_CLOUD_NATS_URL": rt.nats_url,
        "BYTEOR_CLOUD_S3_ENDPOINT": rt.s3_endpoint,
        "BYTEOR_CLOUD_S3_ACCESS_KEY": rt.s3_access_key,
        "BYTEOR_CLOUD_S3_SECRET_KEY": rt.s3_secret_key,
        "BYTEOR_CLOUD_VAULT_ADDR": rt.vault_addr,
        "BYTEOR_CLOUD_VAULT_TOKEN": rt.vault_token,
    }.items():
        if value:
            env[key] = value
    return env


def _terminate(children: dict[str, subprocess.Popen[bytes]]) -> None:
    for proc in children.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for proc in children.values():
        remaining = max(0.1, deadline - time.monotonic())
        try:
            proc.wait(remaining)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def run_up(settings: Settings) -> int:
    from ops.cli import resolve_runtime
    from ops.master_keys import child_env as master_key_env
    from ops.stack import Stack, services_needed, start_stack, stop_stack
    from schema.migrate import migrate_dsn

    previous = Stack.load(settings.home)
    already = set(previous.alive()) if previous is not None else set()
    needed = services_needed(settings)
    signal.signal(signal.SIGTERM, _raise_stop)
    children: dict[str, subprocess.Popen[bytes]] = {}
    started_stack = False
    code = 0
    try:
        if needed:
            print(f"starting embedded services: {', '.join(needed)} (data in {settings.home})")
            start_stack(settings.home, needed)
            started_stack = bool(set(needed) - already)
        rt = resolve_runtime(settings)
        applied = asyncio.run(migrate_dsn(rt.database_url))
        print(f"migrations: {len(applied)} applied" if applied else "migrations: up to date")
        env = _child_env(rt)
        env.update(master_key_env(settings))
        for name in PROCESSES:
            children[name] = subprocess.Popen(
                [sys.executable, "-m", "ops.cli", name], env=env, stdin=subprocess.DEVNULL
            )
        api = f"http://{rt.api_host}:{rt.api_port}"
        print(
            "\nByteOr Cloud is running.\n"
            f"  API:        {api}   (OpenAPI: {api}/schema/openapi.json)\n"
            f"  health:     {api}/healthz   {api}/readyz   {api}/metrics\n"
            "  first token: in another terminal, from this checkout:\n"
            "    .venv/bin/byteor-cloud admin create-user --email you@example.com --org 'My Org'\n"
            "Ctrl-C stops everything.\n",
            flush=True,
        )
        while True:
            for name, proc in children.items():
                if proc.poll() is not None:
                    print(f"{name} exited with code {proc.returncode}; stopping everything")
                    code = 1
                    raise _Stop
            time.sleep(0.5)
    except (KeyboardInterrupt, _Stop):
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _terminate(children)
        if started_stack:
            print("stopping embedded services")
            stop_stack(settings.home)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    return code
