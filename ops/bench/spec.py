"""Spec benchmark: parse + validate + lower throughput, and growth with spec size.

    python -m ops.bench.spec [--seconds 1.0] [--runs 5] [--max-keys 10000]

In one process, no services. Each operation is ``domain.spec.compile_kv`` on
canonical KV text: parse → structural → validate → lower (canonical encode and
SHA-256), exactly what ingesting a raw KV draft costs.

  small  a 4-stage SingleRing (per_key, http_post and exec stages), 15 keys
  large  a 50-stage LaneGraph chain (51 lanes, every 5th stage http_post), 407 keys

Throughput is specs/s over ``--seconds`` per run, median of ``--runs`` runs.
Growth times LaneGraph chains of about 1, 10, 100, 1,000 and 10,000 keys
(``8k + 7`` keys for ``k`` stages; below 15 keys the spec cannot be valid and
the time is that of parsing and rejecting it): µs per key should stay roughly
flat from 100 keys up, i.e. time grows linearly with the key count.

The end-to-end ingest latency (``ingest_p99_ms``; ops/bench/ingest.py) is draft
save over HTTP → ``spec_ingest`` through the relay, NATS JetStream and a worker
→ validation visible in a read, with the small spec, on real PostgreSQL and
NATS started for it: p50/p99 of ``--ingest-samples`` sequential saves (target:
p99 < 250 ms). ``--ingest-samples 0`` skips it (``null``).
The last line is one JSON object for the lead's report.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from collections.abc import Callable

from domain.spec import SpecError, compile_kv

TARGET_SMALL_PER_S = 5_000
TARGET_INGEST_P99_MS = 250

SMALL = b"""pipeline.name=orders
pipeline.target=SingleRing
single_ring.ordering=per_key
single_ring.producer=single
single_ring.scheduling=dedicated
single_ring.shard_key=customer_id
single_ring.shards=8
single_ring.stages.0.key=dataguard_check
single_ring.stages.1.depends_on.0=0
single_ring.stages.1.key=dataguard_redact
single_ring.stages.2.depends_on.0=1
single_ring.stages.2.key=http_post:https://hooks.example.com/orders
single_ring.stages.3.depends_on.0=1
single_ring.stages.3.depends_on.1=2
single_ring.stages.3.key=exec:/usr/bin/tee|-a|/var/log/orders.log
"""


def chain(stages: int) -> bytes:
    """Canonical KV of a LaneGraph chain: ingress → lane 0 → stage 0 → lane 1 → ... → egress."""
    lines = ["pipeline.name=chain", "pipeline.target=LaneGraph"]
    lines += [f"lane_graph.egress.0=lane-{stages}", "lane_graph.ingress.0=lane-0"]
    for i in range(stages + 1):
        kind = ("Events", "Journal", "SequencedSlots", "FanoutBroadcast")[i % 4]
        lines += [
            f"lane_graph.lanes.{i}.kind={kind}",
            f"lane_graph.lanes.{i}.name=lane-{i}",
            f"lane_graph.lanes.{i}.on_full={'Block' if i % 2 else 'Drop'}",
        ]
    for i in range(stages):
        key = f"http_post:https://sink{i}.example.com/in" if i % 5 == 4 else "dataguard_check"
        lines += [
            f"lane_graph.stages.{i}.inputs.0=lane-{i}",
            f"lane_graph.stages.{i}.key={key}",
            f"lane_graph.stages.{i}.name=stage-{i}",
            f"lane_graph.stages.{i}.outputs.0=lane-{i + 1}",
            f"lane_graph.stages.{i}.role=stage",
        ]
    return ("\n".join(lines) + "\n").encode()


def _compile(text: bytes) -> bool:
    try:
        compile_kv(text)
    except SpecError:
        return False
    return True


def throughput(text: bytes, seconds: float, runs: int) -> tuple[float, list[float]]:
    """Median specs/s over ``runs`` runs of about ``seconds`` each."""
    rates = []
    for _ in range(runs):
        count = 0
        started = time.perf_counter()
        deadline = started + seconds
        while True:
            for _ in range(50):
                compile_kv(text)
            count += 50
            now = time.perf_counter()
            if now >= deadline:
                break
        rates.append(count / (now - started))
    return statistics.median(rates), rates


def per_call(fn: Callable[[], object], budget: float = 0.3) -> float:
    """Median seconds per call over 3 batches of about ``budget`` seconds."""
    fn()
    samples = []
    for _ in range(3):
        count = 0
        started = time.perf_counter()
        while True:
            fn()
            count += 1
            elapsed = time.perf_counter() - started
            if elapsed >= budget:
                break
        samples.append(elapsed / count)
    return statistics.median(samples)


def growth(max_keys: int) -> list[tuple[int, int, bool, float]]:
    """(target keys, actual keys, valid, µs per spec) for 1, 10, 100, ... keys."""
    rows = []
    target = 1
    while target <= max_keys:
        text = b"pipeline.name=x\n" if target < 7 else chain((target - 7) // 8)
        keys = text.count(b"\n")
        seconds = per_call(functools.partial(_compile, text))
        rows.append((target, keys, _compile(text), seconds * 1e6))
        target *= 10
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ops.bench.spec",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join((__doc__ or "").split("\n\n")[2:]),
    )
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one run (s)")
    parser.add_argument("--runs", type=int, default=5, help="runs per spec; the median is kept")
    parser.add_argument("--max-keys", type=int, default=10_000, help="largest growth size")
    parser.add_argument(
        "--ingest-samples", type=int, default=200, help="draft saves timed end to end (0: skip)"
    )
    args = parser.parse_args(argv)

    large = chain(50)
    assert _compile(SMALL) and _compile(large), "benchmark specs must be valid"
    small_rate, small_runs = throughput(SMALL, args.seconds, args.runs)
    large_rate, large_runs = throughput(large, args.seconds, args.runs)

    print("parse+validate+lower (domain.spec.compile_kv), median of runs")
    print(f"{'spec':<28}{'keys':>7}{'bytes':>8}{'specs/s':>11}   runs")
    for name, text, rate, runs in (
        ("SingleRing, 4 stages", SMALL, small_rate, small_runs),
        ("LaneGraph, 50 stages", large, large_rate, large_runs),
    ):
        spread = ", ".join(f"{r:,.0f}" for r in runs)
        keys = text.count(b"\n")
        print(f"{name:<28}{keys:>7}{len(text):>8}{rate:>11,.0f}   {spread}")
    verdict = "meets" if small_rate >= TARGET_SMALL_PER_S else "MISSES"
    print(f"small specs: {verdict} the target of {TARGET_SMALL_PER_S:,} specs/s")

    print("\ngrowth with size (LaneGraph chains; parse+validate+lower)")
    print(f"{'target':>8}{'keys':>8}{'valid':>7}{'µs/spec':>12}{'µs/key':>9}")
    rows = growth(args.max_keys)
    for target, keys, valid, micros in rows:
        shown = "yes" if valid else "no"
        print(f"{target:>8}{keys:>8}{shown:>7}{micros:>12,.1f}{micros / keys:>9.2f}")
    big = [(keys, micros) for _, keys, _, micros in rows if keys >= 100]
    if len(big) >= 2:
        (k0, t0), (k1, t1) = big[0], big[-1]
        print(
            f"µs/key at {k1:,} keys ÷ µs/key at {k0:,} keys = {(t1 / k1) / (t0 / k0):.2f}"
            " (1.0 is perfectly linear)"
        )

    ingest: dict[str, float] | None = None
    if args.ingest_samples > 0:
        from ops.bench.ingest import ingest_latency

        print("\nspec_ingest end to end (draft save → validation visible), real services")
        ingest = ingest_latency(SMALL, samples=args.ingest_samples)
        verdict = "meets" if ingest["p99_ms"] < TARGET_INGEST_P99_MS else "MISSES"
        print(
            f"{ingest['samples']:.0f} saves: p50 {ingest['p50_ms']:.1f} ms, "
            f"p99 {ingest['p99_ms']:.1f} ms, max {ingest['max_ms']:.1f} ms "
            f"({verdict} the target of p99 < {TARGET_INGEST_P99_MS} ms)"
        )
        print(
            f"median parts: saved → job.started {ingest['saved_to_job_started_ms']:.1f} ms "
            f"(relay, NATS, claim); job.started → draft.validated "
            f"{ingest['job_started_to_validated_ms']:.1f} ms; the rest is the projection "
            "and the read"
        )
    print(
        json.dumps(
            {
                "bench": "spec",
                "small_specs_per_s": round(small_rate),
                "large_specs_per_s": round(large_rate),
                "ingest_p99_ms": None if ingest is None else round(ingest["p99_ms"], 1),
                "ingest_p50_ms": None if ingest is None else round(ingest["p50_ms"], 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
