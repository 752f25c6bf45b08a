"""Memory of the collector holding 10,000 idle agent connections, each after ``hello``.

Starts ``telemetry collect [--workers N]`` (null sink, ``max_connections`` and
``max_connections_per_ip`` 10,100 (all from one address), idle
timeout 600 s), raises the open-file limit to the hard limit (inherited by the collector),
then opens the connections from this process with a minimal asyncio protocol: each sends
``hello`` and waits for ``welcome``, 256 handshakes at a time. Prints the collector's RSS
(summed over its processes) before and with the connections, per connection, and this
process's own CPU and RSS.

    .venv/bin/python benchmarks/idle.py [--connections 10000] [--workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import psutil
from common import collector, effective_workers, loadavg, machine, raise_nofile, verdict

from telemetry.protocol import FrameDecoder, encode_frame
from telemetry.runtime import run_async

TARGET_MIB = 150
CONCURRENCY = 256


class IdleAgent(asyncio.Protocol):
    """Says hello, waits for welcome, then stays silent."""

    def __init__(self, agent: str) -> None:
        self.agent = agent
        self.welcomed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.decoder = FrameDecoder()
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(encode_frame(json.dumps({"type": "hello", "agent": self.agent}).encode()))

    def data_received(self, data: bytes) -> None:
        for payload in self.decoder.feed(data):
            if not self.welcomed.done():
                message = json.loads(payload)
                if message.get("type") == "welcome":
                    self.welcomed.set_result(None)
                else:
                    self.welcomed.set_exception(RuntimeError(f"got {message}"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.welcomed.done():
            self.welcomed.set_exception(ConnectionError(f"{self.agent}: closed before welcome"))


async def hold(port: int, count: int, measure: Any) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    limit = asyncio.Semaphore(CONCURRENCY)
    agents: list[IdleAgent] = []

    async def one(i: int) -> None:
        async with limit:
            _, proto = await loop.create_connection(
                lambda: IdleAgent(f"idle-{i}"), "127.0.0.1", port
            )
            agents.append(proto)
            await asyncio.wait_for(proto.welcomed, 30)

    started = time.perf_counter()
    try:
        await asyncio.gather(*(one(i) for i in range(count)))
        opened = time.perf_counter() - started
        await asyncio.sleep(2)  # let the collector settle (logs, buffers)
        result: dict[str, Any] = {"open_seconds": opened, **measure()}
    finally:
        for agent in agents:
            if agent.transport is not None:
                agent.transport.close()
    return result


def run_idle(workers: int, count: int) -> dict[str, Any]:
    raise_nofile()
    ingest = (
        f"max_connections = {count + 100}\nmax_connections_per_ip = {count + 100}\n"
        "idle_timeout = 600"
    )
    with collector(workers, ingest=ingest) as col:
        time.sleep(1)
        before = col.rss()
        me = psutil.Process()
        cpu0 = time.process_time()

        def measure() -> dict[str, Any]:
            return {"rss": col.rss(), "own_rss": me.memory_info().rss}

        res = run_async(lambda: hold(col.port, count, measure))
    return {
        "workers": workers,
        "connections": count,
        "rss_before": before,
        **res,
        "own_cpu": time.process_time() - cpu0,
        "load": loadavg(),
    }


def report(res: dict[str, Any]) -> list[str]:
    mib = res["rss"] / 2**20
    per_conn = (res["rss"] - res["rss_before"]) / res["connections"] / 1024
    return [
        f"idle connections, --workers {res['workers']}: {res['connections']:,} agents said hello "
        f"in {res['open_seconds']:.1f} s; collector RSS {res['rss_before'] / 2**20:.1f} MiB "
        f"before, {mib:.1f} MiB with them ({per_conn:.1f} KiB per connection); load generator "
        f"{res['own_cpu']:.2f} s CPU, {res['own_rss'] / 2**20:.0f} MiB RSS; load {res['load']}",
        f"idle {res['connections']:,} RSS, --workers {res['workers']}: {mib:.1f} MiB "
        f"(target <= {TARGET_MIB} MiB) {verdict(mib <= TARGET_MIB)}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    print(f"# {machine()}")
    for line in report(run_idle(effective_workers(args.workers), args.connections)):
        print(line)


if __name__ == "__main__":
    main()
