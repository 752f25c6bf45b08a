"""Ack latency with the sqlite sink, the embedded default, at half its end-to-end maximum.

The collector (``telemetry collect``, one worker, the sqlite sink with its defaults) runs pinned
to CPU 0 and the load generator (this process) to CPU 1 (``taskset`` / ``sched_setaffinity``),
so that the load generator's CPU does not decide the figure. First the maximum: acked batches
of 500 over 4 connections as fast as acks come, best of 3. Then ``RUNS`` runs at half that
rate for ``--duration`` seconds each, paced; each acked batch's latency is the time from its
write to its ack (an ack means the batch is committed in SQLite). The figure is the median of
the runs' p99; the target is the sink's ``flush_interval`` + 25 ms.

    .venv/bin/python benchmarks/ack_latency.py [--runs 5] [--duration 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
from typing import Any

from common import collector, loadavg, machine, verdict
from end_to_end import destination
from ingest import pool

from telemetry.bench import BenchOptions, Payloads, run_bench
from telemetry.config import SqliteSinkConfig
from telemetry.runtime import run_async

RUNS = 5
CONNECTIONS = 4
#: The sqlite sink's default flush_interval, in ms: the target is this + 25 ms.
FLUSH_MS = SqliteSinkConfig.model_fields["flush_interval"].default * 1000
TARGET_MS = FLUSH_MS + 25


def _bench(port: int, payloads: Payloads, **options: Any) -> Any:
    opts = BenchOptions(port=port, connections=CONNECTIONS, batch=500, timeout=60, **options)
    return run_async(lambda: run_bench(opts, payloads))


def run_ack_latency(
    runs: int = RUNS, duration: float = 8.0, readings: int = 100_000
) -> dict[str, Any]:
    payloads = pool()
    cpus = sorted(os.sched_getaffinity(0))
    pinned = len(cpus) >= 2
    with (
        destination(("sqlite",)) as sinks,
        collector(1, sinks=sinks, cpus=str(cpus[0]) if pinned else None) as col,
    ):
        if pinned:
            os.sched_setaffinity(0, {cpus[1]})
        try:
            maximum = max(
                _bench(col.port, payloads, readings=readings).readings_per_s for _ in range(3)
            )
            results = [
                _bench(col.port, payloads, readings=None, rate=maximum / 2, duration=duration)
                for _ in range(runs)
            ]
        finally:
            os.sched_setaffinity(0, set(cpus))
    p99s = [r.latency_ms["p99"] for r in results]
    return {
        "pinned": pinned,
        "max_per_s": maximum,
        "rate_per_s": maximum / 2,
        "achieved_per_s": [r.readings_per_s for r in results],
        "p50_ms": [r.latency_ms["p50"] for r in results],
        "p99_ms": p99s,
        "median_p99_ms": statistics.median(p99s),
        "target_ms": TARGET_MS,
        "load": loadavg(),
    }


def report(res: dict[str, Any]) -> list[str]:
    pin = "collector on CPU 0, load generator on CPU 1" if res["pinned"] else "not pinned"
    return [
        f"sqlite sink, {pin}: maximum {res['max_per_s']:,.0f} readings/s; at half "
        f"({res['rate_per_s']:,.0f}/s) ack p50 "
        + " / ".join(f"{v:.1f}" for v in res["p50_ms"])
        + " ms, p99 "
        + " / ".join(f"{v:.1f}" for v in res["p99_ms"])
        + f" ms (load {res['load']})",
        f"ack p99 at half the sqlite maximum, median of {len(res['p99_ms'])} = "
        f"{res['median_p99_ms']:.1f} ms (target <= flush_interval {FLUSH_MS:g} + 25 = "
        f"{TARGET_MS:g} ms) {verdict(res['median_p99_ms'] <= TARGET_MS)}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--duration", type=float, default=8.0)
    args = parser.parse_args()
    print(f"# {machine()}")
    for line in report(run_ack_latency(args.runs, args.duration)):
        print(line)


if __name__ == "__main__":
    main()
