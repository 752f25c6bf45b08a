"""The agent on a sick host: disk full, a spool shared through a symlink, a truncated or
corrupt spool file, stdin lines of any shape. Nothing kills a source, nothing vanishes from
the ledger, and what can be delivered is, exactly once."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from telemetry.agent import Agent, DiskSpool, StdinSource
from telemetry.agent.sources import BadLine
from telemetry.agent.spool import SPOOL_CORRUPT, SPOOL_WRITE_FAILED
from telemetry.agent.spool_file import SpoolLocked
from telemetry.config import AgentSection, StdinSourceConfig
from tests.conftest import StartCollector
from tests.integration.fake_collector import scaled
from tests.misbehaving_collector import recover
from tests.support import RecordingSink


class FullDisk:
    """A spool connection whose COMMITs fail while ``full`` is set (SQLITE_FULL)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.full = False
        self.failed = 0

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT" and self.full:
            self.failed += 1
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def section(endpoint: str, **overrides: Any) -> AgentSection:
    settings: dict[str, Any] = {
        "id": "test-agent",
        "batch_size": 10,
        "flush_interval": 0.05,
        "reconnect_min": 0.01,
        "reconnect_max": 0.1,
        "connect_timeout": scaled(2.0),
        "ack_timeout": scaled(5.0),
        "shutdown_timeout": scaled(5.0),
        **overrides,
    }
    return AgentSection(endpoints=[endpoint], **settings)


async def lines_of(items: list[bytes]) -> AsyncIterator[bytes | BadLine]:
    for item in items:
        yield item


def line(n: int) -> bytes:
    return b'{"sensor": "s", "value": %d}\n' % n


async def test_disk_full_while_spooling_never_kills_the_source(
    tmp_path: Path, start_collector: StartCollector, recording_sink: RecordingSink
) -> None:
    """COMMIT fails for a while: the batches closed meanwhile are counted as
    spool_write_failed, the source reads stdin to the end, the rest is delivered once."""
    collector = await start_collector(sinks=[recording_sink])
    endpoint = f"127.0.0.1:{collector.ingest_port}"
    spool = DiskSpool(tmp_path / "spool.db")
    disk = FullDisk(spool._db)
    spool._db = disk  # type: ignore[assignment]
    items = [line(n) for n in range(100)]

    async def lines() -> AsyncIterator[bytes | BadLine]:
        for n, item in enumerate(items):
            disk.full = 30 <= n < 50  # the batches closed at readings 40 and 50 fail
            yield item

    source = StdinSource(StdinSourceConfig(type="stdin"), lines=lines())
    async with Agent(section(endpoint), spool) as agent:
        await source.run(agent)
        disk.full = False
        assert await agent.wait_acked(scaled(5.0))
        ledger = agent.ledger
    assert source.produced == 100
    assert disk.failed >= 1
    assert ledger.dropped_by_reason == {SPOOL_WRITE_FAILED: 20}  # two batches of 10
    assert ledger.balanced
    await recover(spool, endpoint, lambda: [r.value for r in recording_sink.records], 100)
    spool.close()


async def test_disk_full_on_acks_does_not_reconnect(
    tmp_path: Path, start_collector: StartCollector, recording_sink: RecordingSink
) -> None:
    """An ack whose COMMIT fails is applied again later on the same connection: no
    reconnect-and-resend per ack."""
    collector = await start_collector(sinks=[recording_sink])
    endpoint = f"127.0.0.1:{collector.ingest_port}"
    spool = DiskSpool(tmp_path / "spool.db")
    disk = FullDisk(spool._db)
    async with Agent(section(endpoint), spool) as agent:
        for n in range(60):
            await agent.send({"sensor": "s", "value": float(n)})
        await agent.flush()
        spool._db = disk  # type: ignore[assignment]
        disk.full = True
        await agent.wait_acked(1.0)
        disk.full = False
        assert await agent.wait_acked(scaled(5.0))
        ledger = agent.ledger
    assert disk.failed >= 1
    assert ledger.acked == 60
    assert ledger.batches_resent == 0  # no reconnect, no resend
    await recover(spool, endpoint, lambda: [r.value for r in recording_sink.records], 60)
    spool.close()


def test_the_spool_lock_is_taken_on_the_resolved_path(tmp_path: Path) -> None:
    """Two spools on one file through a symlink: the second is refused."""
    real = tmp_path / "spool.db"
    link = tmp_path / "link.db"
    first = DiskSpool(real)
    link.symlink_to(real)
    with pytest.raises(SpoolLocked):
        DiskSpool(link)
    first.close()


def test_an_empty_spool_file_is_moved_aside_loudly(tmp_path: Path) -> None:
    """A spool truncated to 0 bytes is reported and kept as <name>.corrupt-<ts>."""
    path = tmp_path / "spool.db"
    spool = DiskSpool(path)
    spool.add([{"sensor": "s", "value": 1.0}])
    spool.close()
    path.write_bytes(b"")
    (tmp_path / "spool.db-wal").unlink(missing_ok=True)
    with capture_logs() as logs:
        spool = DiskSpool(path)
    assert "spool_file_moved_aside" in [e["event"] for e in logs]
    assert len(list(tmp_path.glob("spool.db.corrupt-*"))) == 1
    spool.close()


def test_an_unreadable_spool_file_is_moved_aside_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    path.write_bytes(b"not a database at all" * 100)
    with capture_logs() as logs:
        spool = DiskSpool(path)
    assert "spool_file_moved_aside" in [e["event"] for e in logs]
    (moved,) = tmp_path.glob("spool.db.corrupt-*")
    assert moved.read_bytes() == b"not a database at all" * 100
    assert spool.batches == 0
    spool.close()


async def test_a_corrupt_batch_is_quarantined_and_never_blocks_the_rest(
    tmp_path: Path, start_collector: StartCollector, recording_sink: RecordingSink
) -> None:
    """Fifteen bytes overwritten inside one stored batch: that batch goes to the
    dead-letter file, counted as spool_corrupt; the 340 readings behind it are delivered."""
    path = tmp_path / "spool.db"
    spool = DiskSpool(path)
    spool.add([{"sensor": "corrupt-me", "value": float(n)} for n in range(10)])
    for b in range(34):
        spool.add([{"sensor": "s", "value": float(10 + 10 * b + n)} for n in range(10)])
    spool.close()
    data = bytearray(path.read_bytes())
    at = data.index(b"corrupt-me")
    data[at : at + 15] = b"\xff" * 15
    path.write_bytes(bytes(data))
    collector = await start_collector(sinks=[recording_sink])
    endpoint = f"127.0.0.1:{collector.ingest_port}"
    spool = DiskSpool(path)
    with capture_logs() as logs:
        await recover(spool, endpoint, lambda: [r.value for r in recording_sink.records], 350)
    assert spool.dropped_by_reason == {SPOOL_CORRUPT: 10}
    assert "spool_batch_quarantined" in [e["event"] for e in logs]
    assert len(recording_sink.records) == 340
    assert spool.dead_letter_path.read_text().count("\n") == 1
    spool.close()


async def test_any_stdin_line_is_at_worst_one_bad_line(
    start_collector: StartCollector, recording_sink: RecordingSink
) -> None:
    """Deep nesting, huge numbers, invalid UTF-8: each one bad line; every good line after
    them is delivered."""
    collector = await start_collector(sinks=[recording_sink])
    endpoint = f"127.0.0.1:{collector.ingest_port}"
    bad = [b"[" * 100_000 + b"\n", b'{"sensor": "s", "value": ' + b"9" * 5000 + b"}\n"]
    bad += [b'{"sensor": "\xff\xfe", "value": 1}\n', b'{"a": ' * 50_000 + b"\n"]
    items = [line(n) for n in range(10)] + bad + [line(n) for n in range(10, 20)]
    source = StdinSource(StdinSourceConfig(type="stdin"), lines=lines_of(items))
    async with Agent(section(endpoint), None) as agent:
        await source.run(agent)
        assert await agent.wait_acked(scaled(5.0))
    assert source.bad_lines == 4
    assert sorted(r.value for r in recording_sink.records) == [float(n) for n in range(20)]
