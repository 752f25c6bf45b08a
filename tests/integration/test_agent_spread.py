"""Agents spread over two real collectors: by their ids at first, by max_connection_age after."""

from __future__ import annotations

import asyncio
from collections import Counter
from contextlib import AsyncExitStack
from typing import Any

from telemetry.agent import Agent, MemorySpool
from telemetry.agent.endpoint_order import first_endpoint
from telemetry.config import AgentSection
from tests.conftest import StartCollector
from tests.integration.fake_collector import scaled
from tests.support import RecordingSink


def section(agent_id: str, endpoints: list[str]) -> AgentSection:
    return AgentSection(
        id=agent_id,
        endpoints=endpoints,
        batch_size=5,
        flush_interval=0.02,
        reconnect_min=0.01,
        reconnect_max=0.05,
        connect_timeout=scaled(1.0),
        ack_timeout=scaled(3.0),
        shutdown_timeout=scaled(3.0),
    )


def reading(agent_id: str, n: int) -> dict[str, Any]:
    return {"sensor": f"{agent_id}/s", "value": float(n)}


def stored_ids(*sinks: RecordingSink) -> list[str | None]:
    return [record.id for sink in sinks for record in sink.records]


async def test_agents_with_one_endpoints_list_use_both_collectors(
    start_collector: StartCollector,
) -> None:
    """Eight agents given the same two endpoints land on both, each where its id says, and
    every reading is stored once."""
    sinks = [RecordingSink("one"), RecordingSink("two")]
    collectors = [await start_collector(sinks=[sink]) for sink in sinks]
    endpoints = [f"127.0.0.1:{c.ingest_port}" for c in collectors]
    ids = [f"agent-{n}" for n in range(1, 9)]
    async with AsyncExitStack() as stack:
        agents = [
            await stack.enter_async_context(
                Agent(section(agent_id, endpoints), MemorySpool(10_000))
            )
            for agent_id in ids
        ]
        for n in range(20):
            for agent_id, agent in zip(ids, agents, strict=True):
                await agent.send(reading(agent_id, n))
        for agent in agents:
            assert await agent.wait_acked(scaled(5.0))
    by_collector = [Counter(record.agent for record in sink.records) for sink in sinks]
    for agent_id in ids:
        expected = first_endpoint(agent_id, 2)
        assert by_collector[expected][agent_id] == 20, (agent_id, by_collector)
        assert by_collector[1 - expected][agent_id] == 0, (agent_id, by_collector)
    assert all(by_collector), "a collector got no agent"
    assert len(set(stored_ids(*sinks))) == len(stored_ids(*sinks)) == 8 * 20


async def test_max_connection_age_moves_an_agent_to_the_next_collector(
    start_collector: StartCollector,
) -> None:
    """With max_connection_age set, goaway sends one agent's batches to both collectors in
    turn; nothing is lost or stored twice."""
    sinks = [RecordingSink("one"), RecordingSink("two")]
    collectors = [
        await start_collector(sinks=[sink], ingest={"max_connection_age": 0.3}) for sink in sinks
    ]
    endpoints = [f"127.0.0.1:{c.ingest_port}" for c in collectors]
    sent = 0
    async with Agent(section("roamer", endpoints), MemorySpool(10_000)) as agent:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + scaled(10.0)
        # Stream until both collectors have stored some of it (each connection lasts ~0.3 s).
        while not all(sink.records for sink in sinks):
            assert loop.time() < deadline, "the agent never moved to the other collector"
            await agent.send(reading("roamer", sent))
            sent += 1
            await asyncio.sleep(0.01)
        assert await agent.wait_acked(scaled(5.0))
        ledger = agent.ledger
    first = first_endpoint("roamer", 2)
    assert sinks[first].records[0].value == 0.0, "the first connection went elsewhere"
    values = sorted(record.value for sink in sinks for record in sink.records)
    assert values == [float(n) for n in range(sent)]
    assert ledger.acked == sent
