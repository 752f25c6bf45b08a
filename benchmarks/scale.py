"""End-to-end readings/s through the scale topology, on local processes (docs/scale.md).

    .venv/bin/python benchmarks/scale.py                      # topologies 1x1, 2x2, 3x2
    .venv/bin/python benchmarks/scale.py --topologies 2x2 --readings 100000 --replicas 1

Starts a 3-node NATS JetStream cluster from the installed ``nats-server`` on free ports (its
own temporary store: not the system service), then for each topology ``CxR``: C collectors
(``telemetry collect``) whose ``nats`` sink writes a fresh stream on the cluster, R relays
(``telemetry relay``: the first into PostgreSQL, in a schema of its own dropped afterwards,
the second into a jsonl file; each its own durable), and one ``telemetry bench`` per
collector, which sends ``--readings`` in all as fast as the collectors ack them.

Printed per topology: ingest readings/s (acked by the collectors, so in the stream on
``--replicas`` nodes), each relay's readings/s (until its store holds every reading), the end
to end readings/s (until the last store holds them all), the CPU each tier used (in cores,
and in CPU microseconds per reading: what a reading costs each tier whatever else runs),
how busy the whole machine was, and the limit that showed. On a machine with few cores these
are overheads and limits, not scaling: every process shares the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from common import PYTHON, free_port, machine, stop, tree_cpu

DSN = os.environ.get("TELEMETRY_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
NODES = 3


# --- the NATS cluster -------------------------------------------------------------------------


@dataclass
class Node:
    name: str
    port: int
    cluster_port: int
    http_port: int
    proc: subprocess.Popen[bytes] | None = None


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return json.load(resp)


@contextlib.contextmanager
def nats_cluster(tmp: Path) -> Iterator[list[Node]]:
    """Three ``nats-server`` processes clustered on free loopback ports, JetStream on."""
    binary = shutil.which("nats-server")
    if binary is None:
        raise SystemExit("nats-server is not installed (apt-get install nats-server)")
    nodes = [Node(f"n{i}", free_port(), free_port(), free_port()) for i in range(NODES)]
    routes = ", ".join(f'"nats-route://127.0.0.1:{n.cluster_port}"' for n in nodes)
    try:
        for node in nodes:
            conf = tmp / f"{node.name}.conf"
            conf.write_text(
                f'server_name: "{node.name}"\nlisten: "127.0.0.1:{node.port}"\n'
                f'http: "127.0.0.1:{node.http_port}"\n'
                f'jetstream {{ store_dir: "{tmp / node.name}" }}\n'
                f'cluster {{ name: "bench", listen: "127.0.0.1:{node.cluster_port}", '
                f"routes: [{routes}] }}\n"
            )
            log = (tmp / f"{node.name}.log").open("wb")
            node.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError, ValueError):
                metas = [_get_json(f"http://127.0.0.1:{n.http_port}/jsz") for n in nodes]
                if all((m.get("meta_cluster") or {}).get("leader") for m in metas):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the NATS cluster elected no JetStream leader in 60 s")
            time.sleep(0.2)
        yield nodes
    finally:
        for node in nodes:
            if node.proc is not None:
                stop(node.proc, 10)


# --- collectors and relays ----------------------------------------------------------------------


def _wait_ready(proc: subprocess.Popen[bytes], http_port: int, what: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        url = f"http://127.0.0.1:{http_port}/readyz"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} was not ready within 60 s")
        time.sleep(0.1)


@dataclass
class Process:
    name: str
    tier: str
    proc: subprocess.Popen[bytes]
    port: int = 0
    cpu_start: float = 0.0

    def cpu(self) -> float:
        return tree_cpu(self.proc.pid)


def start(name: str, tier: str, argv: list[str], config: str, tmp: Path, port: int = 0) -> Process:
    path = tmp / f"{name}.toml"
    path.write_text(config)
    log = (tmp / f"{name}.log").open("wb")
    proc = subprocess.Popen(
        [PYTHON, "-m", "telemetry.cli", *argv, "--config", str(path)],
        cwd=tmp,
        stdout=log,
        stderr=log,
        env={**os.environ, "TELEMETRY_POSTGRES_DSN": DSN},
    )
    return Process(name, tier, proc, port)


def collector_config(nodes: list[Node], stream: str, replicas: int) -> tuple[str, int, int]:
    port, http_port = free_port(), free_port()
    servers = json.dumps([f"nats://127.0.0.1:{n.port}" for n in nodes])
    return (
        f"[ingest]\nport = {port}\n[http]\nport = {http_port}\n"
        f'[log]\nlevel = "warning"\nformat = "json"\n'
        f'[[sinks]]\ntype = "nats"\nservers = {servers}\nstream = "{stream}"\n'
        f'subject = "{stream.lower()}.{{agent}}.{{sensor}}"\nreplicas = {replicas}\n'
        f'subjects = ["{stream.lower()}.>"]\n'
        f"duplicate_window = 600\n",
        port,
        http_port,
    )


def relay_config(nodes: list[Node], stream: str, durable: str, sink: str) -> tuple[str, int]:
    http_port = free_port()
    servers = json.dumps([f"nats://127.0.0.1:{n.port}" for n in nodes])
    return (
        f'[relay]\nservers = {servers}\nstream = "{stream}"\ndurable = "{durable}"\n'
        f"[http]\nport = {http_port}\n"
        f'[log]\nlevel = "warning"\nformat = "json"\n{sink}',
        http_port,
    )


# --- the stores -------------------------------------------------------------------------------


@dataclass
class Store:
    """One relay's store, polled for how many readings it holds."""

    name: str
    count: Any  # () -> int
    done_at: float | None = None
    first_at: float | None = None


def jsonl_counter(path: Path) -> Any:
    state = {"offset": 0, "lines": 0}

    def count() -> int:
        if path.exists():
            with path.open("rb") as f:
                f.seek(state["offset"])
                data = f.read()
            complete = data.rfind(b"\n") + 1
            state["lines"] += data[:complete].count(b"\n")
            state["offset"] += complete
        return state["lines"]

    return count


def postgres_counter(schema: str) -> Any:
    def count() -> int:
        async def query() -> int:
            conn = await asyncpg.connect(DSN)
            try:
                exists = await conn.fetchval("SELECT to_regclass($1)", f"{schema}.readings")
                if exists is None:
                    return 0
                return int(await conn.fetchval(f'SELECT count(*) FROM "{schema}".readings'))
            finally:
                await conn.close()

        return asyncio.run(query())

    return count


def drop_schema(schema: str) -> None:
    async def drop() -> None:
        conn = await asyncpg.connect(DSN)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())


# --- one topology -------------------------------------------------------------------------------


@dataclass
class Result:
    collectors: int
    relays: int
    readings: int
    ingest_rate: float = 0.0
    end_to_end_rate: float = 0.0
    store_rates: dict[str, float] = field(default_factory=dict)
    cores: dict[str, float] = field(default_factory=dict)
    #: The busiest single process: (name, cores). Each is one Python event loop: one core.
    busiest: tuple[str, float] = ("", 0.0)
    #: The whole machine's CPU busy fraction during the run (other work on it included).
    machine_busy: float = 0.0
    limit: str = ""


def run_topology(
    nodes: list[Node], collectors: int, relays: int, readings: int, replicas: int, tmp: Path
) -> Result:
    tag = uuid.uuid4().hex[:8]
    stream = f"SCALE_{tag}"
    schema = f"scale_{tag}"
    jsonl = tmp / f"relay-{tag}.jsonl"
    result = Result(collectors, relays, readings)
    processes: list[Process] = []
    stores: list[Store] = []
    try:
        for i in range(collectors):
            config, port, http_port = collector_config(nodes, stream, replicas)
            proc = start(f"collector-{i}-{tag}", "collectors", ["collect"], config, tmp, port)
            processes.append(proc)
            _wait_ready(proc.proc, http_port, proc.name)  # the first creates the stream
        sinks = [
            (
                "postgres",
                f'[[sinks]]\ntype = "postgres"\nschema = "{schema}"\nhypertable = false\n',
                postgres_counter(schema),
            ),
            ("jsonl", f'[[sinks]]\ntype = "jsonl"\npath = "{jsonl}"\n', jsonl_counter(jsonl)),
        ][:relays]
        for name, sink, counter in sinks:
            config, http_port = relay_config(nodes, stream, f"bench-{name}-{tag}", sink)
            proc = start(f"relay-{name}-{tag}", "relays", ["relay"], config, tmp)
            processes.append(proc)
            _wait_ready(proc.proc, http_port, proc.name)
            stores.append(Store(name, counter))
        for proc in processes:
            proc.cpu_start = proc.cpu()
        nats_cpu = {n.name: tree_cpu(n.proc.pid) for n in nodes if n.proc is not None}
        benches = []
        cpu_times = psutil.cpu_times()
        started = time.monotonic()
        share = readings // collectors
        for i, proc in enumerate(processes[:collectors]):
            count = share if i < collectors - 1 else readings - share * (collectors - 1)
            argv = [
                PYTHON, "-m", "telemetry.cli", "bench", "--endpoint", f"127.0.0.1:{proc.port}",
                "--connections", "2", "--readings", str(count), "--batch", "500",
                "--agent-prefix", f"bench{i}-{tag}", "--timeout", "120", "--json",
            ]  # fmt: skip
            benches.append(subprocess.Popen(argv, stdout=subprocess.PIPE))
        bench_cpu = 0.0
        pending = list(benches)
        deadline = started + 600
        ingest_done: float | None = None
        while any(s.done_at is None for s in stores) or pending:
            now = time.monotonic()
            if now > deadline:
                raise RuntimeError("the readings were not all stored within 600 s")
            for bench in list(pending):
                if bench.poll() is not None:
                    pending.remove(bench)
                    if bench.returncode != 0:
                        raise RuntimeError(f"telemetry bench exited with {bench.returncode}")
            if not pending and ingest_done is None:
                ingest_done = now
            for store in stores:
                if store.done_at is None:
                    held = store.count()
                    if held and store.first_at is None:
                        store.first_at = now
                    if held >= readings:
                        store.done_at = now
            time.sleep(0.2)
        wall = max(s.done_at or 0.0 for s in stores) - started
        after = psutil.cpu_times()
        total = sum(after) - sum(cpu_times)
        result.machine_busy = 1 - (after.idle - cpu_times.idle) / total if total else 0.0
        assert ingest_done is not None
        result.ingest_rate = readings / (ingest_done - started)
        result.end_to_end_rate = readings / wall
        for store in stores:
            assert store.done_at is not None
            result.store_rates[store.name] = readings / (store.done_at - started)
        for bench in benches:
            out = bench.stdout.read() if bench.stdout else b""
            with contextlib.suppress(ValueError):
                bench_cpu += float(json.loads(out).get("cpu_seconds", 0.0))
        for proc in processes:
            cores = (proc.cpu() - proc.cpu_start) / wall
            result.cores[proc.tier] = result.cores.get(proc.tier, 0.0) + cores
            if cores > result.busiest[1]:
                result.busiest = (proc.name.rsplit("-", 1)[0], cores)
        result.cores["nats"] = (
            sum(tree_cpu(n.proc.pid) - nats_cpu[n.name] for n in nodes if n.proc) / wall
        )
        if bench_cpu:
            result.cores["bench"] = bench_cpu / wall
        result.limit = limit(result, wall, ingest_done - started, replicas)
        return result
    finally:
        for proc in reversed(processes):
            stop(proc.proc, 30)
        drop_schema(schema)


def limit(result: Result, wall: float, ingest: float, replicas: int) -> str:
    """Name the limit that showed: the machine's cores, a store, one process, or waiting."""
    cores = os.cpu_count() or 1
    ours = sum(result.cores.values())
    if result.machine_busy >= 0.85:
        return (
            f"CPU: the machine {result.machine_busy:.0%} busy ({cores} cores), "
            f"{ours:.2f} cores of it ours"
        )
    if wall > 1.5 * ingest:
        slowest = min(result.store_rates, key=lambda name: result.store_rates[name])
        return f"the relay into {slowest}: the stores lag ingest"
    name, busiest = result.busiest
    if busiest >= 0.85:
        return f"{name}: one process at {busiest:.2f} of a core"
    return f"round trips: collectors wait for the stream's acks ({replicas} replicas)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=60_000, help="readings per topology")
    parser.add_argument(
        "--topologies", default="1x1,2x2,3x2", help="collectors x relays, comma separated"
    )
    parser.add_argument("--replicas", type=int, default=3, help="stream replicas (1-3)")
    args = parser.parse_args()
    topologies = [tuple(int(x) for x in t.split("x")) for t in args.topologies.split(",")]
    if any(not (1 <= c <= 3 and 1 <= r <= 2) for c, r in topologies):
        parser.error("topologies are CxR with 1 <= C <= 3 collectors and 1 <= R <= 2 relays")
    print(f"# scale benchmark: {machine()}")
    print(f"# {NODES}-node NATS JetStream cluster (nats-server, local), stream replicas "
          f"{args.replicas}, {args.readings} readings per topology")  # fmt: skip
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="telemetry-scale-") as tmp,
        nats_cluster(Path(tmp)) as nodes,
    ):
        for collectors, relays in topologies:
            rows.append(
                run_topology(nodes, collectors, relays, args.readings, args.replicas, Path(tmp))
            )
            print(f"# {collectors}x{relays} done", file=sys.stderr)
    print(
        "| collectors | relays | ingest readings/s | per store readings/s | "
        "end to end readings/s | CPU (cores) | CPU µs per reading | machine busy | limit |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        stores = ", ".join(f"{name} {rate:,.0f}" for name, rate in r.store_rates.items())
        cpu = ", ".join(f"{tier} {cores:.2f}" for tier, cores in r.cores.items())
        # CPU seconds per reading, by tier: what each reading costs, whatever else ran.
        per_reading = ", ".join(
            f"{tier} {cores / r.end_to_end_rate * 1e6:,.0f}"
            for tier, cores in r.cores.items()
            if tier != "bench"
        )
        print(
            f"| {r.collectors} | {r.relays} | {r.ingest_rate:,.0f} | {stores} | "
            f"{r.end_to_end_rate:,.0f} | {cpu} | {per_reading} | {r.machine_busy:.0%} | "
            f"{r.limit} |"
        )


if __name__ == "__main__":
    main()
