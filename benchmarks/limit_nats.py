"""The nats sink against nats-py's own limit: readings/s into a JetStream stream.

    .venv/bin/python benchmarks/limit_nats.py [--readings 50000]

Two ways of storing the same readings (same payloads, same ``Nats-Msg-Id`` headers, same
subjects) in a fresh stream each (uuid-named, deleted afterwards), on the local NATS server:

- ``sink``: the ``nats`` sink's ``write()`` in batches of 5,000 (its default ``batch_size``),
  serialising each record (``Record.to_json()``) as the collector's pipeline has it do;
- ``raw``: nats-py at its best: every message published with ``publish_async`` (pipelined,
  with the sink's pending limit), then every PubAck awaited, payloads serialised beforehand.

Best of 3 interleaved rounds each (sink, raw, sink, raw, ...), so that both see the same
machine. The target (issue 15): ``sink >= 0.5 * raw``. ``benchmarks/run_all.py`` calls
:func:`measure`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nats
import uvloop
from nats.js.api import StreamConfig

from telemetry.config import NatsSinkConfig
from telemetry.sinks.base import Record
from telemetry.sinks.nats import MAX_PENDING, MSG_ID, NatsSink

NATS_URL = "nats://127.0.0.1:4222"
BATCH = 5000
ROUNDS = 3


def make_records(count: int, run: str) -> list[Record]:
    now = datetime.now(UTC)
    return [
        Record(
            id=f"bench-{run}:0:{i}",
            agent=f"bench-{run}",
            sensor=f"greenhouse-{i % 20}.soil-{i % 7}",
            value=i * 0.5,
            ts=now,
            received_at=now,
            metric="moisture",
            unit="%",
            tags={"site": "north"},
        )
        for i in range(count)
    ]


async def _sink_round(records: list[Record]) -> float:
    """Readings/s of the nats sink writing ``records`` to a fresh stream."""
    tag = uuid.uuid4().hex[:10]
    sink = NatsSink(
        NatsSinkConfig(
            type="nats",
            servers=[NATS_URL],
            stream=f"BENCH_SINK_{tag}",
            subjects=[f"bench.{tag}.>"],
            subject=f"bench.{tag}.{{agent}}.{{sensor}}",
        )
    )
    await sink.start()
    try:
        started = time.perf_counter()
        for start in range(0, len(records), BATCH):
            await sink.write(records[start : start + BATCH])
        return len(records) / (time.perf_counter() - started)
    finally:
        await _delete(f"BENCH_SINK_{tag}")
        await sink.close()


async def _raw_round(records: list[Record]) -> float:
    """Readings/s of nats-py publishing the same payloads pipelined, every PubAck awaited."""
    tag = uuid.uuid4().hex[:10]
    stream = f"BENCH_RAW_{tag}"
    messages = [
        (f"bench.{tag}.{r.agent}.{r.sensor}", r.to_json().encode(), {MSG_ID: r.id or ""})
        for r in records
    ]
    nc = await nats.connect(NATS_URL)
    try:
        js = nc.jetstream(publish_async_max_pending=MAX_PENDING)
        await js.add_stream(StreamConfig(name=stream, subjects=[f"bench.{tag}.>"]))
        started = time.perf_counter()
        futures = [
            await js.publish_async(subject, payload, stream=stream, headers=headers)
            for subject, payload, headers in messages
        ]
        await asyncio.gather(*futures)
        rate = len(records) / (time.perf_counter() - started)
        await js.delete_stream(stream)
        return rate
    finally:
        await nc.close()


async def _delete(stream: str) -> None:
    nc = await nats.connect(NATS_URL)
    try:
        await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


async def measure(readings: int) -> dict[str, float]:
    """``{"sink": rate, "raw": rate}`` in readings/s, best of 3 interleaved rounds each."""
    sink: list[float] = []
    raw: list[float] = []
    for round_ in range(ROUNDS):
        records = make_records(readings, f"{round_}")
        sink.append(await _sink_round(records))
        raw.append(await _raw_round(records))
    return {"sink": max(sink), "raw": max(raw)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readings", type=int, default=50_000)
    args = parser.parse_args()
    result = uvloop.run(measure(args.readings))
    ratio = result["sink"] / result["raw"]
    print(f"nats sink  {result['sink']:>10,.0f} readings/s")
    print(f"nats-py    {result['raw']:>10,.0f} readings/s (publish_async, every PubAck awaited)")
    print(f"ratio      {ratio:>10.2f} (target >= 0.5)")


if __name__ == "__main__":
    main()
