"""The pipeline around sinks: batching by size and time, backpressure, retries, failures."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from telemetry.backoff import backoff_delay
from telemetry.collector.pipeline import DeliveryFailed, Pipeline, SinkRunner
from telemetry.config import NullSinkConfig
from telemetry.sinks.base import DeadLetter, PermanentSinkError, Record, TransientSinkError
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


async def test_permanent_failure_isolates_the_refused_records():
    """A permanent error is bisected: only the refused records are reported, the rest written."""
    sink = RecordingSink()
    sink.refuse = lambda record: record.value in (3, 12)
    pipeline = Pipeline([runner(sink, retry_deadline=30)])
    await pipeline.start()
    first = await pipeline.submit(records(10))
    second = await pipeline.submit(records(10, 10))
    refused = await asyncio.wait_for(asyncio.gather(first, second), timeout(5))
    await pipeline.close(timeout(5))
    assert [[(r.id, why) for r, why in per_sink] for [per_sink] in refused] == [
        [("a:0:3", "sink recording: value out of range for the backend")],
        [("a:0:12", "sink recording: value out of range for the backend")],
    ]
    assert sorted(int(i.rsplit(":", 1)[1]) for i in sink.ids) == [
        i for i in range(20) if i not in (3, 12)
    ]


async def test_routing_sends_each_sink_only_its_readings():
    """Sensor globs and tags pick what a sink takes; a batch waits only for its sinks."""
    north, temps, every = RecordingSink("north"), RecordingSink("temps"), RecordingSink("all")
    temps.gate = asyncio.Event()
    pipeline = Pipeline(
        [
            SinkRunner(north, NullSinkConfig(type="null", tags={"site": "north"})),
            SinkRunner(temps, NullSinkConfig(type="null", sensors=["greenhouse-*/temp"])),
            SinkRunner(every, NullSinkConfig(type="null")),
        ]
    )
    await pipeline.start()
    batch = [
        Record(
            id="a:0:0",
            agent="a",
            sensor="greenhouse-1/temp",
            value=1,
            ts=NOW,
            received_at=NOW,
            tags={"site": "north"},
        ),
        Record(id="a:0:1", agent="a", sensor="shed/door", value=2, ts=NOW, received_at=NOW),
    ]
    await asyncio.wait_for(await pipeline.submit(batch[1:]), timeout(2))  # temps not involved
    assert every.ids == ["a:0:1"]
    done = await pipeline.submit(batch[:1])
    await asyncio.sleep(0.05)
    assert not done.done()
    temps.gate.set()
    await asyncio.wait_for(done, timeout(2))
    await pipeline.close(timeout(5))
    assert north.ids == ["a:0:0"]
    assert temps.ids == ["a:0:0"]
    assert every.ids == ["a:0:1", "a:0:0"]


async def test_dead_letters_go_to_dead_letter_sinks_without_waiting():
    """Dead letters are queued without blocking; a full dead-letter queue drops and counts."""
    readings, letters = RecordingSink("readings"), RecordingSink("letters")
    letters.gate = asyncio.Event()
    dl_runner = SinkRunner(letters, NullSinkConfig(type="null", dead_letter=True, queue_size=2))
    pipeline = Pipeline([SinkRunner(readings, NullSinkConfig(type="null")), dl_runner])
    await pipeline.start()
    letter = DeadLetter.of(
        {"sensor": "x", "value": "high"},
        agent="a",
        reason="value: bad",
        received_at=NOW,
        max_bytes=10,
    )
    assert letter.truncated
    assert letter.raw == '{"sensor":'
    pipeline.dead_letter([letter])
    await asyncio.sleep(0.01)  # the worker takes it and waits on the gate
    pipeline.dead_letter([letter, letter])
    pipeline.dead_letter([letter])  # over queue_size: dropped, not waited for
    assert dl_runner.dropped == 1
    letters.gate.set()
    await pipeline.close(timeout(5))
    assert len(letters.records) == 3
    assert readings.records == []


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
    await pipeline.submit_fire_and_forget(records(4))
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
    with pytest.raises(DeliveryFailed, match="sink recording: down"):
        await asyncio.wait_for(done, timeout(5))
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


class SlowToStart(RecordingSink):
    """A sink whose backend answers only after ``failures`` attempts."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        super().__init__()
        self.left = failures
        self.error = error or TransientSinkError("connection refused")
        self.attempts = 0

    async def start(self) -> None:
        self.attempts += 1
        if self.left:
            self.left -= 1
            raise self.error
        await super().start()


async def test_a_sink_not_reachable_yet_is_started_again_with_backoff():
    """Transient start failures are retried; the runner starts once the backend answers."""
    sink = SlowToStart(failures=2)
    run = runner(sink)
    async with asyncio.timeout(timeout(10)):
        await run.start()
    assert (sink.attempts, sink.started) == (3, True)
    await run.close(timeout(5))


async def test_a_sink_start_gives_up_after_the_deadline_or_at_a_permanent_error(monkeypatch):
    """A backend still down at the start deadline, or a permanent refusal, stops start()."""
    import telemetry.collector.runner as pipeline_module

    monkeypatch.setattr(pipeline_module, "START_DEADLINE", 1.0)  # the first retry is <= 0.5 s
    down = SlowToStart(failures=1000)
    with pytest.raises(TransientSinkError):
        await runner(down, retry_deadline=0).start()
    assert 1 < down.attempts < 1000
    refused = SlowToStart(failures=1, error=PermanentSinkError("no such table"))
    with pytest.raises(PermanentSinkError):
        await runner(refused).start()
    assert refused.attempts == 1


_OPEN_AT = """
import asyncio, sys, time
from pathlib import Path
from telemetry.collector.pipeline import SinkRunner
from telemetry.config import SqliteSinkConfig
from telemetry.sinks.sqlite import SqliteSink

async def main():
    config = SqliteSinkConfig(type="sqlite", path=Path(sys.argv[1]))
    runner = SinkRunner(SqliteSink(config), config)
    while time.time() < float(sys.argv[2]):
        pass
    await runner.start()
    await runner.close(5)

asyncio.run(main())
"""


def test_sqlite_sinks_of_several_processes_opening_one_new_file_all_start(tmp_path):
    """Collectors starting together on one SQLite file (--workers): a lock met while another
    process switches it to WAL or creates the table is retried, and every one starts. (Before
    the fix, 1 in ~8 rounds of 6 processes failed with "database is locked".)"""
    import subprocess
    import sys
    import time

    for attempt in range(3):
        path = tmp_path / f"shared-{attempt}.db"
        at = time.time() + 2.0  # after every process has imported telemetry
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _OPEN_AT, str(path), str(at)],
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(6)
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=timeout(60))
            assert proc.returncode == 0, err
