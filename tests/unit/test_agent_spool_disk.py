"""DiskSpool: batches, seq and ledger survive reopening and a SIGKILL; bounds drop the oldest."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from telemetry.agent import MemorySpool, Spool
from telemetry.agent.disk_spool import DiskSpool
from telemetry.agent.spool import BATCH_TOO_LARGE, SPOOL_FULL, restart_safe_seq
from telemetry.agent.spool_factory import open_spool
from telemetry.agent.spool_file import SpoolLocked
from telemetry.agent.spool_status import read_status
from telemetry.config import SpoolConfig


def readings(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"sensor": "s", "value": float(n)} for n in range(start, start + count)]


def values(spool: Spool) -> list[float]:
    return [r["value"] for batch in spool.pending() for r in batch.readings]


def balanced(spool: Spool) -> bool:
    return spool.spooled == spool.acked + spool.rejected + spool.dropped + spool.readings


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "spool" / "agent.db"


def test_disk_spool_satisfies_the_protocol(path: Path) -> None:
    """DiskSpool is usable wherever a Spool is expected, and says it is durable."""
    spool: Spool = DiskSpool(path)
    assert spool.durable
    spool.close()


def test_new_file_starts_seq_from_the_clock(path: Path) -> None:
    """A new spool's first seq is above any seq an in-memory run could have used before."""
    before = restart_safe_seq()
    spool = DiskSpool(path)
    assert spool.next_seq >= before
    spool.close()


def test_batches_seq_and_counters_survive_reopening(path: Path) -> None:
    """Unacked batches, next_seq and the ledger counters are all there after a reopen."""
    spool = DiskSpool(path)
    first = spool.add(readings(3)).seq
    spool.add(readings(2, start=3))
    spool.add(readings(4, start=5))
    spool.ack(first + 1, rejected=1)
    next_seq = spool.next_seq
    spool.close()

    again = DiskSpool(path)
    assert again.next_seq == next_seq
    assert [b.seq for b in again.pending()] == [first, first + 2]
    assert values(again) == [0.0, 1.0, 2.0, 5.0, 6.0, 7.0, 8.0]
    assert (again.spooled, again.acked, again.rejected, again.readings) == (9, 1, 1, 7)
    assert again.add(readings(1)).seq == next_seq
    again.close()


def test_frames_read_back_are_the_frames_sent(path: Path) -> None:
    """A batch read back from the file (cache evicted) has the same frame and readings."""
    spool = DiskSpool(path, cache_bytes=1)
    batches = [spool.add(readings(5, start=5 * n)) for n in range(4)]
    for batch in batches:
        again = spool.get(batch.seq)
        assert again is not None
        assert again.frame == batch.frame
        assert again.readings == batch.readings
    spool.close()


def test_sigkill_loses_nothing_that_was_added(path: Path) -> None:
    """A process SIGKILLed right after add/ack calls: a reopen finds exactly what they left."""
    script = textwrap.dedent(
        f"""
        import os, signal
        from telemetry.agent.disk_spool import DiskSpool
        spool = DiskSpool({str(path)!r})
        seqs = [spool.add([{{"sensor": "s", "value": float(n)}}]).seq for n in range(50)]
        for seq in seqs[:20]:
            spool.ack(seq)
        print(seqs[20], spool.next_seq, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == -9, result.stderr
    oldest, next_seq = map(int, result.stdout.splitlines()[-1].split())
    spool = DiskSpool(path)
    assert spool.oldest_seq == oldest
    assert spool.next_seq == next_seq
    assert values(spool) == [float(n) for n in range(20, 50)]
    assert (spool.spooled, spool.acked) == (50, 20)
    spool.close()


def test_full_by_bytes_drops_oldest_and_persists_the_count(path: Path) -> None:
    """Past max_bytes the oldest batches go, counted as spool_full, also after a reopen."""
    probe = DiskSpool(path.with_name("probe.db"))
    size = len(probe.add(readings(10)).frame)
    probe.close()
    spool = DiskSpool(path, max_bytes=size * 3 + size // 2)
    for n in range(5):
        spool.add(readings(10, start=10 * n))
    assert spool.batches == 3
    assert spool.dropped_by_reason == {SPOOL_FULL: 20}
    assert values(spool)[0] == 20.0
    assert balanced(spool)
    spool.close()
    again = DiskSpool(path, max_bytes=size * 3 + size // 2)
    assert (again.dropped, again.batches, again.readings) == (20, 3, 30)
    assert balanced(again)
    again.close()


def test_full_by_readings_drops_oldest(path: Path) -> None:
    """Past max_readings the oldest batches go; one batch bigger than the spool keeps its tail."""
    spool = DiskSpool(path, max_readings=10)
    for n in range(4):
        spool.add(readings(3, start=3 * n))
    assert spool.dropped == 3
    assert values(spool) == [float(n) for n in range(3, 12)]
    batch = spool.add(readings(12, start=100))
    assert [r["value"] for r in batch.readings] == [float(n) for n in range(102, 112)]
    assert spool.readings == 10
    assert spool.dropped == 3 + 9 + 2
    assert balanced(spool)
    spool.close()


def test_drop_counts_by_reason(path: Path) -> None:
    """drop() removes a batch and counts it under its reason; unknown seqs count nothing."""
    spool = DiskSpool(path)
    seq = spool.add(readings(4)).seq
    assert spool.drop(seq, BATCH_TOO_LARGE) == 4
    assert spool.drop(seq, BATCH_TOO_LARGE) == 0
    assert spool.ack(seq) is None
    assert spool.dropped_by_reason == {BATCH_TOO_LARGE: 4}
    assert balanced(spool)
    spool.close()


def test_ledger_balances_through_random_operations_and_reopens(path: Path) -> None:
    """spooled = acked + rejected + dropped + readings after every operation and reopen."""
    rng = random.Random(7)
    spool = DiskSpool(path, max_readings=60)
    for step in range(300):
        action = rng.random()
        held = [b.seq for b in spool.pending()]
        if action < 0.5 or not held:
            spool.add(readings(rng.randint(1, 15)))
        elif action < 0.8:
            seq = rng.choice(held)
            spool.ack(seq, rejected=rng.randint(0, 2))
        elif action < 0.9:
            spool.drop(rng.choice(held), BATCH_TOO_LARGE)
        else:
            spool.close()
            spool = DiskSpool(path, max_readings=60)
        assert balanced(spool), f"step {step}"
        assert spool.readings <= 60
    spool.close()


def test_a_second_agent_cannot_open_the_same_spool(path: Path) -> None:
    """The spool file is locked: a second DiskSpool on it fails with a clear error."""
    spool = DiskSpool(path)
    with pytest.raises(SpoolLocked, match="in use by another agent"):
        DiskSpool(path)
    spool.close()
    DiskSpool(path).close()  # free again once closed


def test_status_reads_a_spool_in_use(path: Path) -> None:
    """read_status sees pending batches, bytes, oldest age and counters while the spool is open."""
    spool = DiskSpool(path)
    spool.add(readings(3))
    second = spool.add(readings(2))
    spool.ack(second.seq)
    status = read_status(path)
    assert (status.pending_batches, status.pending_readings) == (1, 3)
    assert status.bytes == spool.bytes > 0
    assert status.next_seq == spool.next_seq
    assert (status.spooled, status.acked, status.dropped) == (5, 2, 0)
    age = status.oldest_age()
    assert age is not None
    assert 0 <= age < 60
    assert status.as_dict()["oldest_age_seconds"] is not None
    spool.close()


def test_open_spool_follows_the_config(path: Path) -> None:
    """[spool] path chooses the disk spool; without it the spool is in memory."""
    memory = open_spool(SpoolConfig())
    assert isinstance(memory, MemorySpool)
    assert not memory.durable
    disk = open_spool(SpoolConfig(path=path, max_readings=5, max_bytes=4096))
    assert isinstance(disk, DiskSpool)
    assert (disk.max_readings, disk.max_bytes) == (5, 4096)
    disk.close()


def test_memory_spool_counts_acks_rejections_and_bytes() -> None:
    """MemorySpool keeps the same ledger counters and byte bound as the disk spool."""
    spool = MemorySpool(100, max_bytes=10_000, first_seq=0)
    batch = spool.add(readings(4))
    assert spool.bytes == len(batch.frame)
    spool.ack(batch.seq, rejected=1)
    assert (spool.spooled, spool.acked, spool.rejected, spool.bytes) == (4, 3, 1, 0)
    for n in range(100):
        spool.add(readings(4, start=n))
    assert spool.bytes <= 10_000
    assert spool.dropped_by_reason[SPOOL_FULL] > 0
    assert balanced(spool)
    held = spool.readings
    assert spool.discard("unacked_at_exit") == held
    assert spool.dropped_by_reason["unacked_at_exit"] == held
    assert spool.readings == 0
    assert balanced(spool)
