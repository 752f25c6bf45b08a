"""Ingest throughput of the collector into the ``null`` sink, against the validation limit.

Starts ``telemetry collect`` in a subprocess (null sink, free ports) and drives it with a
cheap load generator: frames are built once, then written in large chunks. Prints, for 1, 4
and 16 connections, readings/s, MiB/s, the collector's CPU µs per reading and the load
generator's own CPU, for acked batches of 500 and for one fire-and-forget reading per frame;
and the in-process validation rate of the same readings with the collector's own code path.
Ratios are from this one run: these machines are noisy, never compare across runs.

    .venv/bin/python benchmarks/ingest.py [--readings 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from telemetry.protocol import FrameDecoder, encode_frame, validate_readings, validation_context

CLK_TCK = os.sysconf("SC_CLK_TCK")


def reading(i: int) -> dict[str, object]:
    """A ~150-byte reading, like the ones the issue describes."""
    return {
        "sensor": f"greenhouse-{i % 50}/soil-{i % 7}",
        "metric": "moisture",
        "value": 41.25 + i % 100,
        "unit": "%",
        "ts": "2026-11-27T07:15:02.123Z",
        "tags": {"site": "north", "rack": f"r{i % 9}"},
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def recv_messages(reader: asyncio.StreamReader, decoder: FrameDecoder) -> list[bytes]:
    data = await reader.read(65536)
    if not data:
        raise ConnectionError("collector closed the connection")
    return decoder.feed(data)


async def batched_connection(port: int, agent: str, batches: int, batch: bytes) -> None:
    """Send ``batches`` batches of pre-encoded readings, keeping 8 unacked."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    decoder = FrameDecoder()
    writer.write(encode_frame(json.dumps({"type": "hello", "agent": agent}).encode()))
    await recv_messages(reader, decoder)  # welcome
    prefix, suffix = b'{"type":"batch","seq":', b',"readings":' + batch + b"}"
    sent = acked = 0
    while acked < batches:
        chunk = []
        while sent < batches and sent - acked < 8:
            chunk.append(encode_frame(prefix + str(sent).encode() + suffix))
            sent += 1
        if chunk:
            writer.write(b"".join(chunk))
        acked += len(await recv_messages(reader, decoder))
    writer.close()


async def loose_connection(port: int, agent: str, frames: bytes, repeat: int) -> None:
    """Send fire-and-forget frames; one acked batch at the end marks them all handled."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(repeat):
        writer.write(frames)
        await writer.drain()
    decoder = FrameDecoder()
    writer.write(encode_frame(json.dumps({"type": "hello", "agent": agent}).encode()))
    marker = {"type": "batch", "seq": 0, "readings": [reading(0)]}
    writer.write(encode_frame(json.dumps(marker).encode()))
    got: list[bytes] = []
    while len(got) < 2:  # welcome, ack
        got += await recv_messages(reader, decoder)
    writer.close()


def run(coro_factory, pid: int) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    cpu_before, own_before = cpu_seconds(pid), time.process_time()
    started = time.perf_counter()
    asyncio.run(coro_factory())
    elapsed = time.perf_counter() - started
    return elapsed, cpu_seconds(pid) - cpu_before, time.process_time() - own_before


def validation_limit(readings: list[dict[str, object]], batch: int) -> float:
    payloads = [
        json.dumps({"type": "batch", "seq": 0, "readings": readings[i : i + batch]}).encode()
        for i in range(0, len(readings), batch)
    ]
    context = validation_context(datetime.now(UTC))
    started = time.perf_counter()
    for payload in payloads:
        validate_readings(json.loads(payload)["readings"], context)
    return len(readings) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readings", type=int, default=200_000, help="per scenario")
    args = parser.parse_args()
    total = args.readings

    readings = [reading(i) for i in range(500)]
    batch_json = json.dumps(readings, separators=(",", ":")).encode()
    loose_frames = b"".join(
        encode_frame(json.dumps(r, separators=(",", ":")).encode()) for r in readings
    )
    avg_bytes = len(loose_frames) / len(readings)

    port, http_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.toml"
        config.write_text(
            f"[ingest]\nport = {port}\n[http]\nport = {http_port}\n"
            '[log]\nlevel = "warning"\n[[sinks]]\ntype = "null"\n'
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "telemetry.cli", "collect", "--config", str(config)]
        )
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
            print(
                f"# {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
                f"{total} readings per scenario, ~{avg_bytes:.0f} bytes per reading frame"
            )
            print(
                f"{'scenario':<30}{'conns':>6}{'readings/s':>13}{'MiB/s':>8}"
                f"{'collector µs/rdg':>18}{'loadgen µs/rdg':>16}"
            )
            results: dict[str, float] = {}
            for conns in (1, 4, 16):
                per_conn = max(1, total // conns // 500)

                async def batched(conns: int = conns, per_conn: int = per_conn) -> None:
                    await asyncio.gather(
                        *(
                            batched_connection(port, f"bench-{c}", per_conn, batch_json)
                            for c in range(conns)
                        )
                    )

                async def loose(conns: int = conns, per_conn: int = per_conn) -> None:
                    await asyncio.gather(
                        *(
                            loose_connection(port, f"loose-{c}", loose_frames, per_conn)
                            for c in range(conns)
                        )
                    )

                for name, factory in (
                    ("batched (500/batch, acked)", batched),
                    ("fire-and-forget (1/frame)", loose),
                ):
                    count = conns * per_conn * 500
                    elapsed, cpu, own = run(factory, proc.pid)
                    rate = count / elapsed
                    results[f"{name}/{conns}"] = rate
                    print(
                        f"{name:<30}{conns:>6}{rate:>13,.0f}"
                        f"{count * avg_bytes / elapsed / 2**20:>8.1f}"
                        f"{cpu / count * 1e6:>18.2f}{own / count * 1e6:>16.2f}"
                    )
        finally:
            proc.terminate()
            proc.wait(30)

    many = [reading(i) for i in range(total)]
    gc.collect()
    limit_gc = validation_limit(many, 1000)
    gc.disable()
    limit_nogc = validation_limit(many, 1000)
    gc.enable()
    print(
        f"{'validation limit, in process':<30}{'':>6}{limit_gc:>13,.0f}  (gc on; "
        f"{limit_nogc:,.0f}/s with gc off; batches of 1,000)"
    )
    best = max(v for k, v in results.items() if k.startswith("batched"))
    print(f"ratio: best batched ingest / validation limit = {best / limit_gc:.2f}")


if __name__ == "__main__":
    main()
