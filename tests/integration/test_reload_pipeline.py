"""The pipeline's side of a reload: batches stay with the sinks they were routed to, retired
sinks drain before they close, replacements wait for their predecessors; and the in-process
collector's reload refuses what does not start and keeps its running sinks."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from telemetry.collector import Collector
from telemetry.collector.pipeline import DeliveryFailed, Pipeline, SinkRunner
from telemetry.config import CollectorConfig, NullSinkConfig, load_config
from telemetry.sinks.base import DeadLetter, Record
from tests.support import RecordingSink, WireClient, timeout

NOW = datetime(2026, 11, 27, tzinfo=UTC)


def records(n: int, start: int = 0) -> list[Record]:
    return [
        Record(id=f"a:0:{i}", agent="a", sensor="s", value=i, ts=NOW, received_at=NOW)
        for i in range(start, start + n)
    ]


def runner(sink: RecordingSink, **options: Any) -> SinkRunner:
    return SinkRunner(sink, NullSinkConfig(type="null", flush_interval=0, **options))


async def test_a_batch_queued_before_the_swap_is_written_by_the_retired_sink():
    """A batch routed before a reload and still queued is written and acked by the sink it
    was routed to, which only then closes; batches after the swap go to the new set only."""
    old, kept, new = RecordingSink("old"), RecordingSink("kept"), RecordingSink("new")
    old.gate = asyncio.Event()
    pipeline = Pipeline([runner(old), runner(kept)])
    await pipeline.start()
    before = await pipeline.submit(records(5))
    fresh = runner(new)
    await fresh.start()
    retired = pipeline.replace([pipeline.runners[1], fresh], drain_timeout=timeout(5))
    assert [r.name for r in retired] == ["old"]
    assert [r.name for r in pipeline.runners] == ["kept", "new"]
    after = await pipeline.submit(records(5, 5))
    await asyncio.wait_for(after, timeout(5))
    assert not before.done()  # still waiting for the retired sink
    assert old.closed == 0
    old.gate.set()
    await asyncio.wait_for(before, timeout(5))
    await asyncio.wait_for(pipeline.retired(), timeout(5))
    assert old.closed == 1
    assert old.ids == [f"a:0:{i}" for i in range(5)]
    assert kept.ids == [f"a:0:{i}" for i in range(10)]
    assert new.ids == [f"a:0:{i}" for i in range(5, 10)]
    await pipeline.close(timeout(5))
    assert (kept.closed, new.closed, old.closed) == (1, 1, 1)


async def test_a_submit_waiting_for_room_during_the_swap_completes_on_the_old_set():
    """A batch waiting for room in a queue when the swap comes is still queued on the sinks it
    started with; the retired sink closes only after it (never 'sink is closing')."""
    old = RecordingSink("old")
    old.gate = asyncio.Event()
    pipeline = Pipeline([runner(old, queue_size=5, batch_size=5)])
    await pipeline.start()
    first = await pipeline.submit(records(5))
    await asyncio.sleep(0)  # the worker takes the first batch and blocks on the gate
    second = await pipeline.submit(records(5, 5))  # fills the queue
    waiting = asyncio.create_task(pipeline.submit(records(5, 10)))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    fresh = runner(RecordingSink("new"))
    await fresh.start()
    pipeline.replace([fresh], drain_timeout=timeout(5))
    old.gate.set()
    third = await asyncio.wait_for(waiting, timeout(5))
    await asyncio.wait_for(asyncio.gather(first, second, third), timeout(5))
    await asyncio.wait_for(pipeline.retired(), timeout(5))
    assert old.ids == [f"a:0:{i}" for i in range(15)]
    await pipeline.close(timeout(5))


async def test_a_replacement_writes_only_after_its_predecessor_closed():
    """A changed sink's new runner queues what it is given, and writes it only once the old
    runner has drained and closed: two writers never share a file."""
    old, new = RecordingSink("s"), RecordingSink("s")
    old.gate = asyncio.Event()
    pipeline = Pipeline([runner(old)])
    await pipeline.start()
    before = await pipeline.submit(records(3))
    predecessor = pipeline.runners[0]
    successor = runner(new)
    await successor.start(after=predecessor.closed)
    pipeline.replace([successor], drain_timeout=timeout(5))
    after = await pipeline.submit(records(3, 3))
    await asyncio.sleep(0.05)
    assert (new.ids, after.done()) == ([], False)
    old.gate.set()
    await asyncio.wait_for(asyncio.gather(before, after), timeout(5))
    assert old.closed == 1
    assert (old.ids, new.ids) == (["a:0:0", "a:0:1", "a:0:2"], ["a:0:3", "a:0:4", "a:0:5"])
    await pipeline.close(timeout(5))


async def test_a_retired_sink_that_cannot_drain_fails_its_batches_instead_of_hanging():
    """When a retired sink's drain outlasts the timeout, its batches are nacked
    (DeliveryFailed), never left without an answer."""
    stuck = RecordingSink("stuck")
    stuck.gate = asyncio.Event()  # never set
    pipeline = Pipeline([runner(stuck, batch_size=2)])
    await pipeline.start()
    writing = await pipeline.submit(records(2))
    await asyncio.sleep(0)
    queued = await pipeline.submit(records(2, 2))
    fresh = runner(RecordingSink("new"))
    await fresh.start()
    pipeline.replace([fresh], drain_timeout=0.2)
    for batch in (writing, queued):
        with pytest.raises(DeliveryFailed, match="stuck"):
            await asyncio.wait_for(batch, timeout(5))
    await asyncio.wait_for(pipeline.retired(), timeout(5))
    assert stuck.closed == 1
    await pipeline.close(timeout(5))


def letter(reason: str) -> DeadLetter:
    return DeadLetter.of({"v": 1}, agent="a", reason=reason, received_at=NOW, max_bytes=100)


async def test_dead_letter_sinks_are_swapped_like_the_others():
    """A replaced dead-letter sink writes the letters queued before the swap, then closes;
    later letters, and the refusals a retired reading sink meets while it drains, go to its
    replacement."""
    readings, old_dl, new_dl = RecordingSink("r"), RecordingSink("dl"), RecordingSink("dl")
    readings.gate, old_dl.gate = asyncio.Event(), asyncio.Event()
    readings.refuse = lambda record: record.value == 1
    pipeline = Pipeline([runner(readings), runner(old_dl, dead_letter=True)])
    await pipeline.start()
    await pipeline.submit_fire_and_forget(records(2))  # value 1 is refused: a dead letter
    pipeline.dead_letter([letter("before")])
    successor = runner(new_dl, dead_letter=True)
    await successor.start(after=pipeline.dead_letter_runners[0].closed)
    others = runner(RecordingSink("r2"))
    await others.start()
    pipeline.replace([others, successor], drain_timeout=timeout(5))
    pipeline.dead_letter([letter("after")])
    readings.gate.set()
    old_dl.gate.set()
    await asyncio.wait_for(pipeline.retired(), timeout(5))
    await pipeline.close(timeout(5))
    assert [item.reason for item in old_dl.records] == ["before"]
    reasons = [item.reason for item in new_dl.records]
    assert reasons[0] == "after"
    assert reasons[1].startswith("sink r: ")
    assert (readings.ids, old_dl.closed, new_dl.closed) == (["a:0:0"], 1, 1)


def sqlite_config(path: Path, *sinks: tuple[str, Path]) -> None:
    text = '[ingest]\nhost = "127.0.0.1"\nport = 0\n[http]\nenabled = false\n'
    for name, db in sinks:
        text += f'[[sinks]]\ntype = "sqlite"\nname = "{name}"\npath = "{db}"\n'
    path.write_text(text)


async def test_a_sink_that_does_not_start_refuses_the_reload_and_keeps_the_sinks(tmp_path):
    """A new sink failing at start refuses the whole reload: the running sinks (same runner
    objects) and the connections go on; a later good reload applies."""
    path = tmp_path / "collector.toml"
    sqlite_config(path, ("main", tmp_path / "a.db"))
    collector = Collector(load_config(CollectorConfig, path), config_path=path)
    await collector.start()
    try:
        running = list(collector.pipeline.runners)
        client = await WireClient.connect(collector.ingest_port)
        assert (await client.hello("a"))["type"] == "welcome"
        (tmp_path / "file").write_text("")
        sqlite_config(path, ("main", tmp_path / "a.db"), ("bad", tmp_path / "file" / "x.db"))
        assert not await collector.reload()
        assert collector.pipeline.runners == running
        assert [s.name for s in collector.config.sinks] == ["main"]
        await client.send({"type": "batch", "seq": 0, "readings": [{"sensor": "s", "value": 1}]})
        assert (await client.recv())["accepted"] == 1
        sqlite_config(path, ("main", tmp_path / "a.db"), ("more", tmp_path / "b.db"))
        assert await collector.reload()
        assert collector.pipeline.runners[0] is running[0]  # unchanged: the same runner
        assert [r.name for r in collector.pipeline.runners] == ["main", "more"]
        await client.send({"type": "batch", "seq": 1, "readings": [{"sensor": "s", "value": 2}]})
        assert (await client.recv())["accepted"] == 1
    finally:
        await WireClient.close_all()
        await collector.shutdown()


async def test_sighups_during_a_reload_fold_into_one_more(tmp_path):
    """Signals that arrive while a reload runs lead to one more reload, not one each."""
    path = tmp_path / "collector.toml"
    sqlite_config(path, ("main", tmp_path / "a.db"))
    collector = Collector(load_config(CollectorConfig, path), config_path=path)
    await collector.start()
    try:
        reloads = 0
        real = collector.reloads._reload

        async def counted() -> bool:
            nonlocal reloads
            reloads += 1
            await asyncio.sleep(0.05)
            return await real()

        collector.reloads._reload = counted  # type: ignore[method-assign]
        for _ in range(5):
            collector.reloads.request()
            await asyncio.sleep(0.01)
        await asyncio.wait_for(collector.reloads.settled(), timeout(10))
        assert reloads == 2
    finally:
        await collector.shutdown()


async def test_a_sighup_during_start_up_is_applied_once_the_collector_serves(tmp_path):
    """A reload requested while the sinks start is neither lost nor run half-started: it
    runs once the collector serves."""
    path = tmp_path / "collector.toml"
    sqlite_config(path, ("main", tmp_path / "a.db"))
    collector = Collector(load_config(CollectorConfig, path), config_path=path)
    sqlite_config(path, ("main", tmp_path / "a.db"), ("more", tmp_path / "b.db"))
    collector.reloads.request()
    assert [r.name for r in collector.pipeline.runners] == ["main"]
    await collector.start()
    try:
        await asyncio.wait_for(collector.reloads.settled(), timeout(10))
        assert [r.name for r in collector.pipeline.runners] == ["main", "more"]
    finally:
        await collector.shutdown()
