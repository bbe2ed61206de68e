"""`make run` as a newcomer meets it: `byteor-cloud up`, a token from
`admin create-user`, then create and read back an org, a project and an
environment over HTTP, then `make demo` (a deployment that simulated agents
activate); Ctrl-C leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ops.services.base import free_port, pid_alive

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"up exited early:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"not ready in time:\n{log.read_text()[-3000:]}")


def test_up_serves_the_readme_flow_and_stops_cleanly(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYTEOR_CLOUD_")} | {
        "BYTEOR_CLOUD_HOME": str(home),
        "BYTEOR_CLOUD_API_BIND_ADDR": f"127.0.0.1:{port}",
        "BYTEOR_CLOUD_WORKER_BIND_ADDR": f"127.0.0.1:{free_port()}",
    }
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "ops.cli", "up"], cwd=REPO, env=env, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, up, log)
        made = subprocess.run(
            [
                sys.executable,
                "-m",
                "ops.cli",
                "admin",
                "create-user",
                "--email",
                "newcomer@example.com",
                "--org",
                "First Org",
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        token = next(
            line.split()[1] for line in made.stdout.splitlines() if line.startswith("token:")
        )
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=auth, timeout=10) as http:
            org = http.post("/api/v1/orgs", json={"name": "Acme"})
            assert org.status_code == 201, org.text
            project = http.post(f"{org.json()['links']['self']}/projects", json={"name": "P"})
            assert project.status_code == 201, project.text
            env_r = http.post(
                f"{project.json()['links']['self']}/environments",
                json={"name": "staging", "posture": "staging"},
            )
            assert env_r.status_code == 201, env_r.text
            pos = env_r.headers["X-ByteOr-Position"]
            listed = http.get(
                f"{project.json()['links']['self']}/environments", params={"min_position": pos}
            )
            assert listed.json()["items"] == [env_r.json()]
            orgs = http.get("/api/v1/orgs").json()["items"]
            assert {o["name"] for o in orgs} >= {"First Org", "Acme"}
        # The embedded master key: generated once, private, usable by the CLI.
        assert (home / "master.keys").stat().st_mode & 0o777 == 0o600
        keys = subprocess.run(
            [sys.executable, "-m", "ops.cli", "keys", "status"],
            check=False,
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert keys.returncode == 0, keys.stderr
        assert "current" in keys.stdout
        # `make demo`: the governed path once, ending with agents running a deployment.
        demo = subprocess.run(
            [sys.executable, "-m", "ops.cli", "demo", "--agents", "2", "--duration", "60"],
            check=False,
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert demo.returncode == 0, demo.stderr[-3000:]
        summary = json.loads(demo.stdout.splitlines()[-1])
        assert summary["deployment_status"] == "active", summary
        assert len(summary["agents"]) == 2 and summary["token"].startswith("byp_")
        with httpx.Client(base_url=url, timeout=10) as http:
            deployed = http.get(
                f"/api/v1/orgs/{summary['org_id']}/projects/{summary['project_id']}"
                f"/environments/{summary['environment_id']}/deployments/{summary['deployment_id']}",
                headers={"Authorization": f"Bearer {summary['token']}"},
            ).json()
            assert deployed["status"] == "active"
            assert {r["agent_id"] for r in deployed["reports"]} == set(summary["agents"])
        state = json.loads((home / "stack.json").read_text())
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
            raise
    assert up.returncode == 0, log.read_text()[-3000:]
    pids = [
        svc["pid"]
        for svc in state.values()
        if isinstance(svc, dict) and isinstance(svc.get("pid"), int)
    ]
    assert pids, state
    time.sleep(0.5)
    assert not [p for p in pids if pid_alive(p)], "a service outlived `up`"
    leftovers = subprocess.run(
        ["pgrep", "-f", str(home)], check=False, capture_output=True, text=True
    )
    assert leftovers.stdout.strip() == "", leftovers.stdout
