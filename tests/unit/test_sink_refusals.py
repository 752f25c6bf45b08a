"""The refusal part of the sink contract: what a reading's content is, and how the pipeline
takes a sink's :class:`RefusedRecords` (no retry, no bisection, indexes mapped back)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

from telemetry.collector.pipeline import Refusal, SinkRunner
from telemetry.config import NullSinkConfig
from telemetry.sinks.base import (
    PermanentSinkError,
    Record,
    RefusedRecords,
    canonical_content,
    content_of,
)

NOW = datetime(2026, 11, 27, 7, 15, 2, 123000, tzinfo=UTC)
RECEIVED = NOW + timedelta(seconds=1)


def reading(i: int, **changes: object) -> Record:
    base = Record(f"a:0:{i}", "a", "s/1", 1.5, NOW, RECEIVED, "m", "u", {"x": "1", "y": "2"})
    return replace(base, **changes)


def test_content_is_canonical_and_leaves_out_the_receive_time_and_agent():
    same = reading(
        0,
        value=1.5,
        ts=NOW.astimezone(timezone(timedelta(hours=9))),
        tags={"y": "2", "x": "1"},
        received_at=RECEIVED + timedelta(hours=1),
        agent="b",
    )
    assert content_of(same) == content_of(reading(0))
    assert content_of(reading(0, value=2)) == content_of(reading(0, value=2.0))
    for change in ({"value": 1.25}, {"sensor": "s/2"}, {"metric": None}, {"unit": "v"}):
        assert content_of(reading(0, **change)) != content_of(reading(0))
    assert content_of(reading(0, tags={"x": "1"})) != content_of(reading(0))
    assert content_of(reading(0, ts=NOW + timedelta(microseconds=1))) != content_of(reading(0))


def test_content_read_back_as_text_equals_the_records():
    stored = canonical_content(
        "s/1", 1.5, "2026-11-27T07:15:02.123000Z", "m", "u", '{"y":"2","x":"1"}', RECEIVED
    )
    assert stored == content_of(reading(0))
    naive = canonical_content("s/1", "1.5", NOW.replace(tzinfo=None), "m", "u", None, None)
    assert naive == content_of(reading(0, tags={}))


def test_a_stamped_ts_is_not_part_of_the_content():
    """Without a ts of its own a reading is stamped with its receive time; resent, it is
    stamped again, later: the same reading."""
    first = reading(0, ts=NOW, received_at=NOW)
    later = NOW + timedelta(seconds=5)
    assert content_of(replace(first, ts=later, received_at=later)) == content_of(first)
    assert content_of(replace(first, received_at=later)) != content_of(first)
    text = canonical_content("s/1", 1.5, "2026-11-27T07:15:02.123000Z", "m", "u", {}, NOW)
    assert text == content_of(replace(first, tags={}, ts=later, received_at=later))


def test_refused_records_is_permanent_and_says_what():
    error = RefusedRecords({3: "no", 1: "reading id a:0:1 is already stored with other content"})
    assert isinstance(error, PermanentSinkError)
    assert error.refused == {3: "no", 1: "reading id a:0:1 is already stored with other content"}
    assert "2 record(s)" in str(error)
    assert "index 1: reading id a:0:1" in str(error)


class RefusingSink:
    """Writes everything but the records whose value is negative, then names those."""

    name = "refusing"

    def __init__(self) -> None:
        self.writes: list[int] = []
        self.stored: list[Record] = []

    async def start(self) -> None:
        pass

    async def write(self, batch: Sequence[Record]) -> None:
        self.writes.append(len(batch))
        self.stored += [r for r in batch if r.value >= 0]
        refused = {i: f"negative {r.value}" for i, r in enumerate(batch) if r.value < 0}
        refused[len(batch) + 5] = "an index out of the batch is ignored"
        if len(refused) > 1:
            raise RefusedRecords(refused)

    async def close(self) -> None:
        pass


async def test_the_pipeline_takes_refused_records_as_they_are():
    """Two queued batches written as one: one write, no retry, no bisection; each batch's
    future gets its own refused records with the sink's reason."""
    sink = RefusingSink()
    runner = SinkRunner(sink, NullSinkConfig(type="null", flush_interval=0.05))
    first = [reading(0), reading(1, value=-1.0), reading(2)]
    second = [reading(3, value=-3.0), reading(4)]
    loop = asyncio.get_running_loop()
    done: list[asyncio.Future[list[Refusal]]] = [loop.create_future(), loop.create_future()]
    await runner.put(first, done[0])
    await runner.put(second, done[1])
    await runner.start()
    try:
        async with asyncio.timeout(5):
            refusals = [await done[0], await done[1]]
    finally:
        await runner.close(5)
    assert sink.writes == [5]
    assert refusals == [
        [(first[1], "sink refusing: negative -1.0")],
        [(second[0], "sink refusing: negative -3.0")],
    ]
    assert runner.written == 3
    assert runner.healthy
    assert [r.id for r in sink.stored] == ["a:0:0", "a:0:2", "a:0:4"]
