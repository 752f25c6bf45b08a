"""End to end: readings/s from the load generator to a real sink, acked only once stored.

Starts ``telemetry collect [--workers N]`` with one sink (or several: fan-out) on free ports
and a destination of its own (temp file, uuid-named schema, stream, key, topic; removed after),
and drives it with ``telemetry.bench``: acked batches of 500 readings (the clock stops at the
last ack, and an ack is sent only after every sink of the route committed the batch) and one
fire-and-forget reading per frame (done when the final acked marker batch, queued behind them
in the same sink queues, is acked). Each scenario runs ``ROUNDS`` interleaved rounds and keeps
its best; ratios are computed within the run.

    .venv/bin/python benchmarks/end_to_end.py [--sinks sqlite,jsonl] [--workers 1,2]
        [--readings 100000] [--connections 4]

``--sinks sqlite+postgres+nats`` measures one collector with all three sinks (fan-out).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from common import collector, loadavg, machine
from ingest import best_of, measure, pool
from sinks import cleanup as drop_destination

from telemetry.bench import Payloads
from telemetry.runtime import run_async

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
#: Every sink a user can configure that writes somewhere (``null`` is "ingest alone").
SINKS = ("null", "jsonl", "sqlite", "postgres", "nats", "redis", "mqtt")
ROUNDS = 3
MODES = (("batched", 500), ("fire-and-forget", 0))

Row = dict[str, Any]


def sink_toml(kind: str, tag: str, tmp: Path) -> str:
    """The ``[[sinks]]`` table of one sink, writing to a destination named after ``tag``."""
    options = {
        "null": "",
        "jsonl": f'path = "{tmp / "readings.jsonl"}"',
        "sqlite": f'path = "{tmp / "readings.db"}"',
        "postgres": f'dsn = "{PG_DSN}"\nschema = "bench_{tag}"',
        "nats": (
            f'stream = "BENCH_{tag}"\nsubjects = ["bench{tag}.>"]\nsubject = "bench{tag}.{{agent}}"'
        ),
        "redis": f'stream = "bench-{tag}"',
        "mqtt": f'topic = "bench{tag}/{{agent}}"',
    }[kind]
    return f'[[sinks]]\ntype = "{kind}"\nname = "{kind}"\n{options}\n'


def cleanup(kind: str, tag: str) -> None:
    """Remove what a sink created outside the temp directory (the names of ``sinks.py``)."""
    with contextlib.suppress(Exception):
        run_async(lambda: drop_destination(kind, tag))


@contextlib.contextmanager
def destination(kinds: tuple[str, ...]) -> Iterator[str]:
    """The ``[[sinks]]`` tables for ``kinds``, each with a fresh destination, removed after."""
    tag = uuid.uuid4().hex[:10]
    tmp = Path(tempfile.mkdtemp(prefix="telemetry-e2e-"))
    try:
        yield "".join(sink_toml(kind, tag, tmp) for kind in kinds)
    finally:
        for kind in kinds:
            cleanup(kind, tag)
        shutil.rmtree(tmp, ignore_errors=True)


def label(kinds: tuple[str, ...]) -> str:
    return "+".join(kinds)


def scenarios_for(
    kinds: tuple[str, ...],
    workers: int,
    readings: int,
    payloads: Payloads,
    conns: int,
    stack: contextlib.ExitStack,
    modes: tuple[tuple[str, int], ...] = MODES,
    cpus: str | None = None,
) -> list[Callable[[], Row]]:
    """One collector with ``kinds`` as its sinks (kept open by ``stack``), one scenario per
    mode."""
    sinks = stack.enter_context(destination(kinds))
    col = stack.enter_context(collector(workers, sinks=sinks, cpus=cpus))

    def run(batch: int) -> Row:
        row = measure(col.port, col.cpu, payloads, conns, batch, readings, workers)
        row["sink"] = label(kinds)
        return row

    return [functools.partial(run, batch) for _, batch in modes]


def run_matrix(
    setups: list[tuple[tuple[str, ...], int, int]],
    payloads: Payloads,
    conns: int = 4,
    modes: tuple[tuple[str, int], ...] = MODES,
) -> list[Row]:
    """Every (sinks, workers, readings) setup, every mode, ``ROUNDS`` interleaved rounds; the
    best rows. All collectors run at once (idle but for the one measured), so that the rounds
    interleave."""
    with contextlib.ExitStack() as stack:
        scenarios: list[Callable[[], Row]] = []
        for kinds, workers, readings in setups:
            scenarios += scenarios_for(kinds, workers, readings, payloads, conns, stack, modes)
        return best_of(ROUNDS, scenarios)


HEADER = (
    f"{'sinks':<22}{'mode':<17}{'workers':>8}{'conns':>6}{'readings/s':>12}{'(worst)':>10}"
    f"{'collector µs/rdg':>17}{'(cores)':>8}{'load':>6}"
)


def format_row(row: Row) -> str:
    return (
        f"{row['sink']:<22}{row['mode']:<17}{row['workers']:>8}{row['conns']:>6}"
        f"{row['readings_per_s']:>12,.0f}{row['worst_per_s']:>10,.0f}"
        f"{row['collector_us']:>17.2f}{row['collector_cores']:>8.2f}{row['load']:>6}"
    )


def find(rows: list[Row], sink: str, mode: str, workers: int) -> Row | None:
    for row in rows:
        if row["sink"] == sink and row["mode"] == mode and row["workers"] == workers:
            return row
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sinks",
        default="jsonl,sqlite",
        help="comma-separated sink types; a+b+c is one collector with all three (fan-out)",
    )
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--readings", type=int, default=100_000, help="per scenario and round")
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    kinds = [tuple(k.split("+")) for k in args.sinks.split(",") if k]
    unknown = sorted({kind for group in kinds for kind in group} - set(SINKS))
    if unknown:
        parser.error(f"unknown sinks {unknown}; known: {', '.join(SINKS)}")
    print(f"# {machine()}")
    setups = [(group, int(w), args.readings) for group in kinds for w in args.workers.split(",")]
    rows = run_matrix(setups, pool(), args.connections)
    print(HEADER)
    for row in rows:
        print(format_row(row))
    print(f"# load average at the end {loadavg()}")


if __name__ == "__main__":
    main()
