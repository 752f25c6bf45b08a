"""The sqlite sink's WAL checkpointer (telemetry/sinks/sqlite_checkpoint.py), on real files."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from telemetry.sinks import sqlite_checkpoint
from telemetry.sinks.sqlite_checkpoint import Checkpointer

ROW = "x" * 2000  # two rows to a 4 KiB page: a commit of 50 rows adds ~25 pages


def writer(path: Path, checkpointer: Checkpointer) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE t (n INTEGER, pad TEXT)")
    checkpointer.configure(db)
    return db


def commit(db: sqlite3.Connection, checkpointer: Checkpointer, start: int) -> None:
    """One transaction of 50 rows, as the sink writes a batch; then what the sink calls."""
    db.execute("BEGIN")
    db.executemany("INSERT INTO t VALUES (?, ?)", [(start + i, ROW) for i in range(50)])
    db.execute("COMMIT")
    checkpointer.committed(db)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "t.db"


def wal_bytes(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_the_wal_stays_bounded_under_back_to_back_commits(path: Path) -> None:
    """Commits with no pause between them (the thread's passive checkpoints never catch
    up): the writer checkpoints itself past the bound, the file is truncated to it, and
    every row is in the database."""
    max_pages = 100
    checkpointer = Checkpointer(path, "test", max_pages=max_pages)
    db = writer(path, checkpointer)
    checkpointer.start()
    try:
        largest = 0
        for batch in range(200):  # ~5,000 pages written in all: 50 times the bound
            commit(db, checkpointer, batch * 50)
            largest = max(largest, wal_bytes(path))
    finally:
        checkpointer.stop()
    assert checkpointer.checkpoints > 0
    # The bound, plus one commit (~27 pages with their frame headers) past it.
    assert largest <= (max_pages + 30) * 4096 + 32 * 1024, largest
    assert db.execute("SELECT count(*), count(DISTINCT n) FROM t").fetchone() == (10_000, 10_000)
    db.close()
    again = sqlite3.connect(path)
    assert again.execute("SELECT count(*) FROM t").fetchone() == (10_000,)
    again.close()


def test_the_thread_copies_the_wal_into_the_database(path: Path) -> None:
    """After a few commits and a pause, the thread's checkpoint has copied everything: the
    next write starts the WAL over, and a new connection reads every row."""
    checkpointer = Checkpointer(path, "test")
    db = writer(path, checkpointer)
    checkpointer.start()
    try:
        for batch in range(5):
            commit(db, checkpointer, batch * 50)
        deadline = time.monotonic() + 10
        while path.stat().st_size < 125 * 4096:  # 250 rows, two to a page, in the file
            assert time.monotonic() < deadline, "the rows were not copied within 10 s"
            time.sleep(0.01)
    finally:
        checkpointer.stop()
    assert checkpointer.checkpoints > 0
    db.close()
    reader = sqlite3.connect(path)
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (250,)
    reader.close()


def test_a_failing_checkpoint_is_logged_once_and_loses_nothing(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every checkpoint fails (as on a full disk): one log line, the failures counted, and
    the rows still readable from the WAL."""
    monkeypatch.setattr(sqlite_checkpoint, "PASSIVE", "SELECT * FROM no_such_table")
    checkpointer = Checkpointer(path, "test")
    db = writer(path, checkpointer)
    with capture_logs() as logs:
        checkpointer.start()
        try:
            for batch in range(3):
                commit(db, checkpointer, batch * 50)
                time.sleep(0.05)
            deadline = time.monotonic() + 10
            while checkpointer.failures < 2:
                assert time.monotonic() < deadline
                time.sleep(0.01)
        finally:
            checkpointer.stop()
    failed = [entry for entry in logs if entry["event"] == "sqlite_checkpoint_failed"]
    assert len(failed) == 1
    assert "no_such_table" in failed[0]["error"]
    assert checkpointer.checkpoints == 0
    reader = sqlite3.connect(path)
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (150,)
    reader.close()
    db.close()


def test_stop_is_idempotent_and_the_checkpointer_starts_again(path: Path) -> None:
    checkpointer = Checkpointer(path, "test")
    db = writer(path, checkpointer)
    checkpointer.stop()  # never started: nothing to do
    for round_ in range(2):
        checkpointer.start()
        commit(db, checkpointer, round_ * 50)
        before = checkpointer.checkpoints
        deadline = time.monotonic() + 10
        while checkpointer.checkpoints == before:
            assert time.monotonic() < deadline, f"round {round_}: the thread did not run"
            time.sleep(0.01)
        checkpointer.stop()
        checkpointer.stop()
    db.close()
