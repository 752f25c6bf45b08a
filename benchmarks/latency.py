"""Latency from ``agent.send()`` to the sink's ``write()``, at half the maximum rate.

Method: ``latency_collector.py`` runs the collector's own ``Collector`` (pipeline, sink
queue, the sink's ``flush_interval`` of 5 ms) with one sink that, in ``write()``, keeps the
write time and every record's ``ts``. ``agent_load.py`` processes drive the ``Agent`` library
(batches of 500, ``flush_interval`` 50 ms) at a fixed total rate, stamping each reading's
``ts`` with ``time.time()`` just before ``agent.send()``; all processes share one clock.

The maximum rate is that of the collector being measured, at that moment: best of
``ROUNDS`` runs of ``telemetry.bench`` (batches of 500, as many connections as agents)
against this same collector, which is then restarted so that its figures are the agents'
alone. ``--max-rate`` gives one instead (``run_all.py`` also runs once at half the ``null``
sink's ingest maximum, which this collector, with its 5 ms flush and its probe, does not
reach). A reading waits in the agent's open batch for up to ``flush_interval`` (or until 500
are there), then one network and validation hop, then up to the sink's flush interval: so the
target is p99 <= agent flush_interval + 10 ms.

    .venv/bin/python benchmarks/latency.py [--max-rate N] [--agents 2] [--duration 8] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from common import PYTHON, free_port, loadavg, machine, tree_cpu, verdict, wait_port

from telemetry.bench import BenchOptions, percentiles, run_bench
from telemetry.runtime import run_async

HERE = Path(__file__).resolve().parent
AGENT_FLUSH = 0.05
AGENT_BATCH = 500
#: Rounds of the maximum-rate measurement (the best counts, as in ``ingest.py``).
ROUNDS = 3
#: Readings per round of the maximum-rate measurement.
MAX_READINGS = 200_000


def _start_collector(port: int, out: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [PYTHON, str(HERE / "latency_collector.py"), "--port", str(port), "--out", str(out)]
    )
    wait_port(port, proc)
    return proc


def collector_max(port: int, connections: int) -> float:
    """The batched maximum of the collector at ``port``: best of ``ROUNDS`` bench runs."""
    opts = BenchOptions(
        port=port, connections=connections, readings=MAX_READINGS, batch=AGENT_BATCH
    )
    return max(run_async(lambda: run_bench(opts)).readings_per_s for _ in range(ROUNDS))


def run_latency(
    max_rate: float | None, agents: int, duration: float, fraction: float = 0.5
) -> dict[str, Any]:
    """One run at ``fraction`` of ``max_rate``, or of this collector's maximum measured first
    (``max_rate`` None)."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="telemetry-latency-") as tmp:
        out = Path(tmp) / "latencies.txt"
        proc = _start_collector(port, out)
        try:
            measured = max_rate is None
            if max_rate is None:
                max_rate = collector_max(port, agents)
                proc.send_signal(signal.SIGTERM)  # drop the bench's latencies: restart
                proc.wait(30)
                out.unlink(missing_ok=True)
                proc = _start_collector(port, out)
            rate = max_rate * fraction
            cpu0 = tree_cpu(proc.pid)
            started = time.perf_counter()
            loads = [
                subprocess.Popen(
                    [
                        PYTHON,
                        str(HERE / "agent_load.py"),
                        "--port",
                        str(port),
                        "--rate",
                        str(rate / agents),
                        "--duration",
                        str(duration),
                        "--id",
                        f"latency-{i}",
                        "--batch-size",
                        str(AGENT_BATCH),
                        "--flush-interval",
                        str(AGENT_FLUSH),
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for i in range(agents)
            ]
            reports = [json.loads(p.communicate(timeout=duration + 60)[0]) for p in loads]
            elapsed = time.perf_counter() - started
            collector_cpu = tree_cpu(proc.pid) - cpu0
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        pairs = [line.split() for line in out.read_text().splitlines()] if out.exists() else []
    latencies = [float(total) * 1e3 for total, _ in pairs]
    received = [float(recv) * 1e3 for _, recv in pairs]
    in_collector = [float(total) * 1e3 - float(recv) * 1e3 for total, recv in pairs]
    sent = sum(r["sent"] for r in reports)
    return {
        "max_rate": max_rate,
        "max_rate_measured_here": measured,
        "target_rate": rate,
        "fraction": fraction,
        "achieved_rate": sent / max(r["seconds"] for r in reports),
        "agents": agents,
        "sent": sent,
        "acked": sum(r["acked"] for r in reports),
        "recorded": len(latencies),
        "latency_ms": percentiles(latencies),
        "to_received_ms": percentiles(received),
        "in_collector_ms": percentiles(in_collector),
        "agent_cpu_cores": sum(r["cpu_seconds"] for r in reports) / elapsed,
        "collector_cpu_cores": collector_cpu / elapsed,
        "load": loadavg(),
    }


def report(res: dict[str, Any]) -> list[str]:
    lat = res["latency_ms"]
    target = (AGENT_FLUSH + 0.010) * 1e3
    where = (
        f"this collector's, best of {ROUNDS} bench runs just before"
        if res["max_rate_measured_here"]
        else "given"
    )
    return [
        f"latency send() -> sink write() at {res['fraction']:g} x max rate "
        f"{res['max_rate']:,.0f}/s ({where}): target {res['target_rate']:,.0f}/s, "
        f"achieved {res['achieved_rate']:,.0f}/s from "
        f"{res['agents']} agent processes; {res['recorded']:,} of {res['sent']:,} readings "
        f"recorded ({res['acked']:,} acked)",
        f"  p50 {lat['p50']:.1f} ms, p90 {lat['p90']:.1f} ms, p99 {lat['p99']:.1f} ms, "
        f"max {lat['max']:.1f} ms; agents used {res['agent_cpu_cores']:.2f} cores, the "
        f"collector {res['collector_cpu_cores']:.2f}; load average {res['load']}",
        "  split: send() -> collector received_at p50 {:.1f} / p99 {:.1f} ms; received_at -> "
        "sink write p50 {:.1f} / p99 {:.1f} ms".format(
            res["to_received_ms"]["p50"],
            res["to_received_ms"]["p99"],
            res["in_collector_ms"]["p50"],
            res["in_collector_ms"]["p99"],
        ),
        f"p99 latency at {res['fraction']:g} x max {lat['p99']:.1f} ms vs agent "
        f"flush_interval {AGENT_FLUSH * 1e3:.0f} ms "
        f"+ 10 ms = {target:.0f} ms {verdict(lat['p99'] <= target)}",
    ]


def summary(runs: list[dict[str, Any]]) -> str:
    """The target line for several runs of one setting: the median p99, and every run's."""
    p99s = sorted(res["latency_ms"]["p99"] for res in runs)
    median = p99s[len(p99s) // 2]
    target = (AGENT_FLUSH + 0.010) * 1e3
    return (
        f"p99 latency at {runs[0]['fraction']:g} x max, median of {len(runs)} runs "
        f"{median:.1f} ms (runs: {', '.join(f'{p:.1f}' for p in p99s)} ms) vs agent "
        f"flush_interval {AGENT_FLUSH * 1e3:.0f} ms + 10 ms = {target:.0f} ms "
        f"{verdict(median <= target)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--max-rate", type=float, help="readings/s (default: this collector's, measured first)"
    )
    parser.add_argument("--agents", type=int, default=2, help="agent processes")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of load")
    parser.add_argument("--fraction", type=float, default=0.5, help="of the maximum rate")
    parser.add_argument("--runs", type=int, default=1, help="repeat, then give the median p99")
    args = parser.parse_args()
    print(f"# {machine()}")
    runs = []
    for _ in range(args.runs):
        runs.append(run_latency(args.max_rate, args.agents, args.duration, args.fraction))
        for line in report(runs[-1]):
            print(line, flush=True)
    if args.runs > 1:
        print(summary(runs))


if __name__ == "__main__":
    main()
