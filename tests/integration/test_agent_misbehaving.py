"""The agent against a misbehaving collector: it never counts as delivered what no collector
stored, and never stalls, spins or dies. Each test ends by recovering the spool into a real
collector: every reading fed is stored exactly once, or counted with a reason."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

from telemetry.agent import Agent, MemorySpool
from telemetry.config import AgentSection
from tests.conftest import StartCollector
from tests.integration.fake_collector import scaled
from tests.misbehaving_collector import BlackholeProxy, MisbehavingCollector, recover
from tests.support import RecordingSink, tried_in_order


def section(*endpoints: str, **overrides: Any) -> AgentSection:
    settings: dict[str, Any] = {
        "id": "test-agent",
        "batch_size": 10,
        "flush_interval": 0.05,
        "reconnect_min": 0.01,
        "reconnect_max": 0.1,
        "connect_timeout": scaled(1.0),
        "ack_timeout": scaled(2.0),
        "shutdown_timeout": scaled(3.0),
        **overrides,
    }
    return AgentSection(endpoints=tried_in_order(settings["id"], *endpoints), **settings)


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + scaled(timeout)
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def reading(n: int, pad: int = 0) -> dict[str, Any]:
    return {"sensor": f"s-{n % 3}" + "x" * pad, "value": float(n)}


async def feed(agent: Agent, count: int, pad: int = 0, start: int = 0) -> None:
    for n in range(start, start + count):
        await agent.send(reading(n, pad))
    await agent.flush()


async def real(start_collector: StartCollector, sink: RecordingSink) -> str:
    collector = await start_collector(sinks=[sink])
    return f"127.0.0.1:{collector.ingest_port}"


def stored(sink: RecordingSink) -> Callable[[], list[float]]:
    return lambda: [record.value for record in sink.records]


HUGE = [{"index": i, "errors": ["bad"]} for i in range(200_000)]


@pytest.mark.parametrize(
    "answer",
    [
        # window 1: ack N+1 (spooled, never sent), then N
        lambda seq, n, conn: [
            {"type": "ack", "seq": seq + 1, "accepted": n},
            {"type": "ack", "seq": seq, "accepted": n},
        ],
        # accepted: 0, rejected: [] for a batch of 10
        lambda seq, n, conn: [{"type": "ack", "seq": seq, "accepted": 0, "rejected": []}],
        # more rejections listed than the batch has readings, 200k of them
        lambda seq, n, conn: [{"type": "ack", "seq": seq, "accepted": 0, "rejected": HUGE}],
    ],
    ids=["ack_unsent_seq", "ack_zero_accepted", "ack_200k_rejections"],
)
async def test_lying_acks_take_nothing_off_the_books(
    answer: Any, start_collector: StartCollector, recording_sink: RecordingSink
) -> None:
    """A lying ack is a protocol error: the batch stays spooled, the connection is retried,
    logged once per lie (not per rejection), and the loop is never blocked for long."""
    spool = MemorySpool(1_000_000, first_seq=0)
    async with MisbehavingCollector(answer=answer) as liar:
        agent = Agent(section(liar.endpoint, window=1), spool)
        await agent.start()
        with capture_logs() as logs:
            await feed(agent, 200)
            await until(lambda: liar.connections >= 3, timeout=15)
        await agent.close(0)
    assert spool.acked == 0
    assert spool.readings == 200
    assert len(logs) < 40 * liar.connections  # one line per lie, not one per rejection
    assert {e["event"] for e in logs} & {
        "ack_not_in_flight",
        "ack_count_mismatch",
        "connection_lost",
    }
    await recover(spool, await real(start_collector, recording_sink), stored(recording_sink), 200)


@pytest.mark.parametrize(
    "welcome",
    [
        {"window": 0},
        {"window": -1},
        {"max_frame_bytes": 0},
        {"max_frame_bytes": -1},
        {"max_frame_bytes": 100},
    ],
)
async def test_a_bad_welcome_fails_the_handshake_and_the_next_endpoint_is_tried(
    welcome: dict[str, Any], start_collector: StartCollector, recording_sink: RecordingSink
) -> None:
    """Nothing is dropped as batch_too_large, nothing stalls: the honest second endpoint
    gets everything."""
    spool = MemorySpool(1_000_000, first_seq=0)
    endpoint = await real(start_collector, recording_sink)
    fields = {"collector": "liar", "window": 8, "max_frame_bytes": 1 << 20, **welcome}
    async with MisbehavingCollector(welcome=fields) as liar:
        with capture_logs() as logs:
            async with Agent(section(liar.endpoint, endpoint), spool) as agent:
                await feed(agent, 100)
                assert await agent.wait_acked(scaled(5.0))
    assert "welcome_refused" in [e["event"] for e in logs]
    assert spool.dropped == 0
    assert liar.batches == []
    await recover(spool, endpoint, stored(recording_sink), 100)


async def test_a_split_batch_too_large_for_the_collector_is_delivered(
    start_collector: StartCollector, recording_sink: RecordingSink
) -> None:
    """A batch larger than this collector's max_frame_bytes is re-batched, never dropped."""
    spool = MemorySpool(1_000_000, first_seq=0)
    endpoint = await real(
        start_collector,
        recording_sink,
    )
    spool.add([reading(n, pad=200) for n in range(1000)])  # ~230 kB: over 64 kB
    collector = await start_collector(sinks=[recording_sink], ingest={"max_frame_bytes": 65536})
    small = f"127.0.0.1:{collector.ingest_port}"
    await recover(spool, small, stored(recording_sink), 1000)
    assert spool.dropped == 0
    del endpoint


@pytest.mark.parametrize("retry_after_ms", [0, -1, 10**12])
async def test_nack_extremes_neither_spin_nor_stall(
    retry_after_ms: int, start_collector: StartCollector, recording_sink: RecordingSink
) -> None:
    """retry_after_ms 0 or negative: resends at most every nack_retry_min; 10**12: resent
    after reconnect_max at the latest."""
    spool = MemorySpool(1_000_000, first_seq=0)

    def nack(seq: int, n: int, conn: int) -> list[dict[str, Any]]:
        return [{"type": "nack", "seq": seq, "reason": "x", "retry_after_ms": retry_after_ms}]

    async with MisbehavingCollector(answer=nack) as liar:
        agent = Agent(section(liar.endpoint, window=1, nack_retry_min=0.05), spool)
        await agent.start()
        await feed(agent, 10)
        await asyncio.sleep(1.0)
        await agent.close(0)
    sends = len(liar.batches)
    assert 3 <= sends <= 1.0 / 0.05 + 3, sends
    await recover(spool, await real(start_collector, recording_sink), stored(recording_sink), 10)


@pytest.mark.parametrize("after_welcome", ["close", "goaway", "error"])
async def test_no_hot_reconnect_loop_when_a_collector_welcomes_then_quits(
    after_welcome: str, start_collector: StartCollector, recording_sink: RecordingSink
) -> None:
    """The backoff resets only after useful work: welcome-then-close/goaway/error gets a
    growing delay, not hundreds of reconnects; a 5 MB goaway reason or error detail is
    logged cut short."""
    spool = MemorySpool(1_000_000, first_seq=0)
    async with MisbehavingCollector(after_welcome=after_welcome, text="r" * 5_000_000) as liar:
        with capture_logs() as logs:
            agent = Agent(section(liar.endpoint, reconnect_min=0.01, reconnect_max=0.5), spool)
            await agent.start()
            await feed(agent, 20)
            await asyncio.sleep(2.0)
            await agent.close(0)
    assert 2 <= liar.connections <= 40, liar.connections
    assert max(len(str(e)) for e in logs) < 2000
    await recover(spool, await real(start_collector, recording_sink), stored(recording_sink), 20)


async def test_a_collector_that_never_reads_is_left_after_the_ack_timeout(
    start_collector: StartCollector, recording_sink: RecordingSink
) -> None:
    """The writer blocked in drain() still honours ack_timeout: the connection is closed and
    retried, with a write_stalled line."""
    spool = MemorySpool(10_000_000, first_seq=0)
    async with MisbehavingCollector(
        read=False,
        rcvbuf=4096,
        welcome={"collector": "deaf", "window": 64, "max_frame_bytes": 1 << 24},
    ) as deaf:
        settings = {"batch_size": 500, "window": 64, "ack_timeout": 1.0, "write_timeout": 60.0}
        agent = Agent(section(deaf.endpoint, **settings), spool)
        await agent.start()
        with capture_logs() as logs:
            await feed(agent, 40_000, pad=200)
            await until(lambda: deaf.connections >= 2, timeout=10.0)
        await agent.close(0)
    assert "write_stalled" in [e["event"] for e in logs]
    await recover(
        spool,
        await real(start_collector, recording_sink),
        stored(recording_sink),
        40_000,
        batch_size=500,
        window=8,
    )


async def test_a_path_that_goes_silent_fails_over(
    start_collector: StartCollector, recording_sink: RecordingSink
) -> None:
    """Behind a proxy that stops forwarding, the agent leaves after the ack timeout and the
    second endpoint gets every reading exactly once."""
    spool = MemorySpool(10_000_000, first_seq=0)
    endpoint = await real(start_collector, recording_sink)
    async with BlackholeProxy(endpoint) as proxy:
        settings = {"batch_size": 500, "window": 64, "ack_timeout": 1.0, "write_timeout": 60.0}
        agent = Agent(section(proxy.endpoint, endpoint, **settings), spool)
        await agent.start()
        await feed(agent, 100)
        assert await agent.wait_acked(scaled(5.0))
        proxy.blackhole()
        await feed(agent, 40_000, pad=200, start=100)
        assert await agent.wait_acked(scaled(20.0))
        await agent.close(0)
    await recover(spool, endpoint, stored(recording_sink), 40_100)
