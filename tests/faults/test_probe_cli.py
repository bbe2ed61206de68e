"""``byteor-cloud jobs probe``: the operator's end-to-end check of the job engine."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.faults.conftest import REPO, JobRig

pytestmark = pytest.mark.slow


def probe(rig: JobRig, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", "jobs", "probe", *args],
        cwd=REPO,
        env=rig.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_jobs_probe_waits_for_the_probes_and_reports_how_they_ended(rig: JobRig) -> None:
    rig.process("relay"), rig.process("worker")
    done = probe(rig, "--count", "5", "--sleep-ms", "10")
    assert done.returncode == 0, done.stderr
    assert "5 probe jobs after" in done.stdout
    assert "completed: 5" in done.stdout
    assert await rig.scalar("SELECT count(*) FROM probe_effects") == 5

    failed = probe(rig, "--count", "2", "--fail", "permanent")
    assert failed.returncode == 0, failed.stderr
    assert "failed: 2" in failed.stdout

    bad = probe(rig, "--count", "0")
    assert bad.returncode == 2
    assert "--count" in bad.stderr


async def test_jobs_probe_without_a_worker_says_so(rig: JobRig) -> None:
    rig.process("relay")
    stuck = probe(rig, "--timeout", "1")
    assert stuck.returncode == 2
    assert "is a worker running?" in stuck.stderr
    assert "queued: 1" in stuck.stdout
