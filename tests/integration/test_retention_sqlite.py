"""SQLite retention on a real file: ``max_age`` and ``max_rows`` pruned in the background while
the sink keeps writing; ``close()`` stops it; ``latest()`` reads each sensor's newest row."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from telemetry.config import SqliteSinkConfig
from telemetry.sinks._common import COLUMNS
from telemetry.sinks.base import Record
from telemetry.sinks.encoding import table_rows
from telemetry.sinks.sqlite import SCHEMA, SqliteSink
from tests.support import timeout

DAY = 86400.0


def reading(i: int, received_at: datetime, sensor: str = "greenhouse-1/air") -> Record:
    return Record(f"a:0:{i}", "a", sensor, float(i), received_at, received_at, unit="°C")


def fill(path: Path, count: int, received_at: datetime, first: int = 0) -> None:
    """``count`` rows written straight into the file (fast), all received at ``received_at``."""
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    row = table_rows([reading(0, received_at)])[0]
    rows = [(f"a:0:{first + i}", *row[1:]) for i in range(count)]
    db.executemany(
        f"INSERT INTO readings ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
        rows,
    )
    db.commit()
    db.close()


def stored_ids(path: Path) -> list[int]:
    db = sqlite3.connect(path)
    try:
        ids = [int(r[0].rsplit(":", 1)[1]) for r in db.execute("SELECT id FROM readings")]
    finally:
        db.close()
    return sorted(ids)


async def passes(sink: SqliteSink, count: int) -> None:
    """Wait until the sink's retention has completed ``count`` passes."""
    async with asyncio.timeout(timeout(20)):
        await sink.retention.until(lambda: sink.retention.passes >= count)


def sink_for(path: Path, **keys: object) -> SqliteSink:
    return SqliteSink(SqliteSinkConfig.model_validate({"type": "sqlite", "path": path, **keys}))


async def test_rows_older_than_max_age_are_deleted(tmp_path: Path) -> None:
    """Rows received more than max_age ago go; younger ones, and rows written since, stay."""
    path = tmp_path / "t.db"
    now = datetime.now(UTC)
    fill(path, 5_000, now - timedelta(days=3))
    fill(path, 100, now - timedelta(hours=1), first=5_000)
    sink = sink_for(path, max_age=2 * DAY, prune_chunk=700)
    await sink.start()
    try:
        await passes(sink, 1)
        assert stored_ids(path) == list(range(5_000, 5_100))
        assert sink.retention.pruned == {"max_age": 5_000, "max_rows": 0}
        await sink.write([reading(9_000, now)])
        sink.retention.wake()
        await passes(sink, 2)
        assert stored_ids(path) == [*range(5_000, 5_100), 9_000]
    finally:
        await sink.close()


async def test_the_newest_max_rows_stay(tmp_path: Path) -> None:
    """With max_rows, exactly the most recently stored rows are kept, however many chunks."""
    path = tmp_path / "t.db"
    fill(path, 10_000, datetime.now(UTC))
    sink = sink_for(path, max_rows=3_000, prune_chunk=500)
    await sink.start()
    try:
        await passes(sink, 1)
        assert stored_ids(path) == list(range(7_000, 10_000))
        now = datetime.now(UTC)
        await sink.write([reading(20_000 + i, now) for i in range(1_000)])
        sink.retention.wake()
        await passes(sink, 2)
        assert stored_ids(path) == [*range(8_000, 10_000), *range(20_000, 21_000)]
        assert sink.retention.pruned == {"max_age": 0, "max_rows": 8_000}
    finally:
        await sink.close()


async def test_writes_go_on_while_a_long_pass_prunes(tmp_path: Path) -> None:
    """A pass over 100,000 old rows is many small chunks: writes complete in between, fast."""
    path = tmp_path / "t.db"
    now = datetime.now(UTC)
    fill(path, 100_000, now - timedelta(days=10))
    sink = sink_for(path, max_age=DAY, prune_chunk=500)
    await sink.start()
    latencies: list[float] = []
    during = 0
    try:
        for batch in range(40):
            started = time.monotonic()
            await sink.write([reading(1_000_000 + batch * 10 + i, now) for i in range(10)])
            latencies.append(time.monotonic() - started)
            if sink.retention.passes == 0:
                during += 1
        await passes(sink, 1)
    finally:
        await sink.close()
    assert during > 0, "the pass ended before the first write: nothing was shown"
    assert max(latencies) < timeout(1.0), latencies
    assert stored_ids(path) == list(range(1_000_000, 1_000_400))


async def test_close_stops_pruning(tmp_path: Path) -> None:
    """After close(), the task is gone and old rows written to the file stay there."""
    path = tmp_path / "t.db"
    sink = sink_for(path, max_age=DAY, prune_interval=0.05)
    await sink.start()
    await passes(sink, 2)  # the loop runs: a pass at start, then every 50 ms
    await sink.close()
    task_passes = sink.retention.passes
    fill(path, 50, datetime.now(UTC) - timedelta(days=5))
    await asyncio.sleep(0.3)
    assert sink.retention.passes == task_passes
    assert len(stored_ids(path)) == 50
    await sink.close()  # idempotent


async def test_close_during_a_pass_waits_for_the_chunk(tmp_path: Path) -> None:
    """close() in the middle of a pass ends it after the running chunk; the file stays sound."""
    path = tmp_path / "t.db"
    fill(path, 50_000, datetime.now(UTC) - timedelta(days=10))
    sink = sink_for(path, max_age=DAY, prune_chunk=200)
    await sink.start()
    async with asyncio.timeout(timeout(10)):
        await sink.retention.until(lambda: sum(sink.retention.pruned.values()) > 0)
    await sink.close()
    left = len(stored_ids(path))
    assert 0 < left < 50_000
    assert sink.retention.passes == 0
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        db.close()


async def test_no_retention_by_default(tmp_path: Path) -> None:
    """Without max_age or max_rows nothing is pruned and no task runs."""
    path = tmp_path / "t.db"
    fill(path, 10, datetime.now(UTC) - timedelta(days=3650))
    sink = sink_for(path)
    await sink.start()
    try:
        assert not sink.retention.enabled
        assert sink.retention._task is None
    finally:
        await sink.close()
    assert len(stored_ids(path)) == 10


async def test_latest_is_the_newest_row_of_each_sensor(tmp_path: Path) -> None:
    """latest(limit) gives each sensor's reading of the greatest ts, in name order, bounded."""
    path = tmp_path / "t.db"
    sink = sink_for(path)
    await sink.start()
    base = datetime(2026, 12, 2, 14, 0, tzinfo=UTC)
    try:
        batch = [
            Record(
                f"a:1:{i}",
                "a",
                f"s{i % 3}",
                float(i),
                base + timedelta(seconds=(i * 7) % 41),
                base + timedelta(minutes=1),
                tags={"k": "v"},
            )
            for i in range(30)
        ]
        await sink.write(batch)
        latest = await sink.latest(10)
        assert [r.sensor for r in latest] == ["s0", "s1", "s2"]
        for record in latest:
            mine = [r for r in batch if r.sensor == record.sensor]
            newest = max(mine, key=lambda r: r.ts)
            assert (record.id, record.value, record.ts) == (newest.id, newest.value, newest.ts)
            assert record.tags == {"k": "v"}
            assert record.received_at == base + timedelta(minutes=1)
        assert [r.sensor for r in await sink.latest(2)] == ["s0", "s1"]
    finally:
        await sink.close()


def test_retention_keys_are_validated() -> None:
    """Negative limits and a zero interval or chunk are config errors; defaults are off."""
    config = SqliteSinkConfig(type="sqlite")
    assert (config.max_age, config.max_rows) == (0, 0)
    for bad in ({"max_age": -1}, {"max_rows": -1}, {"prune_interval": 0}, {"prune_chunk": 0}):
        with pytest.raises(ValidationError, match=next(iter(bad))):
            SqliteSinkConfig.model_validate({"type": "sqlite", **bad})
