"""Drive the ``Agent`` library at a fixed rate for a while; print one JSON line of figures.

Run by ``agent_cpu.py`` and ``latency.py`` as separate processes, so that the agent's CPU is
its own and it does not share an event loop with the collector. Each reading carries
``ts = time.time()`` taken just before ``agent.send()``: a sink that subtracts it from its
own clock at ``write()`` measures the latency from ``send()`` to the sink.

    .venv/bin/python benchmarks/agent_load.py --port 7600 --rate 1000 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from telemetry.agent import Agent
from telemetry.config import AgentSection
from telemetry.log import configure_logging
from telemetry.runtime import run_async

TICK = 0.005


async def drive(args: argparse.Namespace) -> dict[str, Any]:
    section = AgentSection(
        id=args.id,
        endpoints=[f"127.0.0.1:{args.port}"],
        batch_size=args.batch_size,
        flush_interval=args.flush_interval,
        ledger_interval=0,
    )
    sent = 0
    async with Agent(section) as agent:
        cpu0, start = time.process_time(), time.perf_counter()
        while (elapsed := time.perf_counter() - start) < args.duration:
            due = int(elapsed * args.rate) - sent
            for _ in range(due):
                await agent.send(
                    {
                        "sensor": f"bench/{args.id}/soil-{sent % 7}",
                        "metric": "moisture",
                        "value": 41.25 + sent % 100,
                        "unit": "%",
                        "ts": time.time(),
                        "tags": {"site": "north", "rack": f"r{sent % 9}"},
                    }
                )
                sent += 1
            await asyncio.sleep(TICK)
        sending = time.perf_counter() - start
        acked = await agent.wait_acked(30)
        cpu = time.process_time() - cpu0
        ledger = agent.ledger
    return {
        "agent": args.id,
        "rate": args.rate,
        "sent": sent,
        "acked": ledger.acked,
        "all_acked": acked,
        "seconds": sending,
        "cpu_seconds": cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True, help="readings/s")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--id", default="load-0")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--flush-interval", type=float, default=1.0)
    args = parser.parse_args()
    configure_logging("warning", "json")
    print(json.dumps(run_async(lambda: drive(args))), flush=True)


if __name__ == "__main__":
    main()
