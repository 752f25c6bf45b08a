"""Every benchmark in one run, then the targets of issue "Fast" with PASS/MISS.

In order: ingest with 1 worker (null sink; batched and fire-and-forget; 1, 4, 16
connections); the in-process validation limit; ingest with ``--workers N`` and rsyslog, back
to back per connection count; latency from ``agent.send()`` to the sink at half the batched
maximum of the collector measured (3 runs with 2 agent processes, the median p99 is the
figure; 1 with 4; and, for context, 1 at half the null sink's maximum of step 1);
10,000 idle connections with 1 and N workers; agent CPU. Every ratio is computed from figures
of this one run (these machines are noisy: never compare runs). Each
ingest scenario, rsyslog and the limit run 3 interleaved rounds and keep the best, so that
what is compared is measured the same way; the table shows the worst round too.
Takes about 2-3 minutes.

    .venv/bin/python benchmarks/run_all.py [--workers 2] [--readings 200000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import agent_cpu
import idle
import ingest
import latency
import peer_rsyslog
from common import effective_workers, machine

#: Runs of the latency target's setting (half the maximum rate, 2 agent processes).
LATENCY_RUNS = 3


def section(title: str) -> None:
    print(f"\n## {title}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="workers for the peer comparison")
    parser.add_argument("--readings", type=int, default=200_000, help="per ingest scenario")
    parser.add_argument("--idle", type=int, default=10_000, help="idle connections")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args()
    started = time.perf_counter()
    print(f"# {machine()}")
    workers = effective_workers(args.workers)
    payloads = ingest.pool()
    print(
        f"# {args.readings:,} readings per ingest scenario and round, best of {ingest.ROUNDS}, "
        f"~{len(payloads.block) / len(payloads.frames):.0f} bytes per reading frame; "
        f"{peer_rsyslog.rsyslog_version(peer_rsyslog.ensure_rsyslog())}"
    )
    results: dict[str, Any] = {"machine": machine(), "workers": workers}

    section("ingest, 1 worker, null sink")
    print(ingest.HEADER)
    rows1 = ingest.run_ingest(1, args.readings, payloads)
    limit = ingest.validation_limit(payloads, args.readings)
    ingest.print_limit(limit)
    results |= {"ingest_1": rows1, "limit": limit}

    section(f"ingest, --workers {workers}, null sink, and rsyslog, back to back")
    print(ingest.HEADER)
    rows_n = peer_rsyslog.run_peer(workers, args.readings, payloads)
    results["ingest_n_and_rsyslog"] = rows_n

    section("latency from agent.send() to the sink's write()")
    # Each run first measures the maximum of the collector it measures (a 5 ms sink flush and
    # a probe sink: slower than the null sink of step 1), then loads it with half of that from
    # one agent process per core, LATENCY_RUNS times (p99 swings from run to run on a busy
    # 2-core machine: the median is the figure); then twice as many agents, once.
    lats = []
    for _ in range(LATENCY_RUNS):
        lats.append(latency.run_latency(None, agents=2, duration=8.0))
        for line in latency.report(lats[-1])[:-1]:
            print(line, flush=True)
    lat4 = latency.run_latency(None, agents=4, duration=8.0)
    for line in latency.report(lat4)[:-1]:
        print(line, flush=True)
    # Context: half the null sink's maximum of step 1, a rate near what the measured collector
    # itself can take; and a rate the Python agents sustain with CPU to spare.
    null_max = max(r["readings_per_s"] for r in rows1 if r["mode"] == "batched")
    print(f"# context: half the null sink's batched maximum of step 1 ({null_max:,.0f}/s)")
    strict = latency.run_latency(null_max, agents=2, duration=8.0)
    for line in latency.report(strict)[:-1]:
        print(line, flush=True)
    low = latency.run_latency(None, agents=2, duration=8.0, fraction=0.1)
    for line in latency.report(low)[:-1]:
        print(line)
    results["latency"] = lats
    results["latency_4_agents"] = lat4
    results["latency_null_max"] = strict
    results["latency_low"] = low

    section(f"{args.idle:,} idle connections")
    idles = [idle.run_idle(w, args.idle) for w in sorted({1, workers})]
    for res in idles:
        print(idle.report(res)[0])
    results["idle"] = idles

    section("agent CPU")
    agents = agent_cpu.run_agent_cpu(5.0)
    for line in agent_cpu.report(agents):
        print(line)
    results["agent_cpu"] = agents

    section("targets (figures of this run)")
    for line in ingest.limit_ratios(rows1, limit):
        print(line)
    for line in peer_rsyslog.peer_ratios(rows_n):
        print(line)
    print(latency.summary(lats) + " (2 agent processes)")
    print(latency.report(lat4)[-1] + " (4 agent processes)")
    print(latency.report(strict)[-1] + " (context: max = the null sink's, not the target)")
    print(latency.report(low)[-1] + " (context, not the target)")
    for res in idles:
        print(idle.report(res)[-1])
    print(f"# total {time.perf_counter() - started:.0f} s; {machine()}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
