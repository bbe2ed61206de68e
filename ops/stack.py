"""The embedded stack: PostgreSQL, NATS, SeaweedFS (S3) and OpenBao (Vault) under one home.

``Stack(home)`` keeps each service's data in ``<home>/<service>`` and records
what it started in ``<home>/stack.json`` (mode 0600: it holds the Vault token and
the S3 secret key). Ports are chosen on the first start and reused afterwards,
so URLs stay stable across restarts and a second process (``byteor-cloud admin
...``, ``stack status``) can find a running stack with :meth:`Stack.load`.

Every service runs in its own process group (see ``ops.services.base``), so
``stop()`` leaves nothing behind. ``start()`` is idempotent: services that are
already up are left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from ops.services.base import LOOPBACK, ServiceError, port_open, process_is
from ops.services.nats import Nats
from ops.services.postgres import Postgres
from ops.services.s3 import S3Ports, SeaweedS3
from ops.services.vault import Vault

if TYPE_CHECKING:
    from ops.config import Settings

log = logging.getLogger(__name__)

SERVICES: tuple[str, ...] = ("postgres", "nats", "s3", "vault")
STATE_FILE = "stack.json"
DATABASE = "byteor"
DEFAULT_BUCKET = "byteor-cloud"

Status = Literal["running", "stopped"]


# --- ports ------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that nothing listens on right now."""
    with contextlib.ExitStack() as held:
        ports: list[int] = []
        for _ in range(count):
            sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((LOOPBACK, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def free_port_pair() -> int:
    """A free port ``p`` whose successor ``p + 1`` is free too (OpenBao needs both)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as first:
            first.bind((LOOPBACK, 0))
            port = int(first.getsockname()[1])
            if port >= 65535:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as second:
                try:
                    second.bind((LOOPBACK, port + 1))
                except OSError:
                    continue
                return port
    raise ServiceError("no pair of adjacent free ports on loopback")


def s3_ports() -> S3Ports:
    names = list(S3Ports.__struct_fields__)
    return S3Ports(**dict(zip(names, free_ports(len(names)), strict=True)))


# --- state file -------------------------------------------------------------------


class PostgresState(msgspec.Struct, kw_only=True):
    port: int
    database: str = DATABASE
    pid: int | None = None
    status: Status = "stopped"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@{LOOPBACK}:{self.port}/{self.database}"


class NatsState(msgspec.Struct, kw_only=True):
    port: int
    monitor_port: int
    pid: int | None = None
    status: Status = "stopped"

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.port}"


class S3State(msgspec.Struct, kw_only=True):
    ports: S3Ports
    access_key: str
    secret_key: str
    bucket: str = DEFAULT_BUCKET
    pid: int | None = None
    status: Status = "stopped"

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.s3}"


class VaultState(msgspec.Struct, kw_only=True):
    port: int
    token: str
    pid: int | None = None
    status: Status = "stopped"

    @property
    def addr(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


class StackState(msgspec.Struct, kw_only=True):
    """What ``<home>/stack.json`` holds. Services never started are ``None``."""

    version: int = 1
    postgres: PostgresState | None = None
    nats: NatsState | None = None
    s3: S3State | None = None
    vault: VaultState | None = None
    updated_at: float = 0.0

    def __repr__(self) -> str:  # never show the token or the secret key
        return f"StackState(services={[n for n in SERVICES if getattr(self, n)]})"


# --- the stack --------------------------------------------------------------------


class Stack:
    """The embedded services of one home directory."""

    def __init__(self, home: Path | str, *, bucket: str = DEFAULT_BUCKET) -> None:
        self.home = Path(home).absolute()
        self.bucket = bucket
        self.state_file = self.home / STATE_FILE
        self.state = self._read_state()

    def __repr__(self) -> str:
        return f"Stack(home={str(self.home)!r})"

    @classmethod
    def load(cls, home: Path | str) -> Stack | None:
        """The stack recorded in ``home``, or ``None`` if none was ever started there.

        ``alive()`` then says which of its services are up, ``urls()`` where they are.
        """
        stack = cls(home)
        return stack if stack.state_file.exists() else None

    # state ----------------------------------------------------------------------

    def _read_state(self) -> StackState:
        try:
            raw = self.state_file.read_bytes()
        except FileNotFoundError:
            return StackState()
        try:
            return msgspec.json.decode(raw, type=StackState)
        except msgspec.DecodeError as err:
            raise ServiceError(f"{self.state_file} is not a valid stack state file: {err}") from err

    def _write_state(self) -> None:
        self.state.updated_at = time.time()
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(msgspec.json.format(msgspec.json.encode(self.state)))
            out.write(b"\n")
        tmp.chmod(0o600)
        tmp.replace(self.state_file)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise start/stop of one home across processes; re-read state inside."""
        self.home.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.home / ".stack.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self.state = self._read_state()
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # service objects built from the state -----------------------------------------

    def postgres(self) -> Postgres:
        st = self._postgres_state()
        pg = Postgres(self.home / "postgres", st.port)
        pg.pid = st.pid
        return pg

    def nats(self) -> Nats:
        st = self._nats_state()
        server = Nats(self.home / "nats", st.port, st.monitor_port)
        server.pid = st.pid
        return server

    def s3(self) -> SeaweedS3:
        st = self._s3_state()
        server = SeaweedS3(
            self.home / "s3", st.ports, access_key=st.access_key, secret_key=st.secret_key
        )
        server.pid = st.pid
        return server

    def vault(self) -> Vault:
        st = self._vault_state()
        server = Vault(self.home / "vault", st.port, st.token)
        server.pid = st.pid
        return server

    def _assigned_ports(self) -> set[int]:
        st = self.state
        ports: set[int] = set()
        if st.postgres is not None:
            ports.add(st.postgres.port)
        if st.nats is not None:
            ports |= {st.nats.port, st.nats.monitor_port}
        if st.s3 is not None:
            ports |= set(st.s3.ports.all())
        if st.vault is not None:
            ports |= {st.vault.port, st.vault.port + 1}
        return ports

    def _new_ports(self, count: int) -> list[int]:
        """Free ports that no other service of this stack has been given yet."""
        while True:
            ports = free_ports(count)
            if not self._assigned_ports().intersection(ports):
                return ports

    def _postgres_state(self) -> PostgresState:
        if self.state.postgres is None:
            self.state.postgres = PostgresState(port=self._new_ports(1)[0])
        return self.state.postgres

    def _nats_state(self) -> NatsState:
        if self.state.nats is None:
            port, monitor = self._new_ports(2)
            self.state.nats = NatsState(port=port, monitor_port=monitor)
        return self.state.nats

    def _s3_state(self) -> S3State:
        if self.state.s3 is None:
            names = S3Ports.__struct_fields__
            ports = S3Ports(**dict(zip(names, self._new_ports(len(names)), strict=True)))
            self.state.s3 = S3State(
                ports=ports,
                access_key="BYTEOR" + secrets.token_hex(7).upper(),
                secret_key=secrets.token_urlsafe(30),
                bucket=self.bucket,
            )
        return self.state.s3

    def _vault_state(self) -> VaultState:
        if self.state.vault is None:
            port = free_port_pair()
            while self._assigned_ports().intersection((port, port + 1)):
                port = free_port_pair()
            self.state.vault = VaultState(port=port, token=secrets.token_urlsafe(32))
        return self.state.vault

    # liveness -------------------------------------------------------------------

    def alive(self) -> tuple[str, ...]:
        """The recorded services that are up right now (pid alive and port open)."""
        return tuple(name for name in self.recorded() if self._alive(name))

    def recorded(self) -> tuple[str, ...]:
        """The services the state file knows (started at least once in this home)."""
        return tuple(name for name in SERVICES if getattr(self.state, name) is not None)

    def urls(self) -> dict[str, str]:
        """``database_url``, ``nats_url``, ``s3_endpoint``, ``vault_addr`` of running services.

        Credentials (S3 keys, Vault token) are in ``self.state``; see ``Settings.with_stack``.
        """
        alive = self.alive()
        urls: dict[str, str] = {}
        if "postgres" in alive and self.state.postgres is not None:
            urls["database_url"] = self.state.postgres.dsn
        if "nats" in alive and self.state.nats is not None:
            urls["nats_url"] = self.state.nats.url
        if "s3" in alive and self.state.s3 is not None:
            urls["s3_endpoint"] = self.state.s3.endpoint
        if "vault" in alive and self.state.vault is not None:
            urls["vault_addr"] = self.state.vault.addr
        return urls

    def _alive(self, name: str) -> bool:
        if name == "postgres":
            pg = self.postgres()
            return _postgres_pid(pg) is not None and port_open(pg.port)
        service: Nats | SeaweedS3 | Vault = getattr(self, name)()
        return service.running()

    # start / stop ---------------------------------------------------------------

    def start(self, services: Iterable[str] = SERVICES, *, timeout: float = 60.0) -> StackState:
        """Start the named services (in parallel) unless they are already running."""
        wanted = _check_names(services)
        with self._locked():
            starters: dict[str, Callable[[], None]] = {}
            for name in wanted:
                getattr(self, f"_{name}_state")()  # allocate ports and secrets once
                if self._alive(name):
                    self._set_status(name, "running")
                    log.info("stack: %s already running", name)
                else:
                    starters[name] = self._starter(name, timeout)
            self._write_state()  # ports and keys are known before anything starts
            try:
                self._run_parallel(starters)
                if "s3" in wanted:
                    self._s3_state().bucket = self.bucket
                    self.s3().create_bucket(self.bucket)  # idempotent
            except BaseException:
                # Whatever this call started (even half-way) goes down again: no orphans.
                for name in starters:
                    try:
                        self._stop_one(name)
                    except Exception:
                        log.exception("stack: could not stop %s", name)
                self._write_state()
                raise
            self._write_state()
            return self.state

    def _run_parallel(self, starters: dict[str, Callable[[], None]]) -> None:
        if not starters:
            return
        errors: dict[str, BaseException] = {}
        with ThreadPoolExecutor(max_workers=len(starters)) as pool:
            futures = {name: pool.submit(fn) for name, fn in starters.items()}
            for name, future in futures.items():
                try:
                    future.result()
                except Exception as err:
                    errors[name] = err
        if errors:
            detail = "; ".join(f"{name}: {err}" for name, err in errors.items())
            raise ServiceError(f"embedded stack did not start ({detail})") from next(
                iter(errors.values())
            )

    def _starter(self, name: str, timeout: float) -> Callable[[], None]:
        def run() -> None:
            began = time.monotonic()
            if name == "postgres":
                pg = self.postgres()
                pg.start(timeout=timeout)
                pg.create_database(self._postgres_state().database)
                self._postgres_state().pid = pg.pid
            else:
                service: Nats | SeaweedS3 | Vault = getattr(self, name)()
                service.start(timeout=timeout)
                getattr(self.state, name).pid = service.pid
            self._set_status(name, "running")
            log.info("stack: started %s in %.2fs", name, time.monotonic() - began)

        return run

    def stop(self, services: Iterable[str] = SERVICES) -> StackState:
        """Stop the named services (all by default) and wait until they are gone."""
        wanted = _check_names(services)
        with self._locked():
            recorded = [name for name in wanted if getattr(self.state, name) is not None]
            if recorded:
                with ThreadPoolExecutor(max_workers=len(recorded)) as pool:
                    list(pool.map(self._stop_one, recorded))
            self._write_state()
            return self.state

    def _stop_one(self, name: str) -> None:
        if name == "postgres":
            pg = self.postgres()
            pg.pid = _postgres_pid(pg)  # never signal a recycled pid
            if pg.pid is not None:
                pg.stop(fast=True)
        else:
            getattr(self, name)().stop()
        self._set_status(name, "stopped")
        getattr(self.state, name).pid = None

    def _set_status(self, name: str, status: Status) -> None:
        getattr(self.state, name).status = status

    # reporting ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """A JSON-printable view of the stack, without secrets."""
        alive = self.alive()
        services: dict[str, Any] = {}
        if (pg := self.state.postgres) is not None:
            services["postgres"] = {
                "port": pg.port,
                "dsn": pg.dsn,
                "log": str(self.home / "postgres" / "postgres.log"),
            }
        if (nats := self.state.nats) is not None:
            services["nats"] = {
                "port": nats.port,
                "monitor_port": nats.monitor_port,
                "url": nats.url,
                "log": str(self.home / "nats" / "nats.log"),
            }
        if (s3 := self.state.s3) is not None:
            services["s3"] = {
                "ports": msgspec.to_builtins(s3.ports),
                "endpoint": s3.endpoint,
                "access_key": s3.access_key,
                "bucket": s3.bucket,
                "log": str(self.home / "s3" / "weed.log"),
            }
        if (vault := self.state.vault) is not None:
            services["vault"] = {
                "port": vault.port,
                "addr": vault.addr,
                "log": str(self.home / "vault" / "bao.log"),
            }
        for name, info in services.items():
            running = name in alive
            info["running"] = running
            info["pid"] = getattr(self.state, name).pid if running else None
            if name == "postgres" and running:
                info["pid"] = _postgres_pid(self.postgres())
        return {
            "home": str(self.home),
            "state_file": str(self.state_file),
            "running": bool(alive) and set(alive) == set(services),
            "services": services,
        }


def _postgres_pid(pg: Postgres) -> int | None:
    """The postmaster's pid if it is alive (from the state, else from postmaster.pid)."""
    for pid in (pg.pid, pg._pid_from_file()):
        if pid is not None and process_is(pid, "postgres"):
            return pid
    return None


def _check_names(services: Iterable[str]) -> list[str]:
    names = list(dict.fromkeys(services))
    unknown = [n for n in names if n not in SERVICES]
    if unknown:
        raise ValueError(f"unknown services {unknown}; expected some of {list(SERVICES)}")
    return [n for n in SERVICES if n in names]


def services_needed(settings: Settings) -> tuple[str, ...]:
    """The embedded services to run: those the settings do not point elsewhere."""
    external = {
        "postgres": settings.database_url,
        "nats": settings.nats_url,
        "s3": settings.s3_endpoint,
        "vault": settings.vault_addr,
    }
    return tuple(name for name in SERVICES if external[name] is None)


# --- what the CLI calls ------------------------------------------------------------


def start_stack(
    home: Path | str, services: Sequence[str] | None = None, *, bucket: str = DEFAULT_BUCKET
) -> dict[str, Any]:
    """``byteor-cloud stack start``: start (or keep) the stack and return its status.

    ``services`` defaults to all of them; pass ``services_needed(settings)`` to skip
    the ones configured as external. ``bucket`` is created in the embedded S3.
    """
    stack = Stack(home, bucket=bucket)
    stack.start(SERVICES if services is None else services)
    return stack.status()


def stop_stack(home: Path | str) -> dict[str, Any]:
    """``byteor-cloud stack stop``: stop every recorded service and return the status."""
    stack = Stack(home)
    stack.stop()
    return stack.status()


def stack_status(home: Path | str) -> dict[str, Any]:
    """``byteor-cloud stack status``: the status, without secrets."""
    return Stack(home).status()
