"""Run every benchmark, one after another, each in its own process.

    python -m ops.bench [ARGS...]

Each module in BENCHMARKS runs as ``python -m ops.bench.<name> ARGS...`` with
its output passed straight through (each prints one JSON line last). The exit
status is non-zero if any benchmark failed; the rest still run.
"""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = ["eventstore", "authz", "spec", "jobs", "deploy", "agents"]

USAGE = __doc__ or ""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        print(USAGE.strip())
        print(f"\nbenchmarks: {', '.join(BENCHMARKS)} (see python -m ops.bench.<name> --help)")
        return 0
    failed = []
    for name in BENCHMARKS:
        print(f"== ops.bench.{name}", file=sys.stderr, flush=True)
        result = subprocess.run([sys.executable, "-m", f"ops.bench.{name}", *args], check=False)
        if result.returncode != 0:
            print(f"ops.bench.{name} failed (exit {result.returncode})", file=sys.stderr)
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
