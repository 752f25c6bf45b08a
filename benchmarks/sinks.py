"""Per-sink throughput: readings/s through ``write()`` in batches of 1,000 and 5,000.

    .venv/bin/python benchmarks/sinks.py [--readings 50000]

Each sink writes to a fresh destination (uuid-named table, stream, topic, key, temp files)
that is removed afterwards, on the local services (PostgreSQL 127.0.0.1:5432 database test,
Redis, NATS JetStream, Mosquitto). A sink whose service is down is reported, not timed.
One process, one event loop (uvloop), one sink at a time: each figure is the sink's own cost
(serialising, client library, round trips), with no collector or agent in the way.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from telemetry.sinks.base import Record

PG_DSN = os.environ.get("TELEMETRY_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
BATCHES = (1000, 5000)


def make_records(n: int, offset: int) -> list[Record]:
    now = datetime.now(UTC)
    return [
        Record(
            id=f"bench:{offset}:{i}",
            agent="bench",
            sensor=f"greenhouse-{i % 20}/soil-{i % 7}",
            value=i * 0.5,
            ts=now,
            received_at=now,
            metric="moisture",
            unit="%",
            tags={"site": "north"},
        )
        for i in range(n)
    ]


def configs(tag: str, tmp: Path) -> dict[str, dict[str, Any]]:
    return {
        "null": {"type": "null"},
        "stdout": {"type": "stdout"},
        "jsonl": {"type": "jsonl", "path": str(tmp / f"{tag}.jsonl")},
        "sqlite": {"type": "sqlite", "path": str(tmp / f"{tag}.db")},
        "postgres": {"type": "postgres", "dsn": PG_DSN, "schema": f"bench_{tag}"},
        "nats": {
            "type": "nats",
            "stream": f"BENCH_{tag}",
            "subjects": [f"bench{tag}.>"],
            "subject": f"bench{tag}.{{agent}}.{{sensor}}",
        },
        "mqtt": {"type": "mqtt", "topic": f"bench{tag}/{{agent}}/{{sensor}}"},
        "redis": {"type": "redis", "stream": f"bench-{tag}", "maxlen": None},
    }


async def cleanup(kind: str, tag: str) -> None:
    if kind == "postgres":
        import asyncpg

        conn = await asyncpg.connect(PG_DSN)
        await conn.execute(f"DROP SCHEMA IF EXISTS bench_{tag} CASCADE")
        await conn.close()
    elif kind == "nats":
        import nats

        nc = await nats.connect("nats://127.0.0.1:4222")
        with contextlib.suppress(Exception):
            await nc.jetstream().delete_stream(f"BENCH_{tag}")
        await nc.close()
    elif kind == "redis":
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
        await client.delete(f"bench-{tag}")
        await client.aclose()


async def bench(kind: str, options: dict[str, Any], readings: int) -> list[float | str]:
    from pydantic import TypeAdapter

    from telemetry.config import SinkConfig
    from telemetry.sinks.registry import build_sink
    from telemetry.sinks.stdout import StdoutSink

    config = TypeAdapter(SinkConfig).validate_python(options)
    results: list[float | str] = []
    devnull = open(os.devnull, "w")  # noqa: SIM115, ASYNC230
    try:
        sink = StdoutSink(config, stream=devnull) if kind == "stdout" else build_sink(config)
        await sink.start()
    except Exception as exc:
        devnull.close()
        return [f"unavailable: {type(exc).__name__}"] * len(BATCHES)
    try:
        await sink.write(make_records(100, -1))  # warm up: connections, table, stream
        for size in BATCHES:
            batches = [make_records(size, b + size * 1000) for b in range(max(2, readings // size))]
            started = time.perf_counter()
            for batch in batches:
                await sink.write(batch)
            elapsed = time.perf_counter() - started
            results.append(len(batches) * size / elapsed)
    finally:
        await sink.close()
        devnull.close()
    return results


async def main(readings: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="telemetry-bench-"))
    rows: list[tuple[str, list[float | str]]] = []
    try:
        tag = uuid.uuid4().hex[:8]
        for kind, options in configs(tag, tmp).items():
            try:
                rows.append((kind, await bench(kind, options, readings)))
            finally:
                with contextlib.suppress(Exception):
                    await cleanup(kind, tag)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"# sinks benchmark, {readings} readings per batch size, {datetime.now(UTC):%Y-%m-%d}")
    print(
        f"# {platform.python_implementation()} {platform.python_version()}, uvloop, "
        f"{os.cpu_count()} CPUs, {platform.machine()}"
    )
    header = (
        "| sink     | " + " | ".join(f"batch {size:>5} (readings/s)" for size in BATCHES) + " |"
    )
    print(header)
    print("|" + "|".join("-" * len(part) for part in header.split("|")[1:-1]) + "|")
    for kind, figures in rows:
        cells = [f"{f:>26,.0f}" if isinstance(f, float) else f"{f:>26}" for f in figures]
        print(f"| {kind:<8} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=50_000, help="per batch size")
    args = parser.parse_args()
    uvloop.run(main(args.readings))
