"""One collector with every built-in sink at once, four agents, 100,000 readings."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import Counter
from pathlib import Path

import pytest

from telemetry.agent import Agent
from telemetry.collector import Collector
from telemetry.config import AgentSection
from tests.conftest import collector_config
from tests.integration.sinks.conftest import BACKENDS, Backend, make_backend, terminate_backends
from tests.support import timeout

AGENTS = 4
PER_AGENT = int(os.environ.get("E2E_PER_AGENT", "25000"))
TOTAL = AGENTS * PER_AGENT


@pytest.fixture
async def backends(request, tmp_path: Path, uid: str):
    """Every built-in sink's backend, with fresh destinations, cleaned up afterwards."""
    made: dict[str, Backend] = {}
    try:
        for kind in BACKENDS:
            # No MQTT subscriber here: in this CPU-bound process it falls behind and Mosquitto
            # drops what a slow subscriber cannot take (max_queued_messages). The broker's
            # PUBACKs are checked instead; the contract suite reads MQTT back.
            made[kind] = await make_backend(
                kind, request, tmp_path, uid, proxy=False, subscribe=False
            )
        yield made
    finally:
        for backend in made.values():
            for cleanup in reversed(backend.cleanups):
                with contextlib.suppress(Exception):
                    await cleanup()


class Progress:
    """Readings handed to the agents so far, with an event per milestone."""

    def __init__(self, *marks: int) -> None:
        self.sent = 0
        self.reached = {mark: asyncio.Event() for mark in marks}

    def add(self) -> None:
        self.sent += 1
        event = self.reached.get(self.sent)
        if event is not None:
            event.set()


async def run_agent(port: int, n: int, progress: Progress) -> bool:
    """One agent sending PER_AGENT readings as fast as the collector acks them."""
    section = AgentSection(
        id=f"e2e-{n}",
        endpoints=[f"127.0.0.1:{port}"],
        batch_size=1000,
        flush_interval=0.05,
        window=8,
        reconnect_min=0.05,
        reconnect_max=0.5,
    )
    async with Agent(section) as agent:
        for i in range(PER_AGENT):
            await agent.send(
                {
                    "sensor": f"rack-{n}/probe.{i % 50}",
                    "metric": "temp",
                    "value": i / 10,
                    "unit": "°C",
                    "tags": {"agent": str(n)},
                }
            )
            progress.add()
        # Every sink at once moves ~2,000 readings/s on this kind of machine (MQTT QoS 1 is the
        # slowest): 100,000 readings need about a minute, more on a busy machine.
        return await agent.wait_acked(timeout(180))


@pytest.mark.slow
async def test_every_sink_holds_every_reading_and_a_postgres_cut_loses_nothing(
    backends: dict[str, Backend], tmp_path: Path, postgres_service: str, capsys
):
    """Four agents send 100,000 readings to a collector writing to all eight built-in sinks
    while the collector's PostgreSQL connections are terminated twice: PostgreSQL, NATS and
    SQLite hold every reading exactly once, the others at least once."""
    sinks = [
        {**backend.options, "batch_size": 5000, "retry_deadline": timeout(30)}
        for backend in backends.values()
    ]
    for sink in sinks:
        if sink["type"] == "redis":
            sink["maxlen"] = None
        if sink["type"] in ("nats", "mqtt"):
            sink["ack_timeout"] = timeout(10)
        if sink["type"] == "nats":
            # JetStream drops a resent id within its duplicate window only (docs/sinks.md): a
            # run that slows down (acks time out, agents resend) may last longer than the
            # 120 s default, so the window covers the whole run here.
            sink["duplicate_window"] = timeout(900)
    collector = Collector(
        collector_config(tmp_path, sinks=sinks, log={"level": "warning", "format": "json"})
    )
    await collector.start()
    assert collector.ingest_port is not None
    started = time.monotonic()
    marks = (TOTAL * 3 // 10, TOTAL * 6 // 10)  # terminate mid-stream, twice
    progress = Progress(*marks)
    terminated = 0
    port = collector.ingest_port
    try:
        agents = asyncio.gather(*(run_agent(port, n, progress) for n in range(AGENTS)))
        pg_app = f"telemetry-sink-{backends['postgres'].options['name']}"
        for mark in marks:
            async with asyncio.timeout(timeout(60)):
                await progress.reached[mark].wait()
            terminated += await terminate_backends(postgres_service, pg_app)
        assert all(await agents), "an agent still had unacked readings"
    finally:
        await collector.shutdown()
    elapsed = time.monotonic() - started
    assert terminated >= 1, "no PostgreSQL connection of the collector was terminated"

    expected: set[str | None] = set()
    for kind in ("postgres", "nats", "sqlite"):  # the sinks that deduplicate: exactly once
        ids = await backends[kind].stored(TOTAL)
        counts = Counter(ids)
        assert len(ids) == TOTAL, f"{kind}: {len(ids)} stored, {TOTAL} expected"
        assert len(counts) == TOTAL, f"{kind}: duplicates"
        expected = expected or set(counts)
        assert set(counts) == expected, f"{kind} holds other ids than the others"
    assert {rid.split(":")[0] for rid in expected if rid} == {f"e2e-{n}" for n in range(AGENTS)}
    for kind in ("jsonl", "redis"):  # at least once
        ids = await backends[kind].stored(TOTAL)
        assert set(ids) == expected, f"{kind}: {len(expected - set(ids))} readings missing"
    out = capsys.readouterr().out.splitlines()
    stdout_ids = {json.loads(line)["id"] for line in out if line.startswith('{"id":')}
    assert stdout_ids == expected
    written = {
        runner.sink.name.split("-")[0]: runner.written for runner in collector.pipeline.runners
    }
    assert written["mqtt"] >= TOTAL  # every reading PUBACKed by the broker
    assert written["null"] >= TOTAL
    print(f"end to end: {TOTAL} readings through 8 sinks in {elapsed:.1f} s")
