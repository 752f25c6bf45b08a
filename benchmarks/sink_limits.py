"""Each sink alone against its raw limit: the same records, the same destination design.

For each backend, in one process (uvloop), interleaved rounds, best of ``ROUNDS``:

- **sink**: the telemetry sink's ``write()`` with batches of ``BATCH`` records (its default
  ``batch_size``), which includes turning records into what the backend takes;
- **raw**: the best the client library does for the same table or stream and the same
  guarantee, with the data already in the form it takes (rows as tuples, payloads as bytes):
  - sqlite: ``executemany`` of ready rows into the same schema, WAL, ``synchronous=NORMAL``,
    one transaction per batch, ``INSERT ... ON CONFLICT (id) DO NOTHING``;
  - postgres: the best of three asyncpg ways into the same table with the same idempotency
    (``ON CONFLICT (id) DO NOTHING``): COPY into a temp table + INSERT ... SELECT,
    ``executemany``, and INSERT ... SELECT FROM ``unnest`` of column arrays;
  - redis: ``XADD`` of ready payloads, pipelined (no MULTI/EXEC);
  - mqtt: QoS 1 publishes of ready payloads with the same number in flight, every PUBACK
    awaited.
  (nats: ``benchmarks/limit_nats.py``.)

Each side writes to its own fresh destination, and both grow alike: round by round, each
writes the same number of records. Destinations are uuid-named and removed after.

    .venv/bin/python benchmarks/sink_limits.py [--sinks sqlite,postgres,redis,mqtt]
        [--readings 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common import loadavg, machine, verdict
from pydantic import TypeAdapter

from telemetry.config import SinkConfig
from telemetry.runtime import run_async
from telemetry.sinks.base import Record
from telemetry.sinks.encoding import json_documents, table_rows
from telemetry.sinks.registry import build_sink

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
BATCH = 5000
ROUNDS = 3
SENSORS = 350
#: Slow backends write a share of ``--readings`` (a round of MQTT QoS 1 would take minutes).
SHARE = {"mqtt": 0.2}
TARGETS = {"sqlite": 0.7, "postgres": 0.8, "redis": 0.5, "mqtt": 0.5, "nats": 0.5}

Row = dict[str, Any]
Writer = Callable[[list[Record]], Awaitable[None]]


class Records:
    """Batches of records like a fleet's: ``SENSORS`` sensors, one instant per batch, time
    moving on by a second per batch, unique ids."""

    def __init__(self) -> None:
        self.seq = 0
        self.start = datetime.now(UTC) - timedelta(days=1)

    def batch(self, size: int = BATCH) -> list[Record]:
        self.seq += 1
        ts = self.start + timedelta(seconds=self.seq)
        now = datetime.now(UTC)
        return [
            Record(
                f"bench-{i % 4}:{self.seq}:{i}",
                f"bench-{i % 4}",
                f"greenhouse-{i % SENSORS}/soil",
                i * 0.25,
                ts,
                now,
                "moisture",
                "%",
                {"site": "north"},
            )
            for i in range(size)
        ]


async def timed(write: Writer, batches: list[list[Record]]) -> float:
    started = time.perf_counter()
    for batch in batches:
        await write(batch)
    return sum(len(b) for b in batches) / (time.perf_counter() - started)


async def sink_writer(options: dict[str, Any]) -> tuple[Writer, Callable[[], Awaitable[None]]]:
    config = TypeAdapter(SinkConfig).validate_python(options)
    sink = build_sink(config)
    await sink.start()
    return sink.write, sink.close


# --- raw writers: the client library alone, data ready ------------------------------------


async def sqlite_raw(path: Path) -> tuple[Writer, Callable[[], Awaitable[None]]]:
    from telemetry.sinks.sqlite import INSERT, SCHEMA

    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(SCHEMA)

    async def write(rows: Any) -> None:
        db.execute("BEGIN")
        db.executemany(INSERT, rows)
        db.execute("COMMIT")

    async def close() -> None:
        db.close()

    return write, close


async def postgres_raw(schema: str, how: str) -> tuple[Writer, Callable[[], Awaitable[None]]]:
    import asyncpg

    from telemetry.sinks._common import COLUMNS
    from telemetry.sinks.postgres import table_ddl

    conn = await asyncpg.connect(PG_DSN)
    for statement in table_ddl(schema, "readings", hypertable=False):
        await conn.execute(statement)
    table = f"{schema}.readings"
    columns = ", ".join(COLUMNS)
    await conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS stage (LIKE {table} INCLUDING DEFAULTS) "
        "ON COMMIT DELETE ROWS"
    )
    insert = (
        f"INSERT INTO {table} ({columns}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
        "ON CONFLICT (id) DO NOTHING"
    )
    types = (
        "text",
        "text",
        "text",
        "text",
        "float8",
        "text",
        "timestamptz",
        "jsonb",
        "timestamptz",
    )
    unnest = (
        f"INSERT INTO {table} ({columns}) SELECT * FROM unnest("
        + ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(types))
        + ") ON CONFLICT (id) DO NOTHING"
    )

    async def write(rows: Any) -> None:
        async with conn.transaction():
            if how == "copy":
                await conn.copy_records_to_table("stage", records=rows, columns=COLUMNS)
                await conn.execute(
                    f"INSERT INTO {table} ({columns}) SELECT {columns} FROM stage "
                    "ON CONFLICT (id) DO NOTHING"
                )
            elif how == "executemany":
                await conn.executemany(insert, rows)
            else:
                await conn.execute(unnest, *[list(col) for col in zip(*rows, strict=True)])

    async def close() -> None:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()

    return write, close


async def redis_raw(stream: str) -> tuple[Writer, Callable[[], Awaitable[None]]]:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")

    async def write(payloads: Any) -> None:
        async with client.pipeline(transaction=False) as pipe:
            for payload in payloads:
                pipe.xadd(stream, {"data": payload})
            await pipe.execute()

    async def close() -> None:
        await client.delete(stream)
        await client.aclose()

    return write, close


async def mqtt_raw(topic: str) -> tuple[Writer, Callable[[], Awaitable[None]]]:
    import aiomqtt

    from telemetry.sinks.mqtt import WINDOW

    client = aiomqtt.Client(
        "127.0.0.1", 1883, max_inflight_messages=WINDOW, logger=logging.getLogger("mqtt-raw")
    )
    await client.__aenter__()
    window = asyncio.Semaphore(WINDOW)

    async def publish(payload: bytes) -> None:
        async with window:
            await client.publish(topic, payload, qos=1)

    async def write(payloads: Any) -> None:
        await asyncio.gather(*(publish(p) for p in payloads))

    async def close() -> None:
        await client.__aexit__(None, None, None)

    return write, close


# --- one backend: sink and raw, interleaved -------------------------------------------------


async def compare(kind: str, readings: int, tmp: Path) -> Row:
    tag = uuid.uuid4().hex[:10]
    records = Records()
    per_round = max(1, int(readings * SHARE.get(kind, 1.0)) // BATCH)
    sink_options: dict[str, Any] = {
        "sqlite": {"type": "sqlite", "path": str(tmp / f"sink-{tag}.db")},
        "postgres": {"type": "postgres", "dsn": PG_DSN, "schema": f"bench_sink_{tag}"},
        "redis": {"type": "redis", "stream": f"bench-sink-{tag}", "maxlen": None},
        "mqtt": {"type": "mqtt", "topic": f"bench{tag}/{{agent}}"},
    }[kind]
    prepare: Callable[[list[Record]], Any]
    raws: dict[str, tuple[Writer, Callable[[], Awaitable[None]]]] = {}
    if kind == "sqlite":
        raws["executemany"] = await sqlite_raw(tmp / f"raw-{tag}.db")
        prepare = table_rows
    elif kind == "postgres":
        for how in ("copy", "executemany", "unnest"):
            raws[how] = await postgres_raw(f"bench_raw_{how}_{tag}", how)

        def prepare(batch: list[Record]) -> Any:
            return table_rows(batch, text_times=False)
    elif kind == "redis":
        raws["pipelined XADD"] = await redis_raw(f"bench-raw-{tag}")
        prepare = json_documents
    else:
        raws["QoS 1, in flight"] = await mqtt_raw(f"bench{tag}/raw")
        prepare = json_documents
    sink_write, sink_close = await sink_writer(sink_options)
    best: dict[str, float] = {}
    try:
        await sink_write(records.batch(100))  # warm up: connections, tables
        for write, _ in raws.values():
            await write(prepare(records.batch(100)))
        for _ in range(ROUNDS):
            batches = [records.batch() for _ in range(per_round)]
            rate = await timed(sink_write, batches)
            best["sink"] = max(best.get("sink", 0.0), rate)
            for how, (write, _) in raws.items():
                ready = [prepare(records.batch()) for _ in range(per_round)]
                started = time.perf_counter()
                for data in ready:
                    await write(data)
                rate = per_round * BATCH / (time.perf_counter() - started)
                best[how] = max(best.get(how, 0.0), rate)
    finally:
        await sink_close()
        for _, close in raws.values():
            with contextlib.suppress(Exception):
                await close()
        if kind == "postgres":
            await _drop_schema(f"bench_sink_{tag}")
        elif kind == "redis":
            await _drop_key(f"bench-sink-{tag}")
    raw_name = max((k for k in best if k != "sink"), key=lambda k: best[k])
    return {
        "sink": kind,
        "sink_per_s": best["sink"],
        "raw_per_s": best[raw_name],
        "raw_how": raw_name,
        "raw_all": {k: v for k, v in best.items() if k != "sink"},
        "ratio": best["sink"] / best[raw_name],
        "target": TARGETS[kind],
        "load": loadavg(),
    }


async def _drop_schema(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_DSN)
    await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    await conn.close()


async def _drop_key(key: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    await client.delete(key)
    await client.aclose()


def run_limits(kinds: list[str], readings: int) -> list[Row]:
    tmp = Path(tempfile.mkdtemp(prefix="telemetry-limits-"))
    try:
        rows = []
        for kind in kinds:
            try:
                rows.append(run_async(lambda kind=kind: compare(kind, readings, tmp)))  # type: ignore[misc]
            except Exception as exc:  # a service down: say so, go on
                print(f"# {kind}: not measured: {type(exc).__name__}: {exc}")
        return rows
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def format_row(row: Row) -> str:
    others = ", ".join(f"{k} {v:,.0f}" for k, v in row["raw_all"].items())
    return (
        f"{row['sink']:<10}{row['sink_per_s']:>12,.0f}{row['raw_per_s']:>12,.0f}  "
        f"{row['ratio']:>5.2f} (>= {row['target']}) {verdict(row['ratio'] >= row['target'])}"
        f"  raw: {others}; load {row['load']}"
    )


HEADER = f"{'sink':<10}{'sink /s':>12}{'raw /s':>12}  ratio"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sinks", default="sqlite,postgres,redis,mqtt")
    parser.add_argument("--readings", type=int, default=100_000, help="per side and round")
    args = parser.parse_args()
    print(f"# {machine()}; batches of {BATCH}, best of {ROUNDS} interleaved rounds")
    print(HEADER)
    for row in run_limits(args.sinks.split(","), args.readings):
        print(format_row(row), flush=True)


if __name__ == "__main__":
    main()
