"""Ingest throughput of the collector into the ``null`` sink, against the validation limit.

Starts ``telemetry collect [--workers N]`` in a subprocess (null sink, free ports) and drives
it with ``telemetry.bench`` (frames built once, written in large chunks) over 1, 4 and 16
connections: acked batches of 500 readings, and one fire-and-forget reading per frame (done
when every connection's final acked marker batch is acked). Prints readings/s, MiB/s, the CPU
µs per reading of the collector (summed over its processes) and of the load generator; then
the in-process validation rate of the same payloads with the collector's own code path
(``json.loads`` + ``validate_readings``), and the ratio of batched ingest to it.
All figures and ratios come from this one run: these machines are noisy, never compare runs.

    .venv/bin/python benchmarks/ingest.py [--workers 1] [--readings 200000]
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from datetime import UTC, datetime
from typing import Any

from common import collector, effective_workers, loadavg, machine, verdict

from telemetry.bench import BenchOptions, Payloads, encode_readings, run_bench
from telemetry.cli import run_async
from telemetry.protocol import validate_readings, validation_context

CONNECTIONS = (1, 4, 16)
BATCH = 500
MODES = (("batched", BATCH), ("fire-and-forget", 0))
TARGET_LIMIT_RATIO = 0.8
#: Rounds of the validation limit (each mode once per round; the best counts).
ROUNDS = 3

Row = dict[str, Any]


def pool() -> Payloads:
    """The readings every scenario sends (the same bytes in every benchmark of a run)."""
    return Payloads(encode_readings(BATCH))


def measure(
    port: int, cpu: Any, payloads: Payloads, conns: int, batch: int, readings: int, workers: int
) -> Row:
    """One scenario: ``cpu()`` is the collector's CPU seconds so far."""
    opts = BenchOptions(port=port, connections=conns, readings=readings, batch=batch, timeout=60)
    before = cpu()
    result = run_async(lambda: run_bench(opts, payloads))
    used = cpu() - before
    return {
        "scenario": "batched (500/batch, acked)" if batch else "fire-and-forget (1/frame)",
        "mode": "batched" if batch else "fire-and-forget",
        "workers": workers,
        "conns": conns,
        "readings": result.readings,
        "readings_per_s": result.readings_per_s,
        "mib_per_s": result.mib_per_s,
        "collector_us": used / result.readings * 1e6,
        "collector_cores": used / result.elapsed,
        "loadgen_us": result.cpu_us_per_reading,
        "loadgen_cores": result.cpu_seconds / result.elapsed,
        "load": loadavg(),
    }


HEADER = (
    f"{'scenario':<28}{'workers':>8}{'conns':>6}{'readings/s':>12}{'MiB/s':>7}"
    f"{'collector µs/rdg':>17}{'(cores)':>8}{'loadgen µs/rdg':>15}{'load':>6}"
)


def format_row(row: Row) -> str:
    return (
        f"{row['scenario']:<28}{row['workers']:>8}{row['conns']:>6}"
        f"{row['readings_per_s']:>12,.0f}{row['mib_per_s']:>7.1f}{row['collector_us']:>17.2f}"
        f"{row['collector_cores']:>8.2f}{row['loadgen_us']:>15.2f}{row['load']:>6}"
    )


def run_ingest(workers: int, readings: int, payloads: Payloads) -> list[Row]:
    """Every scenario against one collector with ``workers`` processes; prints as it goes."""
    rows: list[Row] = []
    with collector(workers) as col:
        for conns in CONNECTIONS:
            for _, batch in MODES:
                row = measure(col.port, col.cpu, payloads, conns, batch, readings, workers)
                print(format_row(row), flush=True)
                rows.append(row)
    return rows


def validation_limit(payloads: Payloads, readings: int) -> dict[str, float]:
    """Readings/s of ``json.loads`` + ``validate_readings`` over the same batch payloads.

    ``gc_default``: Python's default collector; ``gc_tuned``: as ``telemetry collect`` tunes
    it (``gc.freeze()``, young-generation threshold 50,000); ``gc_off``: collector disabled.
    Each also per CPU second (``*_cpu``): what one core allows, whatever else the machine runs.
    ``ROUNDS`` interleaved rounds of ``readings / ROUNDS`` each; the best of each is kept.
    """
    payload = b'{"type":"batch","seq":0,"readings":' + payloads.array(BATCH) + b"}"
    batches = max(1, readings // BATCH // ROUNDS)
    context = validation_context(datetime.now(UTC))

    def rate() -> tuple[float, float]:
        for _ in range(10):  # warm up
            validate_readings(json.loads(payload)["readings"], context)
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(batches):
            validate_readings(json.loads(payload)["readings"], context)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        return batches * BATCH / wall, batches * BATCH / cpu

    def keep_best(name: str, measured: tuple[float, float]) -> None:
        out[name] = max(out.get(name, 0.0), measured[0])
        out[name + "_cpu"] = max(out.get(name + "_cpu", 0.0), measured[1])

    threshold = gc.get_threshold()
    out: dict[str, float] = {}
    try:
        for _ in range(ROUNDS):  # interleaved rounds, best of each: a shared machine is noisy
            gc.collect()
            keep_best("gc_default", rate())
            gc.collect()
            gc.freeze()
            gc.set_threshold(50_000, 50, 100)
            keep_best("gc_tuned", rate())
            gc.disable()
            keep_best("gc_off", rate())
            gc.enable()
            gc.unfreeze()
            gc.set_threshold(*threshold)
    finally:
        gc.enable()
        gc.unfreeze()
        gc.set_threshold(*threshold)
    return out


def print_limit(limit: dict[str, float]) -> None:
    print(
        f"validation limit, in process: {limit['gc_tuned']:,.0f} readings/s with gc tuned as "
        f"the collector does; {limit['gc_default']:,.0f}/s default gc; {limit['gc_off']:,.0f}/s "
        f"gc off (json.loads + validate_readings, batches of {BATCH}, best of {ROUNDS}); "
        f"per CPU second: "
        f"{limit['gc_tuned_cpu']:,.0f} tuned, {limit['gc_off_cpu']:,.0f} gc off"
    )


def limit_ratios(rows: list[Row], limit: dict[str, float]) -> list[str]:
    """Batched ingest with one worker over the validation limit, per connection count."""
    lines = []
    for row in rows:
        if row["mode"] != "batched" or row["workers"] != 1:
            continue
        ratio = row["readings_per_s"] / limit["gc_tuned"]
        per_cpu = 1e6 / row["collector_us"] / limit["gc_tuned_cpu"]
        lines.append(
            f"batched ingest, 1 worker, {row['conns']:>2} conns / validation limit = {ratio:.2f} "
            f"(target >= {TARGET_LIMIT_RATIO}) {verdict(ratio >= TARGET_LIMIT_RATIO)}; "
            f"vs the gc-off limit {row['readings_per_s'] / limit['gc_off']:.2f}; "
            f"per CPU second {per_cpu:.2f} {verdict(per_cpu >= TARGET_LIMIT_RATIO)}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1, help="telemetry collect --workers")
    parser.add_argument("--readings", type=int, default=200_000, help="per scenario")
    args = parser.parse_args()
    workers = effective_workers(args.workers)
    payloads = pool()
    print(f"# {machine()}")
    print(
        f"# {args.readings:,} readings per scenario, "
        f"~{len(payloads.block) / len(payloads.frames):.0f} bytes per reading frame"
    )
    print(HEADER)
    rows = run_ingest(workers, args.readings, payloads)
    limit = validation_limit(payloads, args.readings)
    print_limit(limit)
    if workers == 1:
        for line in limit_ratios(rows, limit):
            print(line)


if __name__ == "__main__":
    main()
