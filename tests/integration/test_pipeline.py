"""The pipeline around sinks: batching by size and time, backpressure, retries, failures."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from telemetry.collector.pipeline import DeliveryFailed, Pipeline, SinkRunner, backoff_delay
from telemetry.config import NullSinkConfig
from telemetry.sinks.base import PermanentSinkError, Record, TransientSinkError
from tests.support import RecordingSink, timeout

NOW = datetime(2026, 11, 27, tzinfo=UTC)


def records(n: int, start: int = 0) -> list[Record]:
    return [
        Record(id=f"a:0:{i}", agent="a", sensor="s", value=i, ts=NOW, received_at=NOW)
        for i in range(start, start + n)
    ]


def runner(sink: RecordingSink, **options: float) -> SinkRunner:
    return SinkRunner(sink, NullSinkConfig(type="null", **options))


async def test_queued_items_are_written_together_up_to_batch_size():
    """Items waiting in the queue are coalesced into writes of at most batch_size readings."""
    sink = RecordingSink()
    sink.gate = asyncio.Event()
    pipeline = Pipeline([runner(sink, batch_size=25, flush_interval=0)])
    await pipeline.start()
    done = [await pipeline.submit(records(10, i * 10)) for i in range(6)]
    sink.gate.set()
    await asyncio.wait_for(asyncio.gather(*done), timeout(5))
    await pipeline.close(timeout(5))
    assert sum(sink.batches) == 60
    assert max(sink.batches) <= 25
    assert sink.batches == [20, 20, 20]  # whole items only: a third 10 would make 30
    assert sink.ids == [f"a:0:{i}" for i in range(60)]


async def test_a_partial_batch_waits_at_most_flush_interval():
    """Readings arriving within flush_interval share one write; the write is not held longer."""
    sink = RecordingSink()
    pipeline = Pipeline([runner(sink, batch_size=1000, flush_interval=0.2)])
    await pipeline.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    first = await pipeline.submit(records(3))
    await asyncio.sleep(0.05)
    second = await pipeline.submit(records(3, 3))
    await asyncio.wait_for(asyncio.gather(first, second), timeout(5))
    assert sink.batches == [6]
    assert loop.time() - started >= 0.19
    await pipeline.close(timeout(5))


async def test_a_full_queue_makes_submit_wait():
    """submit() blocks while the sink's queue is full, and resumes when it drains."""
    sink = RecordingSink()
    sink.gate = asyncio.Event()
    sink_runner = runner(sink, queue_size=10, batch_size=5, flush_interval=0)
    pipeline = Pipeline([sink_runner])
    await pipeline.start()
    await pipeline.submit(records(5))
    await asyncio.sleep(0.01)  # the worker takes it and blocks on the gate
    await pipeline.submit(records(5, 5))
    await pipeline.submit(records(5, 10))
    blocked = asyncio.create_task(pipeline.submit(records(5, 15)))
    await asyncio.sleep(0.05)
    assert not blocked.done()
    sink.gate.set()
    await asyncio.wait_for(blocked, timeout(5))
    await pipeline.close(timeout(5))
    assert len(sink.records) == 20


async def test_permanent_failure_fails_the_batch_at_once():
    """A permanent error is not retried; the batch's future fails with DeliveryFailed."""
    sink = RecordingSink()
    sink.failures = [PermanentSinkError("schema mismatch")]
    pipeline = Pipeline([runner(sink, retry_deadline=30)])
    await pipeline.start()
    done = await pipeline.submit(records(2))
    with pytest.raises(DeliveryFailed) as info:
        await asyncio.wait_for(done, timeout(2))
    assert info.value.permanent
    assert "schema mismatch" in str(info.value)
    await pipeline.close(timeout(5))


async def test_every_sink_must_accept_before_the_batch_is_done():
    """With two sinks, the batch completes only when both have written it."""
    fast, slow = RecordingSink("fast"), RecordingSink("slow")
    slow.gate = asyncio.Event()
    pipeline = Pipeline([runner(fast), runner(slow)])
    await pipeline.start()
    done = await pipeline.submit(records(1))
    await asyncio.sleep(0.05)
    assert fast.ids == ["a:0:0"]
    assert not done.done()
    slow.gate.set()
    await asyncio.wait_for(done, timeout(2))
    await pipeline.close(timeout(5))


async def test_close_flushes_what_is_queued():
    """close() writes queued readings before closing the sink."""
    sink = RecordingSink()
    pipeline = Pipeline([runner(sink, flush_interval=10)])
    await pipeline.start()
    await pipeline.submit_nowait_ack(records(4))
    await pipeline.close(timeout(5))
    assert len(sink.records) == 4
    assert sink.closed == 1


async def test_transient_failures_past_the_deadline_fail_the_batch():
    """A sink that keeps failing transiently fails the batch after retry_deadline."""
    sink = RecordingSink()
    sink.fail_always = TransientSinkError("down")
    pipeline = Pipeline([runner(sink, retry_deadline=0.3)])
    await pipeline.start()
    done = await pipeline.submit(records(1))
    with pytest.raises(DeliveryFailed) as info:
        await asyncio.wait_for(done, timeout(5))
    assert not info.value.permanent
    assert not pipeline.healthy
    sink.fail_always = None
    await asyncio.wait_for(await pipeline.submit(records(1)), timeout(5))
    assert pipeline.healthy
    await pipeline.close(timeout(5))


def test_backoff_is_full_jitter_and_capped():
    """Delays are uniform in [0, min(cap, base * 2**attempt)]."""
    for attempt in range(40):
        delay = backoff_delay(attempt, base=0.1, cap=2.0)
        assert 0 <= delay <= min(2.0, 0.1 * 2**attempt)
