"""Every benchmark of issue "Fast all the way to the store" in one run, then its targets with
PASS/MISS, all computed from figures of this one run (these machines are noisy: never compare
runs). Each measurement runs interleaved rounds and keeps the best (the tables show the worst).

In order:
1. ingest alone: 1 worker, the ``null`` sink; the validation limit; the hot path (collector CPU
   per reading minus the one pydantic-core call);
2. equal work: rsyslog -> omfile against telemetry -> jsonl (and -> null, ingest alone),
   ``--workers N``;
3. each sink alone against its client library's raw rate (sink_limits.py, limit_nats.py);
4. end to end per sink, ``--workers 1`` and ``N`` (scaling), and fan-out (sqlite + postgres +
   nats in one collector);
5. ack latency with the sqlite sink at half its end-to-end maximum, pinned (ack_latency.py);
6. 10,000 idle connections; agent CPU.
Takes about 12 minutes.

    .venv/bin/python benchmarks/run_all.py [--workers 2] [--readings 200000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import ack_latency
import agent_cpu
import end_to_end
import idle
import ingest
import peer_rsyslog
import sink_limits
from common import effective_workers, machine, verdict

#: The hot path's budget on top of the pydantic-core call, CPU µs per reading.
HOT_PATH_US = 1.0
SCALING = 1.7
FAN_OUT = 0.7
SQLITE_VS_RSYSLOG = 0.5
FAN_OUT_SINKS = ("sqlite", "postgres", "nats")


def section(title: str) -> None:
    print(f"\n## {title}", flush=True)


def nats_limit(readings: int) -> dict[str, Any] | None:
    """The nats sink against nats-py's pipelined publish (limit_nats.py), when present."""
    try:
        import limit_nats
    except ImportError:
        return None
    from telemetry.runtime import run_async

    figures = run_async(lambda: limit_nats.measure(readings))
    return {
        "sink": "nats",
        "sink_per_s": figures["sink"],
        "raw_per_s": figures["raw"],
        "raw_how": "nats-py, pipelined publish, every PubAck awaited",
        "raw_all": {"pipelined publish": figures["raw"]},
        "ratio": figures["sink"] / figures["raw"],
        "target": sink_limits.TARGETS["nats"],
        "load": "",
    }


def e2e_setups(workers: int, readings: int) -> list[tuple[tuple[str, ...], int, int]]:
    both = sorted({1, workers})
    setups = [((kind,), w, readings) for kind in ("jsonl", "sqlite", "postgres") for w in both]
    setups += [(("nats",), 1, readings // 2), (("redis",), 1, readings), (("mqtt",), 1, 20_000)]
    setups.append((FAN_OUT_SINKS, 1, readings // 2))
    return setups


def targets(results: dict[str, Any], workers: int) -> list[str]:
    lines = peer_rsyslog.peer_ratios(results["peer"])
    e2e = results["e2e"]
    peer = max(
        r["readings_per_s"] for r in results["peer"] if r["mode"] == "rsyslog" and r["conns"] == 4
    )
    for row in results["limits"]:
        lines.append(
            f"{row['sink']} alone / raw ({row['raw_how']}) = {row['ratio']:.2f} "
            f"(target >= {row['target']}) {verdict(row['ratio'] >= row['target'])}"
        )
    sqlite = [r for r in e2e if r["sink"] == "sqlite" and r["mode"] == "batched"]
    if sqlite:
        best = max(sqlite, key=lambda r: r["readings_per_s"])
        ratio = best["readings_per_s"] / peer
        lines.append(
            f"sqlite end to end (batched, --workers {best['workers']}) / rsyslog -> omfile "
            f"(4 conns) = {ratio:.2f} (target >= {SQLITE_VS_RSYSLOG}) "
            f"{verdict(ratio >= SQLITE_VS_RSYSLOG)}"
        )
    for kind in ("jsonl", "sqlite", "postgres"):
        one = end_to_end.find(e2e, kind, "batched", 1)
        many = end_to_end.find(e2e, kind, "batched", workers)
        if one and many and workers > 1:
            ratio = many["readings_per_s"] / one["readings_per_s"]
            target = SCALING if kind != "postgres" else 1.0
            lines.append(
                f"{kind} end to end, --workers {workers} / --workers 1 = {ratio:.2f} "
                f"(target {'>=' if kind != 'postgres' else '>'} {target}) "
                f"{verdict(ratio >= target if kind != 'postgres' else ratio > target)}"
            )
    fan = end_to_end.find(e2e, end_to_end.label(FAN_OUT_SINKS), "batched", 1)
    alone = [end_to_end.find(e2e, kind, "batched", 1) for kind in FAN_OUT_SINKS]
    if fan and all(alone):
        slowest = min(alone, key=lambda r: r["readings_per_s"])  # type: ignore[union-attr]
        assert slowest is not None
        ratio = fan["readings_per_s"] / slowest["readings_per_s"]
        lines.append(
            f"fan-out {fan['sink']} / slowest alone ({slowest['sink']}) = {ratio:.2f} "
            f"(target >= {FAN_OUT}) {verdict(ratio >= FAN_OUT)}"
        )
    lines.append(ack_latency.report(results["latency"])[-1])
    null4 = next(r for r in results["ingest_1"] if r["mode"] == "batched" and r["conns"] == 4)
    validate_us = 1e6 / results["limit"]["validate_tuned_cpu"]
    extra = null4["collector_us"] - validate_us
    lines.append(
        f"hot path: collector CPU per reading (null sink, batched, 4 conns) "
        f"{null4['collector_us']:.2f} µs - validation alone {validate_us:.2f} µs = "
        f"{extra:.2f} µs (target <= {HOT_PATH_US}) {verdict(extra <= HOT_PATH_US)}"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="workers for the N-worker runs")
    parser.add_argument("--readings", type=int, default=200_000, help="per ingest scenario")
    parser.add_argument("--sink-readings", type=int, default=100_000, help="per sink scenario")
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

    section("1. ingest alone: 1 worker, null sink; the validation limit")
    print(ingest.HEADER)
    results["ingest_1"] = ingest.run_ingest(1, args.readings, payloads)
    results["limit"] = ingest.validation_limit(payloads, args.readings)
    ingest.print_limit(results["limit"])

    section(
        f"2. equal work: telemetry -> jsonl (and -> null) vs rsyslog -> omfile, --workers {workers}"
    )
    print(f"{'sink':<7}" + ingest.HEADER)
    results["peer"] = peer_rsyslog.run_peer(workers, args.readings, payloads, (4, 16))

    section("3. each sink alone against its client library's raw rate")
    print(sink_limits.HEADER)
    limits = sink_limits.run_limits(["sqlite", "postgres", "redis", "mqtt"], args.sink_readings)
    nats = nats_limit(args.sink_readings // 2)
    if nats is not None:
        limits.append(nats)
    for row in limits:
        print(sink_limits.format_row(row), flush=True)
    results["limits"] = limits

    section(f"4. end to end per sink (4 connections), --workers 1 and {workers}, and fan-out")
    rows = end_to_end.run_matrix(
        e2e_setups(workers, args.sink_readings), payloads, 4, (("batched", 500),)
    )
    rows += end_to_end.run_matrix(
        [((kind,), w, args.sink_readings) for kind in ("jsonl", "sqlite") for w in {1, workers}],
        payloads,
        4,
        (("fire-and-forget", 0),),
    )
    print(end_to_end.HEADER)
    for row in rows:
        print(end_to_end.format_row(row))
    results["e2e"] = rows

    section("5. ack latency, sqlite sink, pinned")
    results["latency"] = ack_latency.run_ack_latency()
    print(ack_latency.report(results["latency"])[0])

    section(f"6. {args.idle:,} idle connections; agent CPU")
    idles = [idle.run_idle(w, args.idle) for w in sorted({1, workers})]
    for res in idles:
        print(idle.report(res)[0])
    results["idle"] = idles
    agents = agent_cpu.run_agent_cpu(5.0)
    for line in agent_cpu.report(agents):
        print(line)
    results["agent_cpu"] = agents

    section("targets (figures of this run)")
    for line in targets(results, workers):
        print(line)
    for res in idles:
        print(idle.report(res)[-1])
    print(f"# total {time.perf_counter() - started:.0f} s; {machine()}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
